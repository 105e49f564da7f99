"""The runtime's loop over in-memory Kafka clients: commits on the injected clock, the
transaction abort and rewind, the window rebuild after a seek back, backpressure from the
sink, a dying dispatcher, and the signals."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

import service.runtime as runtime_mod
from engines.fake import FakeEngine
from engines.head import Head
from schemas.codec import decision_codec, event_codec
from schemas.decision import Decision, Status
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.errors import ConfigError, ServiceError
from service.memory_kafka import MemoryKafka
from service.runtime import Runtime
from service.settings import Settings, load_settings
from service.tasks import TaskDied

IN, OUT, DLQ, GROUP = "in", "out", "dlq", "g"
MS = 1_000_000


class FakeClock:
    """A monotonic ns clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> None:
        self.now += ns


def _settings(**sections: dict[str, Any]) -> Settings:
    env = {
        "WEIR_KAFKA__INPUT_TOPICS": '["in"]',
        "WEIR_KAFKA__DECISION_TOPIC": OUT,
        "WEIR_KAFKA__DLQ_TOPIC": DLQ,
        "WEIR_KAFKA__GROUP_ID": GROUP,
        "WEIR_HTTP__ENABLED": "false",
        "WEIR_SCHEDULER__BUDGET_MS": "10000",
    }
    for section, values in sections.items():
        for k, v in values.items():
            env[f"WEIR_{section.upper()}__{k.upper()}"] = (
                v if isinstance(v, str) else msgspec.json.encode(v).decode()
            )
    return load_settings(env=env)


Made = tuple[Runtime, MemoryKafka, FakeClock]


@pytest.fixture
def make_runtime() -> Callable[..., Made]:
    def make(
        *, partitions: int = 1, fail: Callable[[int, int], bool] | None = None, **sections: Any
    ) -> Made:
        spec = FeatureSpec(task=Task.TRADING, window=2)
        engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4, fail=fail)
        engine.warm_up(2)
        kafka = MemoryKafka()
        kafka.create_topic(IN, partitions)
        kafka.create_topic(OUT, partitions)
        kafka.create_topic(DLQ, 1)
        clock = FakeClock()
        rt = Runtime(
            _settings(**sections),
            engine=engine,
            head=Head("trading", ["SELL", "HOLD", "BUY"]),
            spec=spec,
            model_version="t",
            clients=kafka,
            clock=clock,
        )
        return rt, kafka, clock

    return make


def _feed(kafka: MemoryKafka, n: int, *, partitions: int = 1, key: str = "BTC") -> None:
    codec = event_codec()
    for i in range(n):
        q = Quote(symbol=key, bid_px=100.0 + i, bid_qty=1.0, ask_px=100.5 + i, ask_qty=2.0)
        kafka.append(IN, i % partitions, codec.encode(q), key=key.encode())


def _decisions(kafka: MemoryKafka) -> list[Decision]:
    codec = decision_codec()
    return [codec.decode(r.value or b"") for r in kafka.records(OUT)]


def _start(rt: Runtime) -> asyncio.Task[int]:
    return asyncio.get_running_loop().create_task(rt.run(install_signals=False))


def _committed(kafka: MemoryKafka, partitions: int) -> list[int | None]:
    return [kafka.committed(GROUP, IN, p) for p in range(partitions)]


async def _in_transaction(
    make_runtime: Any, n: int, **sections: Any
) -> tuple[Runtime, MemoryKafka, FakeClock, asyncio.Task[int], Any]:
    """An exactly-once runtime (flush every 20 ms of its clock) started on ``n`` inputs,
    once their decisions are in its open transaction: runtime, Kafka, clock, task and
    producer."""
    rt, kafka, clock = make_runtime(
        delivery={"mode": "exactly_once", "flush_interval_ms": 20}, **sections
    )
    _feed(kafka, n)
    task = _start(rt)
    await kafka.wait_until(lambda: bool(kafka.producers) and kafka.producers[0].in_transaction == n)
    return rt, kafka, clock, task, kafka.producers[0]


