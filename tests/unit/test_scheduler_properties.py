"""Scheduler invariants under random traffic on a virtual clock (hypothesis + simulator)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.profile import LatencyProfile
from service.scheduler import (
    Batch,
    EdfScheduler,
    FixedWindowScheduler,
    GreedyScheduler,
    Item,
    Outcome,
    PerEventScheduler,
    simulate,
)
from service.scheduler.sim import OK, SHED
from service.settings import ExpiryPolicy

US = 1_000
MAX_BATCH = 16


def make_profile() -> LatencyProfile:
    """p50 = 100 + 10*b us, p99 = 1.5x, p99.9 = 2x; never refreshed online."""
    samples = {}
    b = 1
    while b <= MAX_BATCH:
        p50 = (100 + 10 * b) * US
        arr = np.empty(1000, dtype=np.int64)
        arr[:990], arr[990:999], arr[999:] = p50, p50 * 3 // 2, p50 * 2
        samples[b] = arr
        b *= 2
    return LatencyProfile(samples, refresh_every=10**9)


def fit(prof: LatencyProfile, slack: int) -> int:
    """Largest bucket whose p99 fits the slack (the profile is monotone); 0 if none."""
    return max((b for b in prof.buckets if prof.p99_ns(b) <= slack), default=0)


class Checked:
    """Wraps a scheduler and checks every call against a reference model of its queue."""

    def __init__(self, inner: Any, *, edf: bool, guard_ns: int = 0, hold: bool = False) -> None:
        self.inner = inner
        self.prof: LatencyProfile = inner.profile
        self.edf = edf
        self.guard = guard_ns
        self.hold = hold
        self.max_queued = inner._max
        self.queue: dict[int, Item[int]] = {}
        self.p1 = self.prof.p99_ns(1)

    @property
    def profile(self) -> LatencyProfile:
        return self.prof

    @property
    def queued(self) -> int:
        return int(self.inner.queued)

    @property
    def busy(self) -> bool:
        return bool(self.inner.busy)

    @property
    def paused(self) -> bool:
        return bool(self.inner.paused)

    def submit(self, it: Item[int], now: int) -> Outcome | None:
        out = self.inner.submit(it, now)
        if out is None:
            self.queue[it.payload] = it
        elif out is Outcome.EXPIRED:
            assert it.deadline.mono_ns < now + self.p1, "expired while it could still make it"
        else:
            assert len(self.queue) == self.max_queued, "shed below the bound"
        assert self.inner.queued == len(self.queue) <= self.max_queued
        return out  # type: ignore[no-any-return]

    def poll(self, now: int) -> Batch[int] | int | None:
        n = len(self.queue)
        dmin = min((i.deadline.mono_ns for i in self.queue.values()), default=0)
        overloaded = self.inner.paused
        r = self.inner.poll(now)
        if r is None:
            assert self.inner.busy or not self.queue, "idle with events queued and no wake time"
        elif isinstance(r, int):
            assert r > now
            if self.edf:
                b = fit(self.prof, dmin - now)
                assert 0 < n < b, "waited although the queue fills the bucket"
                guard = self.inner.guard_ns
                assert guard >= self.guard
                latest = dmin - self.prof.p999_ns(self.prof.bucket_for(n)) - guard
                assert r <= latest or self.hold, "wake time later than the latest safe start"
        else:
            for it in r.expired:
                assert it.deadline.mono_ns < now + self.p1, "expired while it could make it"
                del self.queue[it.payload]
            for it in r.shed:
                assert overloaded, "shed from a batch without overload"
                assert r.items, "shed without a batch that gains from it"
                assert it.deadline.mono_ns < (
                    now + self.prof.p999_ns(r.bucket) + self.inner.guard_ns + self.inner.tail_ns
                )
                del self.queue[it.payload]
            for it in r.items:
                del self.queue[it.payload]
                if self.edf and not it.late:
                    assert now + self.prof.p99_ns(r.bucket) <= it.deadline.mono_ns
            if r.items:
                assert r.bucket == self.prof.bucket_for(len(r.items)) <= MAX_BATCH
        return r  # type: ignore[no-any-return]

    def note_wake(self, lateness_ns: int, now_ns: int) -> None:
        assert lateness_ns >= 0
        self.inner.note_wake(lateness_ns, now_ns)

    def note_publish(self, tail_ns: int, now_ns: int) -> None:
        assert tail_ns >= 0
        self.inner.note_publish(tail_ns, now_ns)

    def complete(self, batch: Batch[int], latency_ns: int) -> None:
        self.inner.complete(batch, latency_ns)


traffic = st.lists(
    st.tuples(
        st.integers(0, 300),  # gap to previous arrival, us
        st.integers(0, 4),  # key
        st.integers(100, 3_000),  # budget, us (below p99(1) = 165 us: hopeless)
    ),
    min_size=1,
    max_size=80,
)


def run(
    sched: Checked,
    events: list[tuple[int, int, int]],
    seed: int,
    late_us: int = 0,
    at_p99: bool = False,
    inline: bool = True,
) -> Any:
    """Simulate ``events`` with service times in [p50/2, p99] of the bucket (or at p99)."""
    prof = sched.prof
    rng = random.Random(seed)
    arrivals = np.cumsum([g * US for g, _, _ in events])
    deadlines = arrivals + np.array([b * US for _, _, b in events])
    keys = [k for _, k, _ in events]

    def service(bucket: int) -> int:
        if at_p99:
            return prof.p99_ns(bucket)
        return rng.randint(prof.p50_ns(bucket) // 2, prof.p99_ns(bucket))

    wake: int | Callable[[], int] = (lambda: rng.randint(0, late_us * US)) if late_us else 0
    res = simulate(
        sched,
        arrivals,
        deadlines_ns=deadlines,
        keys=keys,
        service=service,
        wake_late_ns=wake,
        inline=inline,
        record_order=True,
    )
    assert (res.outcome >= 0).all(), "an event has no outcome"
    per_key: dict[int, list[int]] = {}
    for p in res.order:
        if res.outcome[p] != SHED:
            per_key.setdefault(keys[p], []).append(p)
    for key, ps in per_key.items():
        assert ps == sorted(ps), f"key {key} decided out of order: {ps}"
    assert len(res.order) == len(events), "an event was decided twice or never"
    return res


@settings(max_examples=200, deadline=None)
@given(
    traffic,
    st.integers(1, 40),
    st.sampled_from([ExpiryPolicy.PUBLISH, ExpiryPolicy.INFER_LATE]),
    st.integers(0, 100),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_edf_invariants(
    events: list[tuple[int, int, int]],
    max_queued: int,
    expiry: ExpiryPolicy,
    guard_us: int,
    inline: bool,
    seed: int,
) -> None:
    """EDF: one outcome each, key order kept, bound held, rule obeyed, admitted events on time."""
    inner: EdfScheduler[int] = EdfScheduler(
        make_profile(), max_queued=max_queued, expiry=expiry, guard_ns=guard_us * US
    )
    sched = Checked(inner, edf=True, guard_ns=guard_us * US)
    res = run(sched, events, seed, late_us=guard_us, inline=inline)
    ok = (res.outcome == OK) & ~res.late
    assert (res.decided_ns[ok] <= res.deadline_ns[ok]).all(), "an admitted event missed"
    if expiry is ExpiryPolicy.INFER_LATE:
        assert not (res.outcome == 1).any()


@settings(max_examples=100, deadline=None)
@given(traffic, st.integers(1, 40), st.integers(0, 2**32))
def test_edf_with_max_hold_keeps_its_invariants(
    events: list[tuple[int, int, int]], max_queued: int, seed: int
) -> None:
    """With a hold cap EDF still decides each event once, in key order, on time when admitted."""
    inner: EdfScheduler[int] = EdfScheduler(
        make_profile(), max_queued=max_queued, guard_ns=0, max_hold_ns=50 * US
    )
    res = run(Checked(inner, edf=True, hold=True), events, seed)
    ok = res.outcome == OK
    assert (res.decided_ns[ok] <= res.deadline_ns[ok]).all()


@settings(max_examples=100, deadline=None)
@given(traffic, st.integers(1, 40), st.integers(0, 2), st.integers(0, 2**32))
def test_baseline_invariants(
    events: list[tuple[int, int, int]], max_queued: int, which: int, seed: int
) -> None:
    """Baselines: one outcome each, key order kept, queue bound held."""
    prof = make_profile()
    inner: Any = (
        PerEventScheduler(prof, max_queued=max_queued),
        GreedyScheduler(prof, max_queued=max_queued),
        FixedWindowScheduler(prof, max_queued=max_queued, max_wait_ns=200 * US, max_size=8),
    )[which]
    run(Checked(inner, edf=False), events, seed)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 80), st.integers(200, 3_000))
def test_edf_never_worse_than_greedy_on_a_burst(n: int, budget_us: int) -> None:
    """On a burst of equal-budget events EDF meets at least as many deadlines as greedy."""
    events = [(0, i % 3, budget_us) for i in range(n)]
    got = []
    for inner in (EdfScheduler(make_profile(), guard_ns=0), GreedyScheduler(make_profile())):
        res = run(Checked(inner, edf=isinstance(inner, EdfScheduler)), events, 0, at_p99=True)
        got.append(int(res.attained().sum()))
    assert got[0] >= got[1]
