"""Discrete-event simulation of a scheduler on a virtual clock.

Arrivals come from a trace (ns, non-decreasing); each event's payload is its index. The
engine is one server whose batch service time is drawn from a ``ServiceModel`` (e.g. the
measured samples behind a latency profile). The scheduler is driven as the pipeline's
dispatch loop (``service.pipeline``) drives it: ``poll`` after the arrivals it has read,
after every completion and at the wake time it asked for.

The event loop is modelled too. While it sleeps, whatever wakes it (an arrival, the timer,
or with ``inline=False`` a completion) is seen ``wake_late_ns`` late: a constant or a draw,
e.g. from the measured wake-up error of the loop's timer, which on a loaded host is mostly
scheduling latency and so hits arrivals as much as timers. With ``inline=True`` (the
default, as when ONNX Runtime runs on the loop thread) the loop is busy while the engine
runs, and arrivals in the meantime are read when the batch completes.

No I/O, no real clock: a run of 100k events takes about a second.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engines.profile import LatencyProfile
from service.scheduler.base import Batch, Item, Outcome, Scheduler, SchedulerError
from service.scheduler.deadline import Deadline

ServiceModel = Callable[[int], int]
"""Draws one batch service time (ns) for a bucket."""

OK, EXPIRED, SHED, UNDECIDED = 0, 1, 2, -1
_CODE = {Outcome.OK: OK, Outcome.EXPIRED: EXPIRED, Outcome.SHED: SHED}


class EmpiricalService:
    """Service times drawn with replacement from measured samples per bucket."""

    __slots__ = ("_pos", "_samples", "_u")

    def __init__(self, samples_ns: Mapping[int, Sequence[int] | np.ndarray], *, seed: int = 0):
        self._samples = {b: np.asarray(s, dtype=np.int64) for b, s in samples_ns.items()}
        self._u = np.random.default_rng(seed).random(1 << 16)
        self._pos = 0

    def __call__(self, bucket: int) -> int:
        arr = self._samples[bucket]
        u = self._u[self._pos]
        self._pos = (self._pos + 1) & 0xFFFF
        return int(arr[int(u * arr.size)])

    def profile(self) -> LatencyProfile:
        """A latency profile built from the same samples."""
        return LatencyProfile(self._samples)


@dataclass(slots=True)
class SimResult:
    """Per-event outcomes and times of one run (index = event number = payload)."""

    arrival_ns: np.ndarray
    deadline_ns: np.ndarray
    decided_ns: np.ndarray
    outcome: np.ndarray
    """``OK``, ``EXPIRED``, ``SHED`` (int8)."""
    late: np.ndarray
    batch_sizes: list[int]
    busy_ns: int
    pauses: int
    order: list[int] = field(default_factory=list)
    """Payloads in publication order (only with ``record_order``)."""

    def attained(self) -> np.ndarray:
        """Per event: decided ``ok``, not late, by its deadline."""
        ok: np.ndarray = (self.outcome == OK) & ~self.late & (self.decided_ns <= self.deadline_ns)
        return ok

    @property
    def span_ns(self) -> int:
        """First arrival to last decision."""
        return int(self.decided_ns.max() - self.arrival_ns.min()) if self.arrival_ns.size else 0


def simulate(
    scheduler: Scheduler[int],
    arrivals_ns: Sequence[int] | np.ndarray,
    *,
    service: ServiceModel,
    budget_ns: int | None = None,
    deadlines_ns: Sequence[int] | np.ndarray | None = None,
    keys: Sequence[Hashable] | np.ndarray | None = None,
    wake_late_ns: int | Callable[[], int] = 0,
    inline: bool = True,
    record_order: bool = False,
) -> SimResult:
    """Run ``arrivals_ns`` through ``scheduler``; deadlines are given or arrival + budget."""
    arr = np.asarray(arrivals_ns, dtype=np.int64)
    n = int(arr.size)
    if deadlines_ns is not None:
        dls = np.asarray(deadlines_ns, dtype=np.int64)
    elif budget_ns is not None:
        dls = arr + budget_ns
    else:
        raise SchedulerError("simulate() needs budget_ns or deadlines_ns")
    arr_l: list[int] = arr.tolist()
    dl_l: list[int] = dls.tolist()
    key_l: list[Hashable] = list(range(n)) if keys is None else list(keys)
    decided = [0] * n
    outcome = [UNDECIDED] * n
    late = [False] * n
    sizes: list[int] = []
    order: list[int] = []
    late_fn = wake_late_ns if callable(wake_late_ns) else None
    late_const = 0 if callable(wake_late_ns) else wake_late_ns

    inf = 1 << 62
    i = 0
    asked = inf
    done_at = inf
    inflight: Batch[int] | None = None
    busy = 0
    pauses = 0
    was_paused = False
    submit = scheduler.submit
    poll = scheduler.poll

    def decide(it: Item[int], code: int, at: int) -> None:
        p = it.payload
        if outcome[p] != UNDECIDED:
            raise SchedulerError(f"event {p} decided twice")
        outcome[p] = code
        decided[p] = at
        late[p] = it.late
        if record_order:
            order.append(p)

    while True:
        if inflight is not None and inline:
            now = done_at  # the loop ran the engine; it did not sleep
        else:
            t = min(arr_l[i] if i < n else inf, asked, done_at)
            if t >= inf:
                break
            now = t + (late_fn() if late_fn is not None else late_const)
        if inflight is not None and done_at <= now:
            batch = inflight
            for it in batch.items:
                decide(it, OK, done_at)
            scheduler.complete(batch, done_at - batch.dispatched_ns)
            inflight = None
            done_at = inf
        if asked <= now:
            scheduler.note_wake(now - asked, now)
            asked = inf
        while i < n and arr_l[i] <= now:
            it = Item(i, key_l[i], Deadline(dl_l[i]))
            out = submit(it, now)
            if out is not None:
                decide(it, _CODE[out], now)
            i += 1
        while True:
            r = poll(now)
            if r is None:
                asked = inf
                break
            if isinstance(r, int):
                if r <= now:
                    raise SchedulerError(f"poll({now}) asked to wake at {r}, not in the future")
                asked = r
                break
            for it in r.expired:
                decide(it, EXPIRED, now)
            for it in r.shed:
                decide(it, SHED, now)
            if r.items:
                s = service(r.bucket)
                inflight = r
                done_at = now + s
                busy += s
                sizes.append(len(r.items))
        if scheduler.paused != was_paused:
            was_paused = not was_paused
            pauses += was_paused
    if i < n or any(o == UNDECIDED for o in outcome):
        raise SchedulerError("simulation ended with undecided events")
    return SimResult(
        arrival_ns=arr,
        deadline_ns=dls,
        decided_ns=np.asarray(decided, dtype=np.int64),
        outcome=np.asarray(outcome, dtype=np.int8),
        late=np.asarray(late, dtype=bool),
        batch_sizes=sizes,
        busy_ns=busy,
        pauses=pauses,
        order=order,
    )