async def _held(
    make_runtime: Any, n: int, **sections: Any
) -> tuple[Runtime, MemoryKafka, FakeClock, asyncio.Task[int], Any]:
    """``_in_transaction`` on one input, then ``n`` more whose acknowledgements the broker
    holds (the pipeline cannot drain): runtime, Kafka, clock, task and producer."""
    rt, kafka, clock, task, producer = await _in_transaction(make_runtime, 1, **sections)
    producer.hold = True
    _feed(kafka, n)
    await kafka.wait_until(lambda: producer.unanswered == n)
    return rt, kafka, clock, task, producer


async def _commit_until(clock: FakeClock, done: Callable[[], bool]) -> None:
    """Move the clock a flush interval at a time (commits come on it) until ``done()``."""
    async with asyncio.timeout(10):
        while not done():
            clock.advance(20 * MS)
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("background", [True, False])
async def test_commits_what_is_acknowledged_when_the_clock_says(
    make_runtime: Any, background: bool
) -> None:
    """Nothing is committed before the commit interval has passed on the injected clock;
    then each partition's offset after its last acknowledged decision is, and a failed
    commit is retried at the next interval (beside the fetch loop or in it)."""
    rt, kafka, clock = make_runtime(
        partitions=2, delivery={"commit_interval_ms": 200, "commit_in_background": background}
    )
    _feed(kafka, 20, partitions=2)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 20)
    assert _committed(kafka, 2) == [None, None]
    assert rt.consumer is not None
    rt.consumer.fail_commit = KafkaError("coordinator moved")  # type: ignore[attr-defined]
    clock.advance(200 * MS)
    await kafka.wait_until(lambda: rt.consumer.fail_commit is None)  # type: ignore[union-attr]
    assert _committed(kafka, 2) == [None, None] and rt.commits == 0
    clock.advance(200 * MS)
    await kafka.wait_until(lambda: _committed(kafka, 2) == [10, 10])
    assert rt.commits == 1
    rt.stop()
    assert await task == 0
    assert sorted(d.offset for d in _decisions(kafka)) == sorted(list(range(10)) * 2)


async def test_periodic_commit_runs_beside_the_fetch_loop(make_runtime: Any) -> None:
    """While a periodic commit waits on a slow coordinator, records arriving meanwhile are
    still decided; a stop waits for that commit, then commits everything decided."""
    rt, kafka, clock = make_runtime(delivery={"commit_interval_ms": 200})
    _feed(kafka, 5)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 5)
    consumer = rt.consumer
    assert consumer is not None
    gate = asyncio.Event()
    consumer.commit_gate = gate  # type: ignore[attr-defined]
    clock.advance(200 * MS)
    await kafka.wait_until(lambda: consumer.commits_waiting == 1)  # type: ignore[attr-defined]
    _feed(kafka, 5)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 10)
    assert _committed(kafka, 1) == [None]
    rt.stop()
    gate.set()
    assert await task == 0
    assert _committed(kafka, 1) == [10]
    assert rt.commits == 2


async def test_background_commit_that_raises_stops_the_runtime(make_runtime: Any) -> None:
    """A background commit that fails with something other than a Kafka error stops the
    loop and ``run`` raises it (the process exits non-zero), after the shutdown commit of
    what was acknowledged."""
    rt, kafka, clock = make_runtime(delivery={"commit_interval_ms": 200})
    _feed(kafka, 5)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 5)
    assert rt.consumer is not None
    rt.consumer.fail_commit = RuntimeError("coordinator state corrupt")  # type: ignore[attr-defined]
    clock.advance(200 * MS)
    with pytest.raises(RuntimeError, match=r"^coordinator state corrupt$"):
        await task
    assert _committed(kafka, 1) == [5]


