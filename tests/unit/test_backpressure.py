"""Backpressure levels: the loose topics' partitions first, all of them past half the queue
bound or with the sink full, none once the scheduler resumes."""

from __future__ import annotations

from aiokafka.structs import TopicPartition

from service.backpressure import Backpressure, Level
from service.scheduler.deadline import Budgets
from service.settings import load_settings

TIGHT, LOOSE = "tight", "loose"


class _Consumer:
    def __init__(self, parts: list[TopicPartition]) -> None:
        self.parts = set(parts)
        self.held: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.parts)

    def paused(self) -> set[TopicPartition]:
        return set(self.held)

    def pause(self, *partitions: TopicPartition) -> None:
        self.held.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.held.difference_update(partitions)


class _Scheduler:
    def __init__(self) -> None:
        self.paused = False
        self.queued = 0


def _budgets(**topic_ms: float) -> Budgets:
    table = "{" + ", ".join(f'"{t}" = {ms}' for t, ms in topic_ms.items()) + "}"
    env = {"WEIR_SCHEDULER__BUDGET_MS": "300", "WEIR_SCHEDULER__TOPIC_BUDGET_MS": table}
    return Budgets.from_settings(load_settings(env=env).scheduler)


def test_the_loose_topic_pauses_first_and_everything_past_half_the_queue_bound() -> None:
    """Paused by the scheduler, only the loose topic's partitions stop; at half of
    ``max_queue`` queued (or with the sink full) every partition does; none once the
    scheduler resumes. A pause counts once per stretch."""
    tight = [TopicPartition(TIGHT, p) for p in (0, 1)]
    loose = [TopicPartition(LOOSE, p) for p in (0, 1)]
    consumer, sched = _Consumer(tight + loose), _Scheduler()
    budgets = _budgets(tight=30.0, loose=300.0)
    bp = Backpressure(max_queue=1000, on_overload=True)
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.NONE and consumer.held == set() and bp.pauses == 0
    sched.paused, sched.queued = True, 300
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.LOOSE and consumer.held == set(loose)
    sched.queued = 500
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.ALL and consumer.held == set(tight + loose)
    sched.queued = 100
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert consumer.held == set(loose)  # back to the loose topic only
    sched.paused = False
    bp.update(consumer, sched, budgets, sink_full=True)  # type: ignore[arg-type]
    assert bp.level is Level.ALL and consumer.held == set(tight + loose)
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.NONE and consumer.held == set() and bp.pauses == 1
    sched.paused = True
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert consumer.held == set(loose) and bp.pauses == 2


def test_with_one_budget_for_every_topic_all_partitions_pause() -> None:
    """Nothing is looser than the rest: the scheduler's pause stops every partition."""
    parts = [TopicPartition(TIGHT, 0), TopicPartition(LOOSE, 0)]
    consumer, sched = _Consumer(parts), _Scheduler()
    budgets = _budgets(tight=50.0, loose=50.0)
    bp = Backpressure(max_queue=1000, on_overload=True)
    sched.paused = True
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.LOOSE and consumer.held == set(parts)


def test_pause_loose_first_off_pauses_every_partition_at_once() -> None:
    """``[scheduler] pause_loose_first = false``: the scheduler's pause stops the tight
    topic too."""
    parts = [TopicPartition(TIGHT, 0), TopicPartition(LOOSE, 0)]
    consumer, sched = _Consumer(parts), _Scheduler()
    budgets = _budgets(tight=30.0, loose=300.0)
    bp = Backpressure(max_queue=1000, on_overload=True, loose_first=False)
    sched.paused = True
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.ALL and consumer.held == set(parts)
    assert load_settings(env={}).scheduler.pause_loose_first


