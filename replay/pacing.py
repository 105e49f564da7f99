"""How fast a replay sends: the recorded pace times a speed, as fast as possible, or a rate.

Event ``i`` of the feed is due at ``start + (recv_i - recv_0) / speed`` (or
``start + i / rate``); at ``--speed max`` there is no schedule and latency counts from
the actual send.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import numpy.typing as npt

from replay.errors import ReplayError

I64 = npt.NDArray[np.int64]


class Pacing(msgspec.Struct, frozen=True, kw_only=True):
    """Recorded pace times ``speed``, as fast as possible (``speed=None``), or ``rate``/s."""

    speed: float | None = 1.0
    rate: float | None = None

    @classmethod
    def parse(cls, speed: str = "1", rate: float | None = None) -> Pacing:
        """From ``--speed`` (a number > 0 or ``max``) and ``--rate`` (events/s)."""
        if rate is not None:
            if not (math.isfinite(rate) and rate > 0):
                raise ReplayError(f"--rate must be a number of events/s > 0, got {rate!r}")
            return cls(speed=None, rate=rate)
        if speed == "max":
            return cls(speed=None)
        try:
            value = float(speed)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise ReplayError(f"--speed must be a number > 0 or 'max', got {speed!r}")
        return cls(speed=value)

    @property
    def paced(self) -> bool:
        """False at ``max``: no schedule, so latency counts from the actual send."""
        return self.speed is not None or self.rate is not None

    def label(self) -> str:
        """``"10"``, ``"max"`` or ``"rate"``."""
        if self.rate is not None:
            return "rate"
        return "max" if self.speed is None else f"{self.speed:g}"

    def planned_s(self, events: int, span_s: float) -> float | None:
        """How long sending ``events`` recorded over ``span_s`` seconds takes; None at ``max``."""
        if self.rate is not None:
            return events / self.rate
        return span_s / self.speed if self.speed else None

    def offsets(self, recv_rel_ns: I64) -> I64 | None:
        """Each event's due time after the start, ns; None at ``max``."""
        if self.rate is not None:
            return (np.arange(recv_rel_ns.size, dtype=np.float64) * (1e9 / self.rate)).astype(
                np.int64
            )
        if self.speed is None:
            return None
        return (recv_rel_ns.astype(np.float64) / self.speed).astype(np.int64)