async def test_gc_policy_applies_once_assigned_and_is_undone_at_stop(make_runtime: Any) -> None:
    """At the first assignment the collector is frozen and the gen-0 threshold set; the
    status shows both; after the stop both are as they were."""
    before = gc.get_threshold()
    rt, kafka, _clock = make_runtime(gc={"gen0_threshold": 5000})
    _feed(kafka, 5)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 5)
    status = rt.metrics.status()["gc"]
    assert rt.gc_policy.applied and status["frozen"] > 0 and status["threshold"][0] == 5000
    rt.stop()
    assert await task == 0
    assert not rt.gc_policy.applied
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_failed_transaction_is_aborted_rewound_and_decided_again(make_runtime: Any) -> None:
    """Exactly-once: a transaction whose commit fails is aborted, the partitions rewound to
    the committed offsets and the windows cleared; the next transaction makes every decision
    again, so exactly one decision per input is visible and the offsets are committed."""
    rt, kafka, clock = make_runtime(delivery={"mode": "exactly_once", "flush_interval_ms": 20})
    _feed(kafka, 10)
    task = _start(rt)
    await kafka.wait_until(
        lambda: bool(kafka.producers) and kafka.producers[0].in_transaction == 10
    )
    producer = kafka.producers[0]
    producer.fail_commit = KafkaError("fenced")
    clock.advance(20 * MS)
    await kafka.wait_until(lambda: producer.aborts == 1 and producer.in_transaction == 10)
    assert kafka.records(OUT) == [] and _committed(kafka, 1) == [None]
    clock.advance(20 * MS)
    await kafka.wait_until(lambda: _committed(kafka, 1) == [10])
    rt.stop()
    assert await task == 0
    got = _decisions(kafka)
    assert [d.offset for d in got] == list(range(10))
    assert got[0].status is Status.WARMING  # the cleared window filled again
    assert {d.status for d in got[1:]} == {Status.OK}


@pytest.mark.parametrize("when", ["flush", "revoke"])
async def test_an_undrained_pipeline_aborts_the_transaction_and_stops_the_worker(
    make_runtime: Any, when: str
) -> None:
    """Exactly-once: where the pipeline does not drain within ``drain_timeout_ms`` before a
    transaction commit (here the broker holds every acknowledgement), at the periodic
    flush or at a revoke, the transaction is aborted and the worker stops with an error
    naming the limit: nothing is visible or committed, and what the worker held is not
    decided into a later transaction (a restart resumes from the last commit)."""
    rt, kafka, clock, task, producer = await _held(
        make_runtime, 5, shutdown={"drain_timeout_ms": 50, "revoke_timeout_ms": 50}
    )
    if when == "flush":
        clock.advance(20 * MS)
    else:
        assert rt.consumer is not None
        await rt.consumer.hand_on([TopicPartition(IN, 0)])  # type: ignore[attr-defined]
        _feed(kafka, 1)  # wakes the fetch loop, which then stops
    with pytest.raises(ServiceError) as info:
        await asyncio.wait_for(task, 10)  # it used to abort, rewind and serve on
    assert "did not drain within drain_timeout_ms=50" in str(info.value)
    assert "restarts from the last commit" in str(info.value)
    assert producer.aborts == 1 and producer.commits == 0
    assert rt.committer is not None and rt.committer.failed is info.value
    producer.release()
    assert kafka.records(OUT) == [] and _committed(kafka, 1) == [None]


async def test_partitions_lost_with_the_membership_commit_nothing_and_abort_the_transaction(
    make_runtime: Any,
) -> None:
    """Exactly-once: a revoke that comes after the group forgot this member (aiokafka has
    reset its generation: the partitions may already be another member's, which starts at
    their last commit) commits nothing: the open transaction is aborted, so no decision of
    it is visible and no offset committed. The worker serves on: assigned again, it decides
    every input once."""
    rt, kafka, clock, task, producer = await _in_transaction(make_runtime, 5)
    assert rt.consumer is not None
    await rt.consumer.lose([TopicPartition(IN, 0)])  # type: ignore[attr-defined]
    assert producer.aborts == 1 and producer.commits == 0
    assert kafka.records(OUT) == [] and _committed(kafka, 1) == [None]
    rt.consumer.rebalance()  # type: ignore[attr-defined]
    await _commit_until(clock, lambda: _committed(kafka, 1) == [5])
    rt.stop()
    assert await task == 0
    assert [d.offset for d in _decisions(kafka)] == list(range(5))
    assert rt.rebalances == 1