def test_pause_on_overload_off_keeps_consuming_until_half_the_queue_bound() -> None:
    """``[scheduler] pause_on_overload = false``: the scheduler's overload pauses nothing
    (it sheds in weir's queue instead); half of ``max_queue`` queued, or a full sink, still
    pauses every partition, for memory; none again once the scheduler resumes."""
    parts = [TopicPartition(TIGHT, 0), TopicPartition(LOOSE, 0)]
    consumer, sched = _Consumer(parts), _Scheduler()
    budgets = _budgets(tight=30.0, loose=300.0)
    for loose_first in (True, False):
        bp = Backpressure(max_queue=1000, loose_first=loose_first, on_overload=False)
        sched.paused, sched.queued = True, 499
        bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
        assert bp.level is Level.NONE and consumer.held == set() and bp.pauses == 0
        sched.queued = 500
        bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
        assert bp.level is Level.ALL and consumer.held == set(parts) and bp.pauses == 1
        sched.paused, sched.queued = False, 10
        bp.update(consumer, sched, budgets, sink_full=True)  # type: ignore[arg-type]
        assert bp.level is Level.ALL
        bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
        assert bp.level is Level.NONE and consumer.held == set()


def test_by_default_overload_pauses_only_looser_topics_whatever_the_anchor() -> None:
    """By default (``"loose"``) the scheduler's overload pauses the looser topics' partitions
    only, with every anchor: with one budget for every topic nothing pauses (weir's queue
    sheds) until half of ``max_queue``; ``true`` pauses the loose topics first and all of
    one budget; ``false`` nothing."""
    sched = _Scheduler()
    sched.paused, sched.queued = True, 1
    cases = [
        ({}, Level.LOOSE),
        ({"ANCHOR": '"kafka"'}, Level.LOOSE),
        ({"ANCHOR": '"source"'}, Level.LOOSE),
        ({"PAUSE_ON_OVERLOAD": "false"}, Level.NONE),
        ({"PAUSE_ON_OVERLOAD": "true"}, Level.LOOSE),
        ({"PAUSE_ON_OVERLOAD": "true", "PAUSE_LOOSE_FIRST": "false"}, Level.ALL),
    ]
    for env, level in cases:
        sc = load_settings(env={f"WEIR_SCHEDULER__{k}": v for k, v in env.items()}).scheduler
        assert Backpressure.for_settings(sc).level_for(sched, sink_full=False) is level, env  # type: ignore[arg-type]
    assert load_settings(env={}).scheduler.pause_on_overload == "loose"
    # One budget for every topic: "loose" pauses nothing, true pauses all.
    parts = [TopicPartition(TIGHT, 0), TopicPartition(TIGHT, 1)]
    one = _budgets(tight=30.0)
    for mode, held in (("loose", set()), (True, set(parts))):
        consumer = _Consumer(parts)
        bp = Backpressure(max_queue=1000, on_overload=mode)  # type: ignore[arg-type]
        bp.update(consumer, sched, one, sink_full=False)  # type: ignore[arg-type]
        assert consumer.held == held and bp.pauses == (0 if mode == "loose" else 1), mode
        assert bp.level is (Level.NONE if mode == "loose" else Level.LOOSE)
        sched.queued = 500
        bp.update(consumer, sched, one, sink_full=False)  # type: ignore[arg-type]
        assert bp.level is Level.ALL and consumer.held == set(parts) and bp.pauses == 1
        sched.queued = 1


def test_loose_mode_pauses_the_looser_topic_and_never_the_tightest_before_half() -> None:
    """``"loose"`` with a 30 and a 300 ms topic: overload pauses the 300 ms topic only; at
    half of ``max_queue`` everything; back to the loose topic, then none."""
    tight, loose = TopicPartition(TIGHT, 0), TopicPartition(LOOSE, 0)
    consumer, sched = _Consumer([tight, loose]), _Scheduler()
    budgets = _budgets(tight=30.0, loose=300.0)
    bp = Backpressure(max_queue=1000, on_overload="loose")
    sched.paused, sched.queued = True, 10
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.LOOSE and consumer.held == {loose} and bp.pauses == 1
    sched.queued = 500
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.ALL and consumer.held == {tight, loose}
    sched.queued = 10
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.LOOSE and consumer.held == {loose}
    sched.paused = False
    bp.update(consumer, sched, budgets, sink_full=False)  # type: ignore[arg-type]
    assert bp.level is Level.NONE and consumer.held == set() and bp.pauses == 1
