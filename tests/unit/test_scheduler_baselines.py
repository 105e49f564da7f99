"""Baseline schedulers: per-event, fixed window, greedy."""

from __future__ import annotations

import numpy as np

from engines.profile import LatencyProfile
from service.scheduler import (
    Batch,
    Deadline,
    FixedWindowScheduler,
    GreedyScheduler,
    Item,
    Outcome,
    PerEventScheduler,
)


def make_profile(max_batch: int = 8) -> LatencyProfile:
    """A flat 100 us profile with buckets 1..max_batch."""
    b, samples = 1, {}
    while b <= max_batch:
        samples[b] = np.full(10, 100_000, dtype=np.int64)
        b *= 2
    return LatencyProfile(samples)


def fill(s: object, n: int, now: int = 0) -> None:
    """Submit ``n`` items with far deadlines."""
    for p in range(n):
        assert s.submit(Item(p, p % 3, Deadline(10**12)), now) is None  # type: ignore[attr-defined]


def test_per_event_dispatches_one_at_a_time_in_order() -> None:
    """Per-event hands out single items in arrival order, one batch in flight."""
    s: PerEventScheduler[int] = PerEventScheduler(make_profile())
    fill(s, 3)
    got = []
    for _ in range(3):
        b = s.poll(0)
        assert isinstance(b, Batch) and b.bucket == 1
        assert s.poll(0) is None
        got += [i.payload for i in b.items]
        s.complete(b, 100_000)
    assert got == [0, 1, 2] and s.poll(0) is None


def test_greedy_takes_everything_up_to_the_largest_bucket() -> None:
    """Greedy takes all queued events, at most the largest bucket, in arrival order."""
    s: GreedyScheduler[int] = GreedyScheduler(make_profile())
    fill(s, 11)
    b = s.poll(0)
    assert isinstance(b, Batch) and [i.payload for i in b.items] == list(range(8))
    s.complete(b, 1)
    b = s.poll(0)
    assert isinstance(b, Batch) and len(b.items) == 3 and b.bucket == 4


def test_fixed_window_waits_from_the_first_arrival() -> None:
    """Fixed window waits max_wait after the oldest event unless max_size are queued."""
    s: FixedWindowScheduler[int] = FixedWindowScheduler(make_profile(), max_wait_ns=500, max_size=4)
    fill(s, 2, now=100)
    assert s.poll(100) == 600
    assert s.poll(599) == 600
    b = s.poll(600)
    assert isinstance(b, Batch) and len(b.items) == 2
    s.complete(b, 1)
    fill(s, 5, now=700)
    b = s.poll(700)
    assert isinstance(b, Batch) and len(b.items) == 4


def test_baselines_shed_at_the_bound_and_never_pause() -> None:
    """Baselines shed past max_queued and never raise backpressure."""
    s: GreedyScheduler[int] = GreedyScheduler(make_profile(), max_queued=2)
    fill(s, 2)
    assert s.submit(Item(9, 0, Deadline(1)), 0) is Outcome.SHED
    assert s.queued == 2 and not s.paused


def test_submit_all_queues_a_run_at_the_tail_or_none_past_the_bound() -> None:
    """A run that fits is queued after what is queued, in order; one past the bound is
    refused whole (its items are then submitted, and shed, one by one)."""
    s: GreedyScheduler[int] = GreedyScheduler(make_profile(), max_queued=5)
    fill(s, 2)
    assert s.submit_all([Item(p, p, Deadline(10**12)) for p in (2, 3)], 7)
    assert not s.submit_all([Item(p, p, Deadline(10**12)) for p in (4, 5)], 7)
    assert s.queued == 4
    b = s.poll(7)
    assert isinstance(b, Batch) and [i.payload for i in b.items] == [0, 1, 2, 3]
    assert [i.seq for i in b.items] == [0, 1, 2, 3]