async def test_a_transaction_is_not_committed_once_the_group_forgot_this_member(
    make_runtime: Any,
) -> None:
    """Exactly-once: where the group no longer knows this member when a transaction is
    about to commit (aiokafka reset its generation; the revoke has not come yet), the
    transaction is aborted and the partitions rewound instead; once a member again, the
    worker decides every input once more and commits."""
    rt, kafka, clock, task, producer = await _in_transaction(make_runtime, 5)
    assert rt.consumer is not None
    membership = rt.consumer._coordinator  # type: ignore[attr-defined]
    membership.generation = -1
    clock.advance(20 * MS)
    await kafka.wait_until(lambda: producer.aborts == 1)
    assert producer.commits == 0 and kafka.records(OUT) == []
    membership.generation = 2
    await _commit_until(clock, lambda: _committed(kafka, 1) == [5])
    rt.stop()
    assert await task == 0
    assert [d.offset for d in _decisions(kafka)] == list(range(5))


async def test_a_stall_inside_a_transaction_commit_aborts_it(make_runtime: Any) -> None:
    """Exactly-once: the loop stalls past ``session_timeout_ms - heartbeat_interval_ms``
    while a transaction's offsets are on their way (the process stopped in the round trip):
    the transaction is aborted, not committed (the group may have given the partitions
    away meanwhile), and after the hold every input is decided once more and committed."""
    rt, kafka, clock, task, producer = await _in_transaction(make_runtime, 5)
    stalls = [7_001 * MS]

    def stall() -> None:
        if stalls:
            clock.advance(stalls.pop())

    producer.on_send_offsets = stall
    clock.advance(20 * MS)
    await kafka.wait_until(lambda: producer.aborts == 1)
    assert producer.commits == 0 and kafka.records(OUT) == []
    await _commit_until(clock, lambda: _committed(kafka, 1) == [5])
    rt.stop()
    assert await task == 0
    assert [d.offset for d in _decisions(kafka)] == list(range(5))


async def test_a_stop_right_after_a_stall_commits_nothing(make_runtime: Any) -> None:
    """Exactly-once: a stop within the hold after a loop stall (before the heartbeat could
    tell whether the membership survived) aborts the open transaction instead of
    committing it; the restart decides those inputs again."""
    rt, kafka, clock, task, producer = await _in_transaction(make_runtime, 5)
    clock.advance(7_001 * MS)
    await asyncio.sleep(0.2)  # the stall watch's timer turns and notes it
    rt.stop()
    assert await task == 0
    assert producer.commits == 0 and producer.aborts == 1
    assert kafka.records(OUT) == [] and _committed(kafka, 1) == [None]


async def test_a_stalled_loop_holds_the_next_transaction_commit(make_runtime: Any) -> None:
    """Exactly-once: after the loop went longer than ``session_timeout_ms`` less
    ``heartbeat_interval_ms`` between turns (the group may have expired the session), no
    transaction commits for two heartbeat intervals, though the flush interval passed;
    then the commit goes out."""
    rt, kafka, clock, task, producer = await _in_transaction(
        make_runtime, 5, kafka={"session_timeout_ms": 10_000, "heartbeat_interval_ms": 3_000}
    )
    commits = producer.commits
    clock.advance(7_001 * MS)  # one turn of the loop took this long
    await asyncio.sleep(0.2)  # the loop turns (in real time) and holds the commit
    clock.advance(5_900 * MS)
    await asyncio.sleep(0.2)
    assert producer.commits == commits and _committed(kafka, 1) == [None]
    clock.advance(200 * MS)  # two heartbeat intervals after the stall
    await kafka.wait_until(lambda: _committed(kafka, 1) == [5])
    rt.stop()
    assert await task == 0
    assert [d.offset for d in _decisions(kafka)] == list(range(5))


async def test_partitions_lost_at_least_once_commit_nothing(make_runtime: Any) -> None:
    """At-least-once: a revoke after the group forgot this member commits nothing (the
    group would refuse it; the new owner reads on from the last commit)."""
    rt, kafka, _ = make_runtime()
    _feed(kafka, 5)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 5)
    assert rt.consumer is not None
    await rt.consumer.lose([TopicPartition(IN, 0)])  # type: ignore[attr-defined]
    rt.stop()
    assert await task == 0
    assert _committed(kafka, 1) == [None]


