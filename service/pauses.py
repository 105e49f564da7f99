"""Where a process stalls: garbage-collector pauses and event-loop lag.

Two things make an asyncio service late without doing more work per event: the cyclic
garbage collector (a collection stops the whole process; a gen-2 one walks every tracked
object, and its length grows with what the process keeps alive) and anything that holds
the event loop (a blocking call, a long callback). :class:`GcPauses` times every
collection through ``gc.callbacks`` (two ``perf_counter_ns`` calls and one histogram
observation per collection, nothing per event); :class:`LoopLag` sleeps a fixed interval
on the loop and records how late each wake-up was.

Both are histograms in ns (``service.histogram``), exported by the service as
``weir_gc_pause_seconds{generation}`` and ``weir_event_loop_lag_seconds`` and summarised
in ``/status``; the replay harness keeps its own pair so ``weir demo --diagnose`` shows
both processes side by side.

:class:`GcPolicy` is the service's ``[gc]`` settings: ``gc.freeze()`` once warm
(the model, the imported modules and everything else made at start-up move to the
permanent generation, so no later collection walks them again) and the gen-0 threshold.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from service.histogram import LoopHistogram

Clock = Callable[[], int]

GENERATIONS: Final = (0, 1, 2)

LONG_PAUSE_NS: Final = 1_000_000
"""A pause at least this long is also kept with its time (``GcPauses.long``)."""
LONG_PAUSES_KEPT: Final = 64

PAUSE_BUCKETS_S: Final[tuple[float, ...]] = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 1.0,
)  # fmt: skip
"""Upper bounds of the pause and lag histograms, in seconds."""


class _Pauses:
    """One histogram plus the exact largest value and the total count (ns)."""

    __slots__ = ("hist", "max_ns")

    def __init__(self) -> None:
        self.hist = LoopHistogram.seconds(PAUSE_BUCKETS_S)
        self.max_ns = 0

    def observe(self, ns: int) -> None:
        self.hist.observe(ns)
        if ns > self.max_ns:
            self.max_ns = ns

    def summary(self) -> dict[str, Any]:
        """Count, p50, p99 and max in ms (p50/p99 interpolated inside a bucket)."""
        h = self.hist
        top = self.max_ns / 1e6
        p50, p99 = h.quantile(0.5), h.quantile(0.99)
        return {
            "count": h.count,
            "total_ms": round(h.sum / 1e6, 3),
            "p50_ms": None if p50 is None else round(min(p50 * 1e3, top), 3),
            "p99_ms": None if p99 is None else round(min(p99 * 1e3, top), 3),
            "max_ms": round(self.max_ns / 1e6, 3),
        }


class GcPauses:
    """Times every garbage collection of this process, by generation.

    ``install`` adds the callback to ``gc.callbacks``; ``uninstall`` removes it. The
    callback runs in whichever thread collected, holding the GIL; readers on the loop may
    see a count one collection behind, never a torn value.
    """

    def __init__(
        self,
        clock: Clock = time.perf_counter_ns,
        wall: Clock = time.time_ns,
        long_ns: int = LONG_PAUSE_NS,
    ) -> None:
        self.by_generation = {g: _Pauses() for g in GENERATIONS}
        self.collected = dict.fromkeys(GENERATIONS, 0)
        """Unreachable objects freed, by generation."""
        self.long: deque[tuple[int, int, int]] = deque(maxlen=LONG_PAUSES_KEPT)
        """The last pauses of at least ``long_ns``: ``(wall ns at the start, generation,
        ns)``, to place them on a run's timeline."""
        self._clock = clock
        self._wall = wall
        self._long_ns = long_ns
        self._started = 0

    def install(self) -> GcPauses:
        """Start timing collections (idempotent); returns ``self``."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        """Stop timing collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        gen = info.get("generation", 2)
        ns = self._clock() - self._started
        self.by_generation[gen].observe(ns)
        self.collected[gen] += info.get("collected", 0)
        if ns >= self._long_ns:
            self.long.append((self._wall() - ns, gen, ns))

    def summary(self) -> dict[str, Any]:
        """Per generation: count, total, p50, p99, max (ms), objects freed; the thresholds
        and the frozen object count."""
        return {
            "generations": {
                str(g): {**p.summary(), "collected": self.collected[g]}
                for g, p in self.by_generation.items()
            },
            "long": [
                {"wall_ns": w, "generation": g, "ms": round(ns / 1e6, 3)} for w, g, ns in self.long
            ],
            "threshold": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(),
            "enabled": gc.isenabled(),
        }


class LoopLag:
    """Records how late the event loop wakes a task that sleeps ``interval_s``.

    A late wake-up means something held the loop (or the process was not scheduled, or
    a collection ran): every event that arrived meanwhile waited as long.
    """

    def __init__(self, interval_s: float = 0.01, clock: Clock = time.perf_counter_ns) -> None:
        self.interval_s = interval_s
        self.lag = _Pauses()
        self._clock = clock
        self._usage0: tuple[float, int] | None = None

    def record(self, slept_ns: int) -> None:
        """One wake-up ``slept_ns`` after going to sleep (lag: beyond the interval)."""
        self.lag.observe(max(0, slept_ns - round(self.interval_s * 1e9)))

    async def run(self) -> None:
        """Sleep ``interval_s`` and record the lag, until cancelled."""
        clock, interval = self._clock, self.interval_s
        self._usage0 = cpu_usage()
        while True:
            t0 = clock()
            await asyncio.sleep(interval)
            self.record(clock() - t0)

    def summary(self) -> dict[str, Any]:
        """Wake-ups, p50, p99 and max lag (ms), the probe interval, and since the probe
        started: the CPU seconds this process used and how often the OS preempted it
        (involuntary context switches: a busy host shows there)."""
        doc = {**self.lag.summary(), "interval_ms": self.interval_s * 1e3}
        if self._usage0 is not None:
            cpu, switches = cpu_usage()
            doc["cpu_s"] = round(cpu - self._usage0[0], 3)
            doc["involuntary_switches"] = switches - self._usage0[1]
        return doc


def cpu_usage() -> tuple[float, int]:
    """CPU seconds (user + system) this process used, and its involuntary context
    switches; ``(process_time, 0)`` where ``resource`` is missing."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return time.process_time(), 0
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime, u.ru_nivcsw


class GcPolicy:
    """The service's ``[gc]`` settings, applied once warm and undone at shutdown.

    ``apply`` sets the gen-0 threshold (0 leaves it) and, with ``freeze``, collects once
    and moves every surviving object to the permanent generation (``gc.freeze``);
    ``undo`` unfreezes them (they are collectable again) and restores the threshold.
    """

    def __init__(self, *, freeze: bool, gen0_threshold: int) -> None:
        self.freeze = freeze
        self.gen0_threshold = gen0_threshold
        self._saved: tuple[int, int, int] | None = None

    @property
    def applied(self) -> bool:
        """Whether ``apply`` ran and ``undo`` did not yet."""
        return self._saved is not None

    def apply(self) -> None:
        """Set the threshold and freeze (idempotent until ``undo``)."""
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        if self.gen0_threshold > 0:
            _, t1, t2 = self._saved
            gc.set_threshold(self.gen0_threshold, t1, t2)
        if self.freeze:
            gc.collect()
            gc.freeze()

    def undo(self) -> None:
        """Unfreeze and restore the threshold ``apply`` found (nothing if not applied)."""
        if self._saved is None:
            return
        if self.freeze:
            gc.unfreeze()
        gc.set_threshold(*self._saved)
        self._saved = None
