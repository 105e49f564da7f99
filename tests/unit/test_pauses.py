"""GC pause timing, the loop-lag probe and the ``[gc]`` policy (service.pauses)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from service.pauses import GcPauses, GcPolicy, LoopLag


class StepClock:
    """A ns clock that moves ``step`` on every reading."""

    def __init__(self, step: int) -> None:
        self.now = 0
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_every_collection_is_timed_by_generation_while_installed() -> None:
    """Installed, each collection counts once under its generation with the time between
    its start and stop; a pause of at least 1 ms is kept with its wall time; uninstalled,
    nothing more counts."""
    pauses = GcPauses(clock=StepClock(2_000_000), wall=lambda: 10_000_000_000).install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    gc.collect(1)
    doc = pauses.summary()["generations"]
    assert [doc[g]["count"] for g in ("0", "1", "2")] == [1, 0, 1]
    assert doc["2"]["max_ms"] == 2.0 and doc["2"]["total_ms"] == 2.0
    assert list(pauses.long) == [
        (9_998_000_000, 0, 2_000_000),
        (9_998_000_000, 2, 2_000_000),
    ]
    assert pauses._callback not in gc.callbacks


def test_install_twice_counts_each_collection_once() -> None:
    """A second ``install`` adds no second callback."""
    pauses = GcPauses().install().install()
    try:
        gc.collect(0)
    finally:
        pauses.uninstall()
    assert pauses.by_generation[0].hist.count == 1
    assert pauses._callback not in gc.callbacks


def test_short_pauses_are_not_kept_with_their_time() -> None:
    """A pause under 1 ms is counted but not kept in ``long``."""
    pauses = GcPauses(clock=StepClock(1_000)).install()
    try:
        gc.collect(0)
    finally:
        pauses.uninstall()
    assert pauses.by_generation[0].hist.count == 1 and not pauses.long


def test_loop_lag_records_lateness_beyond_the_interval() -> None:
    """A wake-up after 13 ms of a 10 ms sleep is 3 ms of lag; an early one counts as 0;
    the quantiles never exceed the largest value seen."""
    lag = LoopLag(interval_s=0.01)
    lag.record(13_000_000)
    lag.record(9_000_000)
    doc = lag.summary()
    assert doc["count"] == 2 and doc["max_ms"] == 3.0 and doc["total_ms"] == 3.0
    assert doc["p99_ms"] is not None and doc["p99_ms"] <= 3.0
    assert doc["interval_ms"] == 10.0 and "cpu_s" not in doc


async def test_loop_lag_probe_reports_cpu_and_preemption_once_running() -> None:
    """Once the probe has run, the summary adds the CPU time and involuntary switches
    since it started; cancelling it ends it."""
    lag = LoopLag(interval_s=0.001)
    woke = 0

    def clock() -> int:
        nonlocal woke
        woke += 1
        if woke > 4:
            raise asyncio.CancelledError
        return woke * 2_000_000

    lag._clock = clock
    with pytest.raises(asyncio.CancelledError):
        await lag.run()
    doc = lag.summary()
    assert doc["count"] == 2 and doc["max_ms"] == 1.0
    assert doc["cpu_s"] >= 0 and doc["involuntary_switches"] >= 0


@pytest.mark.usefixtures("restore_gc")
def test_policy_freezes_sets_the_threshold_and_undoes_both() -> None:
    """``apply`` sets gen 0's threshold and freezes what lives; ``undo`` unfreezes and
    restores the threshold; each is idempotent."""
    _, t1, t2 = before = gc.get_threshold()
    policy = GcPolicy(freeze=True, gen0_threshold=5000)
    policy.apply()
    policy.apply()
    assert policy.applied and gc.get_threshold() == (5000, t1, t2)
    assert gc.get_freeze_count() > 0
    policy.undo()
    policy.undo()
    assert not policy.applied and gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.usefixtures("restore_gc")
def test_policy_without_freeze_or_threshold_changes_nothing() -> None:
    """``freeze = false`` and threshold 0 leave the collector as it is."""
    before = gc.get_threshold()
    GcPolicy(freeze=False, gen0_threshold=0).apply()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.usefixtures("restore_gc")
def test_cycles_made_after_the_freeze_are_still_collected() -> None:
    """Memory stays bounded: reference cycles made after ``apply`` are freed by the
    collector."""
    GcPolicy(freeze=True, gen0_threshold=5000).apply()
    refs = []
    for _ in range(100):
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        refs.append(weakref.ref(a))
    del a, b
    gc.collect()
    assert all(r() is None for r in refs)