async def test_partitions_lost_with_an_undrained_pipeline_stop_the_worker(
    make_runtime: Any,
) -> None:
    """Exactly-once: partitions lost while the broker holds the acknowledgements (the
    pipeline does not drain within ``revoke_timeout_ms``): the transaction is aborted and
    the worker stops, naming the limit, rather than decide what it holds into the next."""
    rt, kafka, _, task, producer = await _held(make_runtime, 3, shutdown={"revoke_timeout_ms": 50})
    assert rt.consumer is not None
    await rt.consumer.lose([TopicPartition(IN, 0)])  # type: ignore[attr-defined]
    _feed(kafka, 1)  # wakes the fetch loop, which then stops
    with pytest.raises(ServiceError, match="did not drain within revoke_timeout_ms=50"):
        await asyncio.wait_for(task, 10)
    assert producer.aborts == 1 and producer.commits == 0
    producer.release()
    assert kafka.records(OUT) == [] and _committed(kafka, 1) == [None]


async def test_a_commit_asked_for_during_a_transaction_commit_waits_for_it(
    make_runtime: Any,
) -> None:
    """Exactly-once: a commit asked for while the loop's transaction is committing (a
    revoke, which aiokafka runs from its coordinator task) waits for that commit instead of
    starting a second ``commit_transaction`` beside it."""
    rt, kafka, clock, task, producer = await _in_transaction(make_runtime, 5)
    gate = asyncio.Event()
    producer.commit_gate = gate
    clock.advance(20 * MS)
    await kafka.wait_until(lambda: producer.committing)
    assert rt.committer is not None
    revoke = asyncio.get_running_loop().create_task(rt.committer.now())
    try:
        for _ in range(20):  # loop turns enough for it to drain the idle pipeline and commit
            await asyncio.sleep(0)
        assert not revoke.done()  # waiting for the commit in flight, not beside it
    finally:
        gate.set()
    await revoke
    assert producer.aborts == 0 and _committed(kafka, 1) == [5]
    rt.stop()
    assert await task == 0
    assert [d.offset for d in _decisions(kafka)] == list(range(5))


async def test_seek_back_rebuilds_windows_without_deciding(make_runtime: Any) -> None:
    """With ``warmup = "seek"`` an assigned partition is read again from ``seek_back``
    records before the committed offset: those records fill the key windows and get no
    decision, so the first new record is decided ``ok``, not ``warming``."""
    rt, kafka, _ = make_runtime(state={"warmup": "seek", "seek_back": 3})
    _feed(kafka, 10)
    kafka.commits[(GROUP, TopicPartition(IN, 0))] = 6
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 4)
    rt.stop()
    assert await task == 0
    got = _decisions(kafka)
    assert [d.offset for d in got] == [6, 7, 8, 9]
    assert {d.status for d in got} == {Status.OK}
    assert _committed(kafka, 1) == [10]


async def test_sink_bound_pauses_consumption_and_loses_nothing(make_runtime: Any) -> None:
    """While the broker holds every acknowledgement, at most ``max_inflight_decisions``
    decisions are in flight and the partitions are paused; once it answers they resume and
    every input is decided once."""
    rt, kafka, _ = make_runtime(
        partitions=2, delivery={"max_inflight_decisions": 4}, kafka={"max_poll_records": 8}
    )
    _feed(kafka, 40, partitions=2)
    task = _start(rt)
    await kafka.wait_until(lambda: bool(kafka.producers))
    producer = kafka.producers[0]
    producer.hold = True
    await kafka.wait_until(lambda: rt.consumer is not None and bool(rt.consumer.paused()))
    assert rt.sink is not None and rt.sink.full and rt.pauses == 1
    producer.release()
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 40)
    await kafka.wait_until(lambda: not rt.consumer.paused())  # type: ignore[union-attr]
    rt.stop()
    assert await task == 0
    assert producer.max_unanswered <= 4
    assert sorted(d.offset for d in _decisions(kafka)) == sorted(list(range(20)) * 2)


