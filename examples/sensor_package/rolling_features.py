"""A user's own feature implementation for a weir model package (not one of weir's).

``RollingLevel`` turns one sensor's readings into forecaster inputs: each reading is
scaled against an exponentially weighted mean and mean absolute deviation of the readings
before it, and the model sees the last ``window`` scaled readings *before* the current one
and forecasts the current one (``target()``). weir judges ``|target - forecast|`` through
each key's anomaly likelihood (the package's ``decision`` section).

It follows ``engines.features``' contract: ``RollingLevel(**settings)`` is the per-key state
factory; a state updates once per event, is ``ready`` once it has ``window + 1`` readings,
and writes its input row into the buffer weir hands it. No buffer is allocated per event
(only Python floats and one slice view): the ring is preallocated and written twice, so
the window is always one contiguous slice.
"""

from __future__ import annotations

import math

import numpy as np

from schemas.errors import SchemaError
from schemas.events import Event, SensorReading


class RollingLevel:
    """Settings: ``window`` readings in, ``alpha`` the EWMA weight, ``clip`` the bound."""

    def __init__(self, window: int = 16, alpha: float = 0.01, clip: float = 8.0) -> None:
        if window < 1 or not 0.0 < alpha < 1.0 or clip <= 0.0:
            raise ValueError(f"bad settings: window={window} alpha={alpha} clip={clip}")
        self.window = window
        self.alpha = alpha
        self.clip = clip

    @property
    def n_features(self) -> int:
        """One value per reading of the window."""
        return self.window

    def new_state(self) -> LevelState:
        """A fresh state for one sensor."""
        return LevelState(self)


class LevelState:
    """One sensor's running level and the ring of its last ``window + 1`` scaled readings."""

    __slots__ = ("_pos", "_ring", "_size", "alpha", "clip", "count", "dev", "last", "mean")

    def __init__(self, features: RollingLevel) -> None:
        self._size = features.window + 1
        self._ring = np.zeros(2 * self._size, dtype=np.float32)
        self._pos = 0
        self.alpha = features.alpha
        self.clip = features.clip
        self.count = 0
        self.mean = 0.0
        self.dev = 0.0
        self.last = 0.0

    @property
    def ready(self) -> bool:
        """True once a whole window precedes the current reading."""
        return self.count >= self._size

    def update(self, event: Event, arrival_ns: int) -> None:
        """Scale the reading against the level before it, then move the level on."""
        if not isinstance(event, SensorReading):
            raise SchemaError(f"RollingLevel takes sensor readings, got one for {event.key!r}")
        v = event.value
        if self.count == 0:
            self.mean = v
        d = v - self.mean
        scaled = d / self.dev if self.dev > 1e-9 else 0.0
        scaled = max(-self.clip, min(self.clip, scaled))
        self.mean += self.alpha * d
        self.dev += self.alpha * (math.fabs(d) - self.dev)
        self.last = scaled
        pos = self._pos
        self._ring[pos] = scaled
        self._ring[pos + self._size] = scaled
        self._pos = (pos + 1) % self._size
        self.count += 1

    def write_input(self, out: np.ndarray) -> None:
        """The ``window`` scaled readings before the current one, oldest first."""
        start = self._pos  # the oldest of the last window + 1
        out[:] = self._ring[start : start + self._size - 1]

    def target(self) -> float:
        """The current reading, scaled: what the model forecasts."""
        return self.last
