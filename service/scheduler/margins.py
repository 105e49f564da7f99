"""What EDF plans for beyond the engine's profile: timer wake-up error and publish tails.

``WakeGuard``: the guard for timer wake-up error is measured, like the profile. The
dispatch loop reports how late each timer wake was and the guard is the largest lateness
seen in the current and the previous window (``window_ns``, 10 s in ``EdfScheduler``), never
below the floor: a loaded host (late wakes) makes weir wait less, a quiet one longer.

``PublishTail``: how long a batch's decisions took to go out after its engine call, the
largest of the last ``TAIL_SAMPLES``: a longer tail counts at once, a stall ages out,
checked every ``TAIL_REFRESH`` batches.

Owned by the scheduler (one event loop); times are monotonic ns passed in.
"""

from __future__ import annotations

import numpy as np

TAIL_SAMPLES = 256
"""Publish tails kept for ``PublishTail.ns``."""
TAIL_REFRESH = 16
"""Batches between recomputations of ``PublishTail.ns``."""


class WakeGuard:
    """The guard for timer wake-up error (see the module docstring)."""

    __slots__ = ("_cur", "_floor", "_prev", "_since", "_window", "ns")

    def __init__(self, floor_ns: int, window_ns: int) -> None:
        self.ns = floor_ns
        """The current guard (ns)."""
        self._floor = floor_ns
        self._window = max(1, window_ns)
        self._cur = 0
        self._prev = 0
        self._since: int | None = None

    def note(self, lateness_ns: int, now_ns: int) -> None:
        """A timer wake came ``lateness_ns`` late, at ``now_ns``."""
        if self._since is None:
            self._since = now_ns
        elif now_ns - self._since >= self._window:
            self._rotate(now_ns)
        if lateness_ns > self._cur:
            self._cur = lateness_ns
            if lateness_ns > self.ns:
                self.ns = lateness_ns

    def age(self, now_ns: int) -> None:
        """Start a new window if the current one has ended (before the guard is read to
        plan a wait)."""
        if self._since is not None and now_ns - self._since >= self._window:
            self._rotate(now_ns)

    def _rotate(self, now_ns: int) -> None:
        """Start a new lateness window; keep the last one only if it just ended."""
        assert self._since is not None
        recent = now_ns - self._since < 2 * self._window
        self._prev = self._cur if recent else 0
        self._cur = 0
        self._since = now_ns
        self.ns = max(self._floor, self._prev)


class PublishTail:
    """The largest recent publish tail (see the module docstring)."""

    __slots__ = ("_count", "_samples", "ns")

    def __init__(self) -> None:
        self.ns = 0
        """The largest of the last ``TAIL_SAMPLES`` tails (ns)."""
        self._samples = np.zeros(TAIL_SAMPLES, dtype=np.int64)
        self._count = 0

    def note(self, tail_ns: int) -> None:
        """A batch's decisions were all handed to the sink ``tail_ns`` after its engine call."""
        n = self._count
        self._samples[n % TAIL_SAMPLES] = tail_ns
        self._count = n + 1
        if tail_ns > self.ns:
            self.ns = tail_ns  # a longer tail counts at once
        elif n % TAIL_REFRESH == 0:
            self.ns = int(self._samples[: min(n + 1, TAIL_SAMPLES)].max())