async def test_revoke_drains_commits_and_the_reassignment_resumes_there(
    make_runtime: Any,
) -> None:
    """On revoke the runtime commits what was decided (the clock never reached a periodic
    commit); the partitions assigned again resume at that commit, deciding nothing twice."""
    rt, kafka, _ = make_runtime(partitions=2)
    _feed(kafka, 10, partitions=2)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 10)
    assert rt.consumer is not None
    rt.consumer.rebalance()  # type: ignore[attr-defined]
    await kafka.wait_until(lambda: _committed(kafka, 2) == [5, 5])
    _feed(kafka, 4, partitions=2)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 14)
    rt.stop()
    assert await task == 0
    assert rt.rebalances == 1 and rt.ready
    assert sorted(d.offset for d in _decisions(kafka)) == sorted([*range(7), *range(7)])


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
async def test_records_of_a_partition_revoked_during_the_fetch_are_left_to_its_new_owner(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A revoke lands (from aiokafka's coordinator task) while the fetch loop ingests the
    first partition of a fetch that also holds the second's records: the second's records
    get no decision and its offset is not committed, so the partition's new owner, which
    starts at its committed offset, decides each of them once. Deciding them here put a
    second decision for each into the next transaction (the chaos suite's duplicates after
    ``kill -9`` in exactly-once mode)."""
    rt, kafka, clock = make_runtime(
        partitions=2, delivery={"mode": mode, "flush_interval_ms": 20, "commit_interval_ms": 20}
    )
    _feed(kafka, 20, partitions=2)
    real = runtime_mod.Pipeline.ingest
    handed: list[TopicPartition] = []

    async def revoked_meanwhile(self: Any, records: Any, fetched: Any = None) -> None:
        if not handed:
            other = TopicPartition(IN, 1 - records[0].partition)
            handed.append(other)
            assert rt.consumer is not None
            await rt.consumer.hand_on([other])  # type: ignore[attr-defined]
        await real(self, records, fetched)

    monkeypatch.setattr(runtime_mod.Pipeline, "ingest", revoked_meanwhile)
    task = _start(rt)
    await kafka.wait_until(lambda: len(handed) == 1)
    kept = 1 - handed[0].partition
    await _commit_until(clock, lambda: _committed(kafka, 2)[kept] == 10)
    rt.stop()
    assert await task == 0
    assert _committed(kafka, 2)[kept] == 10 and _committed(kafka, 2)[handed[0].partition] is None
    got = _decisions(kafka)
    assert sorted(d.offset for d in got) == list(range(10))
    assert {d.partition for d in got} == {kept}
    assert rt.pipeline is not None and rt.pipeline.counters.superseded == 10


async def test_dispatcher_death_stops_the_runtime_with_its_cause(make_runtime: Any) -> None:
    """An engine raising something other than ``EngineError`` kills the dispatcher: the
    runtime stops, commits nothing, raises the death (the process exits non-zero), and
    readiness and the task-death counter say so."""

    armed = [False]

    def crash(call: int, bucket: int) -> bool:
        if armed[0]:
            raise RuntimeError("driver lost")
        return False

    rt, kafka, _ = make_runtime(fail=crash)
    armed[0] = True
    _feed(kafka, 10)
    with pytest.raises(TaskDied) as info:
        await _start(rt)
    assert str(info.value) == "background task 'weir-dispatch' died: RuntimeError: driver lost"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert rt.metrics.readiness() == (False, str(info.value))
    assert rt.pipeline is not None and rt.pipeline.tasks.deaths == {"weir-dispatch": 1}
    # Nothing is committed after the death: the restart begins at the last commit.
    assert _committed(kafka, 1) == [None]


async def test_a_dead_client_task_stops_the_runtime_after_committing_what_was_decided(
    make_runtime: Any,
) -> None:
    """When a Kafka client's background task ends (aiokafka's fetcher, say), the next
    fetch stops the loop: what was acknowledged is committed and ``run`` raises a
    ``ServiceError`` naming the task (the process exits non-zero and restarts)."""
    rt, kafka, _ = make_runtime()
    _feed(kafka, 5)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 5)
    assert rt.consumer is not None
    rt.consumer.ended = "aiokafka's fetcher task ended: RuntimeError('closed')"  # type: ignore[attr-defined]
    with pytest.raises(ServiceError) as info:
        await task
    assert str(info.value) == (
        "the Kafka client stopped working (aiokafka's fetcher task ended: "
        "RuntimeError('closed')); stopping this worker so that it restarts from the last commit"
    )
    assert _committed(kafka, 1) == [5]


def test_first_signal_stops_second_exits_at_once(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first SIGTERM/SIGINT asks for a drain; the second exits the process with 130."""
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)

    monkeypatch.setattr(runtime_mod.os, "_exit", fake_exit)
    rt, _, _ = make_runtime()
    rt._on_signal()
    assert rt._stop.is_set()
    assert exits == []
    rt._on_signal()
    assert exits == [130]


def test_bad_schema_settings_stop_the_runtime_before_it_connects() -> None:
    """A ``[schema]`` setting that names no importable Struct fails at construction,
    before any Kafka client exists."""
    spec = FeatureSpec(task=Task.TRADING, window=2)
    engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4)
    settings = _settings(schema={"format": "struct", "struct": "weir_nowhere:Event"})
    with pytest.raises(ConfigError) as info:
        Runtime(
            settings,
            engine=engine,
            head=Head("trading", ["SELL", "HOLD", "BUY"]),
            spec=spec,
            model_version="t",
            clients=MemoryKafka(),
        )
    assert str(info.value) == (
        "[schema]: event struct 'weir_nowhere:Event': cannot import weir_nowhere: "
        "No module named 'weir_nowhere'"
    )


TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _feed_traced(kafka: MemoryKafka, n: int) -> None:
    codec = event_codec()
    for i in range(n):
        q = Quote(symbol="BTC", bid_px=100.0 + i, bid_qty=1.0, ask_px=100.5 + i, ask_qty=2.0)
        headers = [("traceparent", TRACEPARENT), ("tracestate", b"k=v")]
        kafka.append(IN, 0, codec.encode(q), key=b"BTC", headers=headers)


async def test_trace_context_reaches_the_decision_topic(make_runtime: Any) -> None:
    """Tracing off: every decision produced to the decision topic carries its input's
    traceparent and tracestate as they came."""
    rt, kafka, _ = make_runtime()
    _feed_traced(kafka, 6)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 6)
    rt.stop()
    assert await task == 0
    for r in kafka.records(OUT):
        got = [(k, v) for k, v in r.headers if k in ("traceparent", "tracestate")]
        assert got == [("traceparent", TRACEPARENT), ("tracestate", b"k=v")]


async def test_enabled_tracing_spans_batches_and_flushes_at_stop(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracing on with no process provider: weir's own provider (OTEL_TRACES_EXPORTER)
    gets the batch spans, exported at stop, and traced decisions continue their trace."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExportResult

    exported: list[str] = []

    def export(self: Any, spans: Any) -> SpanExportResult:
        exported.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS

    monkeypatch.setattr(ConsoleSpanExporter, "export", export)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # only the stop exports
    rt, kafka, _ = make_runtime(tracing={"enabled": True, "event_spans": True})
    _feed_traced(kafka, 6)
    task = _start(rt)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 6)
    assert exported == []
    rt.stop()
    assert await task == 0
    assert "weir.batch" in exported and "weir.event" in exported
    ok = [r for r in kafka.records(OUT) if dict(r.headers)["weir-status"] == b"ok"]
    assert ok
    for r in ok:
        _, trace_id, parent_id, _ = dict(r.headers)["traceparent"].split(b"-")
        assert trace_id == TRACEPARENT.split(b"-")[1] and parent_id != TRACEPARENT.split(b"-")[2]


def test_enabled_tracing_without_the_extra_stops_the_runtime_before_it_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[tracing] enabled`` without OpenTelemetry fails at construction, naming the extra."""
    import sys

    monkeypatch.delitem(sys.modules, "service.otel", raising=False)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    spec = FeatureSpec(task=Task.TRADING, window=2)
    engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4)
    with pytest.raises(ConfigError) as info:
        Runtime(
            _settings(tracing={"enabled": True}),
            engine=engine,
            head=Head("trading", ["SELL", "HOLD", "BUY"]),
            spec=spec,
            model_version="t",
            clients=MemoryKafka(),
        )
    assert "install weir's otel extra (pip install 'weir[otel]')" in str(info.value)
