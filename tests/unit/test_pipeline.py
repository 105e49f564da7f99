"""The pipeline end to end in memory: one outcome per input, in key order, nothing lost."""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import msgspec
import numpy as np
import pytest

from engines.head import Head
from engines.likelihood import AnomalyLikelihood, LikelihoodSpec
from schemas.codec import dead_letter_codec, decision_codec, event_codec
from schemas.confluent import ConfluentDecoder, MemorySchemas, frame
from schemas.decision import Status
from schemas.decoders import FieldMap, StructDecoder
from schemas.events import Quote, SensorReading, Trade
from schemas.features import FeatureSpec, Task
from service.errors import PublishError
from service.kafka import KafkaSink
from service.memory import MemoryRecord, MemorySink
from service.memory_kafka import MemoryKafka, MemoryProducer
from service.offsets import OffsetError
from service.pipeline import Pipeline
from service.probe import PROBE_INTERVAL_NS, PROBE_REFRESH
from service.registry import RegistryClient, RegistryError
from service.scheduler.base import Item
from service.scheduler.deadline import Deadline
from service.settings import Settings, load_settings
from service.slots import RUN_CAP
from tests.pipeline_io import TOPIC, quote_record, run_pipeline, sink_decisions

WINDOW = 4  # the window of the conftest fixtures


def _settings(**sections: dict[str, Any]) -> Settings:
    env = {}
    for section, values in sections.items():
        for k, v in values.items():
            env[f"WEIR_{section.upper()}__{k.upper()}"] = (
                msgspec.json.encode(v).decode() if not isinstance(v, str) else v
            )
    return load_settings(env=env)


def _quote_record(i: int, key: str = "BTCUSDT", partition: int = 0) -> MemoryRecord:
    return quote_record(i, key=key, partition=partition, timestamp=1_700_000_000_000 + i)


async def test_every_event_gets_one_decision_in_key_order(make_pipeline: Any) -> None:
    """N events across keys and partitions give N decisions, each key's in offset order."""
    pipe, sink, _ = make_pipeline()
    records = [_quote_record(i, key=f"K{i % 3}", partition=i % 2) for i in range(200)]
    await run_pipeline(pipe, records, chunk=7)
    got = sink_decisions(sink)
    assert len(got) == 200
    assert sorted((d.partition, d.offset) for d in got) == sorted((i % 2, i) for i in range(200))
    for k in ("K0", "K1", "K2"):
        offs = [d.offset for d in got if d.key == k]
        assert offs == sorted(offs)
    statuses = {d.status for d in got}
    assert statuses <= {Status.OK, Status.WARMING}
    assert sum(d.status is Status.WARMING for d in got) == 3 * (WINDOW - 1)
    assert pipe.tracker.to_commit() == {(TOPIC, 0): 199, (TOPIC, 1): 200}


async def test_decisions_match_the_model_on_the_window(make_pipeline: Any) -> None:
    """An ok decision's scores are the model's output on its key's window at that event."""
    pipe, sink, engine = make_pipeline()
    records = [_quote_record(i) for i in range(WINDOW + 3)]
    spec = pipe.spec
    state = spec.new_state()
    expected = []
    for r in records:
        state.update(event_codec().decode(r.value), r.timestamp * 1_000_000)
        row = np.zeros(spec.n_features, dtype=np.float32)
        state.write_window(row)
        expected.append(engine.expected(row[None, :])[0])
    await run_pipeline(pipe, records, chunk=7)
    got = [d for d in sink_decisions(sink) if d.status is Status.OK]
    assert len(got) == 4
    for d in got:
        assert d.scores == pytest.approx(expected[d.offset].tolist(), rel=1e-5)
        assert d.label == ["SELL", "HOLD", "BUY"][int(np.argmax(expected[d.offset]))]
        assert d.model_version == "test-1"
        s = d.stamps
        assert s.ingest_wall_ns is not None and s.publish_wall_ns is not None
        assert s.dispatch_wall_ns is not None and s.infer_done_wall_ns is not None
        assert s.ingest_wall_ns <= s.dispatch_wall_ns <= s.infer_done_wall_ns <= s.publish_wall_ns
        assert s.kafka_ts_ns == (1_700_000_000_000 + d.offset) * 1_000_000


def _runs_of_keys() -> list[str]:
    """Keys in runs longer than ``RUN_CAP``, in short runs and interleaved (each widened
    key with a run of its own open meanwhile)."""
    keys = ["A"] * (2 * RUN_CAP + 5) + ["B", "A"] * 9 + ["C"] * 6 + ["A", "B", "C"] * 5
    keys += ["B"] * (RUN_CAP + 1) + ["A"] * 2
    return keys + ["A", "B"] * 40 + ["A", "A", "B", "B", "C"] * 30


@pytest.mark.parametrize(("max_queue", "chunk"), [(4096, 7), (4096, 1000), (5, 1000)])
async def test_runs_of_a_key_are_decided_on_each_event_s_own_window(
    make_pipeline: Any, max_queue: int, chunk: int
) -> None:
    """Runs of one key's events, written to the slab at once (``SlotTable.place``), give
    each event the model's output on its own window: runs longer than one copy takes,
    short runs, interleaved keys, and runs cut by events shed for want of a slot."""
    settings = _settings(scheduler={"budget_ms": 1000.0, "max_queue": max_queue})
    pipe, sink, engine = make_pipeline(settings=settings, latency_ns=200_000)
    records = [_quote_record(i, key=k) for i, k in enumerate(_runs_of_keys())]
    states: dict[str, Any] = {}
    expected = []
    row = np.zeros(pipe.spec.n_features, dtype=np.float32)
    for r in records:
        event = event_codec().decode(r.value)
        state = states.setdefault(event.key, pipe.spec.new_state())
        state.update(event, r.timestamp * 1_000_000)
        state.write_window(row)
        expected.append(engine.expected(row[None, :])[0])
    await run_pipeline(pipe, records, chunk=chunk)
    got = sink_decisions(sink)
    assert sorted(d.offset for d in got) == list(range(len(records)))
    ok = [d for d in got if d.status is Status.OK]
    for d in ok:
        assert d.scores == pytest.approx(expected[d.offset].tolist(), rel=1e-5), d.offset
    shed = sum(d.status is Status.SHED for d in got)
    assert (shed > 0 and len(ok) >= 10) if max_queue < 10 else len(ok) > len(records) // 2
    assert all(pipe.state.get(k).runs > 1 for k in "ABC")


class _BatchSlots:
    """A ``BatchObserver`` keeping each batch's slots."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def on_batch(self, bucket: int, items: Any, *_: Any) -> None:
        self.batches.append([item.payload for item in items])

    def on_published(self, now_ns: int, mono_to_wall_ns: int) -> None:
        return None


async def test_a_batch_s_slots_are_freed_so_the_next_batch_s_are_consecutive(
    make_pipeline: Any,
) -> None:
    """Each batch's slots are freed after its publishing, in reverse: the events after it
    take them in order, so every batch's slots are consecutive rows and its input is one
    slice of the slab (and still the events' own windows)."""
    seen = _BatchSlots()
    pipe, sink, engine = make_pipeline(observer=seen)
    records = [_quote_record(i) for i in range(3 + 8 * 6)]
    await run_pipeline(pipe, records, chunk=8)
    assert len(seen.batches) >= 6
    for slots in seen.batches:
        assert slots == list(range(slots[0], slots[0] + len(slots))), seen.batches
    assert len(pipe.slots.free) == pipe.slots.capacity
    state = pipe.spec.new_state()
    row = np.zeros(pipe.spec.n_features, dtype=np.float32)
    want = {}
    for r in records:
        state.update(event_codec().decode(r.value), r.timestamp * 1_000_000)
        state.write_window(row)
        want[r.offset] = engine.expected(row[None, :])[0].tolist()
    ok = [d for d in sink_decisions(sink) if d.status is Status.OK]
    assert len(ok) == len(records) - (WINDOW - 1)
    assert all(d.scores == pytest.approx(want[d.offset], rel=1e-5) for d in ok)


@pytest.mark.parametrize(
    "slots",
    [[5, 6, 7, 8], [8, 7, 6, 5], [0, 1], [9], [4, 9, 2, 7], [6, 5, 7, 8], [2, 4]],
)
def test_a_batch_s_rows_are_gathered_in_its_order(make_pipeline: Any, slots: list[int]) -> None:
    """The engine's input rows are the slab rows of the batch's slots in the batch's order,
    and the slots come back in it: consecutive slots (one slice) and others."""
    pipe, _, engine = make_pipeline()
    slab = pipe.slots.slab
    slab[:] = np.arange(slab.shape[0], dtype=np.float32)[:, None]
    items = [Item(slot, "k", Deadline(0)) for slot in slots]
    bucket = engine.bucket_for(len(slots))
    got = pipe.dispatcher._gather(items, bucket)
    assert got.tolist() == slots
    assert engine.input_buffer(bucket)[: len(slots), 0].tolist() == slots


async def test_interleaved_keys_keep_their_narrow_rings(make_pipeline: Any) -> None:
    """Keys whose events never come twice in a row are not widened."""
    pipe, _, _ = make_pipeline()
    records = [_quote_record(i, key=f"K{i % 3}") for i in range(60)]
    await run_pipeline(pipe, records, chunk=60)
    assert {pipe.state.get(f"K{k}").runs for k in range(3)} == {1}


async def test_bad_input_goes_to_the_dead_letter_topic(make_pipeline: Any) -> None:
    """Undecodable, invalid, oversized and empty records are dead-lettered; good ones decided."""
    settings = _settings(kafka={"max_event_bytes": 400})
    pipe, sink, _ = make_pipeline(settings=settings)
    good = [_quote_record(i) for i in range(6)]
    bad = [
        MemoryRecord(TOPIC, 0, 6, b"{not json", key=b"k", headers=[("h", b"1")]),
        MemoryRecord(TOPIC, 0, 7, b'{"kind":"quote","symbol":"B","bid_px":"x"}'),
        MemoryRecord(TOPIC, 0, 8, b'{"kind":"weather"}'),
        MemoryRecord(TOPIC, 0, 9, None),
        MemoryRecord(TOPIC, 0, 10, b"x" * 401),
        MemoryRecord(TOPIC, 0, 11, event_codec().encode(SensorReading(sensor_id="s", value=1.0))),
    ]
    more = [_quote_record(i) for i in range(12, 16)]
    await run_pipeline(pipe, good + bad + more, chunk=7)
    dead = [dead_letter_codec().decode(m.value) for m in sink.on("weir.dlq")]
    assert [(d.offset, d.reason) for d in dead] == [
        (6, "malformed"),
        (7, "invalid_value"),
        (8, "unknown_kind"),
        (9, "empty"),
        (10, "oversized"),
        (11, "wrong_task"),
    ]
    assert (
        dead[0].value == b"{not json" and dead[0].key == b"k" and dead[0].headers == [("h", b"1")]
    )
    assert dead[1].detail == (
        "decode failed: Expected `float`, got `str` - at `$.bid_px` "
        "- topic=weir.events partition=0 offset=7"
    )
    assert dead[4].detail == "record of 401 bytes exceeds max_event_bytes=400"
    assert len(sink_decisions(sink)) == 10
    assert pipe.counters.dead == {
        "malformed": 1,
        "invalid_value": 1,
        "unknown_kind": 1,
        "empty": 1,
        "oversized": 1,
        "wrong_task": 1,
    }
    assert pipe.tracker.to_commit() == {(TOPIC, 0): 16}


async def test_engine_error_gives_error_decisions_and_goes_on(make_pipeline: Any) -> None:
    """A failing batch is decided `error` with the reason; later batches are fine."""
    pipe, sink, engine = make_pipeline(fail_every=2)
    calls_before = engine.calls
    records = [_quote_record(i) for i in range(40)]
    await run_pipeline(pipe, records, chunk=1)
    got = sink_decisions(sink)
    assert len(got) == 40
    errors = [d for d in got if d.status is Status.ERROR]
    oks = [d for d in got if d.status is Status.OK]
    assert errors and oks
    assert errors[0].error is not None and "injected failure" in errors[0].error
    assert pipe.counters.engine_errors == sum(
        1 for c in range(calls_before + 1, engine.calls + 1) if c % 2 == 0
    )


async def test_overload_sheds_never_loses(make_pipeline: Any) -> None:
    """With a tiny queue and a slow engine, excess events get `shed`, every input decided."""
    settings = _settings(scheduler={"budget_ms": 1000.0, "max_queue": 4})
    pipe, sink, _ = make_pipeline(settings=settings)
    records = [_quote_record(i) for i in range(300)]
    pipe.start()
    await pipe.ingest(records)
    assert await pipe.drain(5.0)
    await pipe.close()
    got = sink_decisions(sink)
    assert len(got) == 300
    assert any(d.status is Status.SHED for d in got)


async def test_tight_budget_expires_explicitly(make_pipeline: Any) -> None:
    """Events whose budget is below the engine's latency are decided `expired`, not dropped."""
    settings = _settings(scheduler={"budget_ms": 0.01})
    pipe, sink, _ = make_pipeline(settings=settings, latency_ns=1_000_000)
    await run_pipeline(pipe, [_quote_record(i) for i in range(20)], chunk=7)
    got = sink_decisions(sink)
    assert len(got) == 20
    assert {d.status for d in got} == {Status.WARMING, Status.EXPIRED}


def _sensor_records(values: list[float]) -> list[MemoryRecord]:
    return [
        MemoryRecord(
            TOPIC, 0, i, event_codec().encode(SensorReading(sensor_id="m", value=v)), timestamp=i
        )
        for i, v in enumerate(values)
    ]


_QUICK = LikelihoodSpec(
    averaging_window=1,
    learning_period=0,
    estimation_samples=20,
    historic_window=200,
    reestimation_period=1,
)


async def test_sensor_alerts_on_a_spike(make_pipeline: Any) -> None:
    """A spike after a steady stretch is an ALERT carrying its likelihood and threshold."""
    head = Head("anomaly", threshold=0.5, likelihood=_QUICK)
    pipe, sink, _ = make_pipeline(task=Task.SENSOR, head=head)
    await run_pipeline(pipe, _sensor_records([1.0, 1.1] * 40 + [500.0]), chunk=7)
    got = [d for d in sink_decisions(sink) if d.status is Status.OK]
    assert {d.label for d in got} <= {"OK", "ALERT"}
    last = got[-1].anomaly
    assert last is not None and last.likelihood is not None and last.log_likelihood is not None
    assert got[-1].label == "ALERT" and last.log_likelihood >= 0.5 and last.threshold == 0.5
    assert got[-1].scores[0] == pytest.approx(last.error)
    assert all(d.label == "OK" for d in got[:-1])


async def test_a_key_warming_its_likelihood_never_alerts(make_pipeline: Any) -> None:
    """Until its likelihood has seen warm_scores errors a key is OK, whatever the threshold."""
    head = Head("anomaly", threshold=0.0, likelihood=_QUICK)
    pipe, sink, _ = make_pipeline(task=Task.SENSOR, head=head)
    await run_pipeline(pipe, _sensor_records([1.0, 1.1] * 10 + [500.0]), chunk=7)
    got = [d for d in sink_decisions(sink) if d.status is Status.OK]
    assert got and len(got) <= _QUICK.warm_scores
    assert {d.label for d in got} == {"OK"}
    assert all(d.anomaly is not None and d.anomaly.likelihood is None for d in got)


async def test_an_evicted_key_starts_its_likelihood_over(make_pipeline: Any) -> None:
    """The likelihood lives beside the key's feature state and is evicted with it."""
    settings = _settings(state={"max_keys": 1})
    head = Head("anomaly", likelihood=_QUICK)
    pipe, _, _ = make_pipeline(task=Task.SENSOR, head=head, settings=settings)
    reading = event_codec().encode(SensorReading(sensor_id="m", value=1.0))
    other = event_codec().encode(SensorReading(sensor_id="n", value=1.0))
    await run_pipeline(pipe, [MemoryRecord(TOPIC, 0, 0, reading, timestamp=0)], chunk=7)
    first = pipe.state.head_state("m")
    assert isinstance(first, AnomalyLikelihood)
    await run_pipeline(
        pipe,
        [
            MemoryRecord(TOPIC, 0, 1, other, timestamp=1),
            MemoryRecord(TOPIC, 0, 2, reading, timestamp=2),
        ],
        chunk=7,
    )
    assert pipe.state.head_state("m") is not first


async def test_publish_failure_holds_the_commit_point(make_pipeline: Any) -> None:
    """A decision the broker refused is never acknowledged, so its offset is never committed;
    the failure names the input's coordinates and keeps the broker's error as its cause."""
    refusal = RuntimeError("broker said no")

    def fail(msg: Any) -> BaseException | None:
        d = decision_codec().decode(msg.value)
        return refusal if d.offset == 5 else None

    pipe, _, _ = make_pipeline(sink=MemorySink(fail=fail))
    await run_pipeline(pipe, [_quote_record(i) for i in range(10)], chunk=7)
    assert isinstance(pipe.failed, PublishError)
    assert str(pipe.failed) == (
        "publishing decisions failed: RuntimeError: broker said no - "
        "topic=weir.events partition=0 offset=5"
    )
    assert pipe.failed.__cause__ is refusal
    assert pipe.tracker.committable((TOPIC, 0)) == 5
    assert pipe.counters.produce_errors == 1


class _ScriptedScheduler:
    """Queues what it is given; the first poll with three queued returns the third as the
    batch and the first two as expired (the first shares the batch's key)."""

    def __init__(self, profile: Any) -> None:
        self.profile = profile
        self.items: list[Any] = []
        self.done = False
        self.busy = False
        self.paused = False

    @property
    def queued(self) -> int:
        return 0 if self.done else len(self.items)

    def submit(self, item: Any, now_ns: int) -> None:
        self.items.append(item)

    def submit_all(self, items: Any, now_ns: int) -> bool:
        self.items.extend(items)
        return True

    def poll(self, now_ns: int) -> Any:
        from service.scheduler import Batch

        if self.done or len(self.items) < 3:
            return None
        self.done = self.busy = True
        first, second, third = self.items
        return Batch([third], [first, second], 1, now_ns)

    def note_wake(self, lateness_ns: int, now_ns: int) -> None:
        pass

    def note_publish(self, tail_ns: int, now_ns: int) -> None:
        pass

    def complete(self, batch: Any, latency_ns: int) -> None:
        self.busy = False


async def test_batch_runs_before_any_await_and_expired_keep_key_order(
    make_pipeline: Any,
) -> None:
    """Nothing is sent between the poll and the engine call; an expired event of a batch key
    is published before the batch's decision, the other expired ones after it."""
    pipe, sink, engine = make_pipeline(scheduler=lambda e: _ScriptedScheduler(e.profile))
    calls_at_send: list[tuple[str, int, int]] = []
    codec = decision_codec()

    def seen(msg: Any) -> None:
        d = codec.decode(msg.value)
        calls_at_send.append((d.key, d.offset, engine._calls))

    sink._on_message = seen
    # Fill both keys' windows first, so the three records below reach the scheduler.
    warm = [_quote_record(i, key=k) for k in ("A", "B") for i in range(WINDOW - 1)]
    for j, r in enumerate(warm):
        r.offset = j
    records = [
        _quote_record(10, key="A"),
        _quote_record(11, key="B"),
        _quote_record(12, key="A"),
    ]
    calls_before = engine._calls
    pipe.start()
    await pipe.ingest(warm + records)
    for _ in range(100):
        if len(calls_at_send) == len(warm) + 3:
            break
        await asyncio.sleep(0.01)
    await pipe.close()
    tail = calls_at_send[len(warm) :]
    assert [(k, off) for k, off, _ in tail] == [("A", 10), ("A", 12), ("B", 11)]
    assert all(calls == calls_before + 1 for _, _, calls in tail)


def test_one_scheduler_serves_ingest_and_the_dispatcher(make_pipeline: Any) -> None:
    """The scheduler given at construction is the one ingest queues into and the dispatcher
    polls; it cannot be swapped afterwards, which would leave the two halves apart."""
    pipe, _, engine = make_pipeline(scheduler=lambda e: _ScriptedScheduler(e.profile))
    assert isinstance(pipe.scheduler, _ScriptedScheduler)
    assert pipe.dispatcher.scheduler is pipe.scheduler
    with pytest.raises(AttributeError):
        pipe.scheduler = _ScriptedScheduler(engine.profile)  # type: ignore[misc]
    assert pipe.dispatcher.scheduler is pipe.scheduler


async def test_large_ingest_lets_the_dispatcher_run_between_chunks(make_pipeline: Any) -> None:
    """With ingest_chunk=8, batches are decided while a 200-record ingest call is still
    going, and later chunks get later ingest times."""
    settings = _settings(scheduler={"budget_ms": 50.0, "ingest_chunk": 8})
    pipe, sink, _ = make_pipeline(settings=settings)
    codec = decision_codec()
    seen_at: list[int] = []

    def seen(msg: Any) -> None:
        if codec.decode(msg.value).status is Status.OK:
            seen_at.append(pipe.tracker.partition((TOPIC, 0)).last + 1)  # records ingested

    sink._on_message = seen
    pipe.start()
    await pipe.ingest([_quote_record(i) for i in range(200)])
    assert await pipe.drain(5.0)
    await pipe.close()
    got = sink_decisions(sink)
    assert len(got) == 200
    assert min(seen_at) < 100  # decided before ingest reached the middle
    ingests = [d.stamps.ingest_wall_ns for d in got]
    assert len(set(ingests)) > 1


async def test_a_fetch_of_one_ingest_chunk_is_queued_whole_before_the_dispatcher_runs(
    make_pipeline: Any,
) -> None:
    """With ingest_chunk=4 and a clock that makes every chunk boundary a turn for the
    dispatcher, 4 ready records ingested in one call go out as one batch of 4, not 3 and 1
    (the turn came one record early)."""
    ticks = iter(range(0, 10**15, 1_000_000))  # 1 ms per reading: every check is a turn
    pipe, sink, _ = make_pipeline(
        settings=_settings(scheduler={"budget_ms": 10_000.0, "ingest_chunk": 4}),
        clock=lambda: next(ticks),
    )
    pipe.start()
    await pipe.ingest([_quote_record(i) for i in range(WINDOW - 1)])  # warming
    assert await pipe.drain(5.0)
    await pipe.ingest([_quote_record(i) for i in range(WINDOW - 1, WINDOW + 3)])
    assert await pipe.drain(5.0)
    await pipe.close()
    ok = [d for d in sink_decisions(sink) if d.status is Status.OK]
    assert [d.offset for d in ok] == list(range(WINDOW - 1, WINDOW + 3))
    assert [d.batch_size for d in ok] == [4, 4, 4, 4]


async def test_an_offset_not_above_the_last_tracked_is_refused(make_pipeline: Any) -> None:
    """Ingest tracks each partition's offsets through the tracker's object for it; a record
    whose offset is not above the last tracked of its partition stops ingest with an
    ``OffsetError`` naming both, and the other partition's run before it still counts."""
    pipe, sink, _ = make_pipeline()
    pipe.start()
    await pipe.ingest([_quote_record(i) for i in range(3)])
    with pytest.raises(OffsetError, match=re.escape(f"offset 2 of ('{TOPIC}', 0) tracked after 2")):
        await pipe.ingest([_quote_record(0, partition=1), _quote_record(2)])
    assert await pipe.drain(5.0)
    await pipe.close()
    assert pipe.tracker.committable((TOPIC, 0)) == 3
    assert pipe.tracker.committable((TOPIC, 1)) == 1
    assert [(d.partition, d.offset) for d in sink_decisions(sink)] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
    ]


async def test_a_key_evicted_by_another_is_not_updated_through_ingest_s_last_key(
    make_pipeline: Any,
) -> None:
    """Ingest updates the key it saw last without asking the store again; with one key
    kept, another key evicts it, so the key coming back starts over and warms up again."""
    pipe, sink, _ = make_pipeline(settings=_settings(state={"max_keys": 1}))
    keys = ["A"] * (WINDOW + 1) + ["B"] + ["A"] * 2
    await run_pipeline(pipe, [_quote_record(i, key=k) for i, k in enumerate(keys)], chunk=100)
    got = [(d.key, d.status) for d in sorted(sink_decisions(sink), key=lambda d: d.offset)]
    w, ok = Status.WARMING, Status.OK
    assert got == [("A", w)] * (WINDOW - 1) + [("A", ok)] * 2 + [("B", w)] + [("A", w)] * 2
    assert pipe.state.evictions == 2


async def test_key_states_cleared_while_ingest_waits_are_not_reused(make_pipeline: Any) -> None:
    """Key states cleared while ingest waits on a send (as a rebalance that took every
    partition clears them) are not reused by the rest of that ingest call: the key's
    later events in the same call warm up again from the first."""
    cleared: list[int] = []

    def clear_once(msg: Any) -> None:
        d = decision_codec().decode(msg.value)
        if d.offset == WINDOW - 2 and not cleared:
            cleared.append(d.offset)
            pipe.state.clear()

    pipe, sink, _ = make_pipeline(sink=MemorySink(on_message=clear_once))
    await run_pipeline(pipe, [_quote_record(i) for i in range(2 * WINDOW)], chunk=100)
    assert cleared == [WINDOW - 2]
    statuses = [d.status for d in sink_decisions(sink)]
    assert statuses == [Status.WARMING] * (2 * WINDOW - 2) + [Status.OK] * 2


async def test_ack_of_a_revoked_partition_is_dropped(make_pipeline: Any) -> None:
    """A decision acknowledged after its partition was revoked (forgotten by the tracker)
    is dropped without error, the other partitions' acks still count, and the revoked
    partition's later records are left to its new owner."""
    forgotten: list[int] = []

    def revoke_first(msg: Any) -> None:
        d = decision_codec().decode(msg.value)
        if d.partition == 1 and not forgotten:
            forgotten.append(d.offset)
            pipe.tracker.forget((TOPIC, 1))  # the revoke completes as this one goes out

    pipe, sink, _ = make_pipeline(sink=MemorySink(on_message=revoke_first))
    await run_pipeline(pipe, [_quote_record(i, partition=i % 2) for i in range(6)], chunk=7)
    assert forgotten == [1] and pipe.failed is None
    assert [(d.partition, d.offset) for d in sink_decisions(sink)] == [
        (0, 0),
        (1, 1),
        (0, 2),
        (0, 4),
    ]
    assert pipe.counters.superseded == 2
    assert pipe.tracker.committable((TOPIC, 0)) == 5


@pytest.mark.parametrize("change", ["revoked", "rewound"])
async def test_records_after_their_partition_changed_mid_ingest_are_left_undecided(
    make_pipeline: Any, change: str
) -> None:
    """A revoke (``forget``) or a rewind (``reset`` to offset 5, after a seek) lands while
    ingest awaits a dead letter's publish: the fetch's later records of that partition get
    no decision and are counted ``superseded`` (the new owner, or the fetch from the
    rewound position, decides them), and the earlier ones, and another partition's, are
    decided once."""

    def changed(msg: Any) -> None:
        if msg.topic == "weir.dlq":
            if change == "revoked":
                pipe.tracker.forget((TOPIC, 1))
            else:
                pipe.tracker.reset((TOPIC, 1), 5)

    pipe, sink, _ = make_pipeline(sink=MemorySink(on_message=changed))
    records = [_quote_record(i, partition=1) for i in range(10)]
    records[5] = MemoryRecord(TOPIC, 1, 5, b"{not json")
    records += [_quote_record(i, partition=0) for i in range(3)]
    await run_pipeline(pipe, records, chunk=len(records))
    got = sink_decisions(sink)
    assert sorted((d.partition, d.offset) for d in got) == [
        *((0, i) for i in range(3)),
        *((1, i) for i in range(5)),
    ]
    assert len(sink.on("weir.dlq")) == 1
    assert pipe.counters.superseded == 4
    assert pipe.tracker.committable((TOPIC, 0)) == 3
    if change == "revoked":
        assert not pipe.tracker.holds((TOPIC, 1))
    else:
        assert pipe.tracker.committable((TOPIC, 1)) == 5


async def test_ack_after_its_partition_was_reset_changes_nothing_held(make_pipeline: Any) -> None:
    """A decision acknowledged after its partition was reset (a rewind while it was in
    flight) acknowledges where its offset was tracked, not in the partition's new state:
    the fetch's later records of the partition are left undecided (3 and 5 here), and the
    new state counts only what the fetch from the rewound position tracks (1, 3 and 5)."""
    reset: list[int] = []

    def rewind_first(msg: Any) -> None:
        d = decision_codec().decode(msg.value)
        if d.partition == 1 and not reset:
            reset.append(d.offset)
            pipe.tracker.reset((TOPIC, 1), 0)  # offsets 0.. of partition 1 are read again

    pipe, sink, _ = make_pipeline(sink=MemorySink(on_message=rewind_first))
    fetches = [_quote_record(i, partition=i % 2) for i in range(6)]
    fetches += [_quote_record(i, partition=1) for i in (1, 3, 5)]  # read again from 0
    await run_pipeline(pipe, fetches, chunk=6)
    assert reset == [1] and pipe.failed is None
    assert [(d.partition, d.offset) for d in sink_decisions(sink)] == [
        *((0, 0), (1, 1), (0, 2), (0, 4)),
        *((1, 1), (1, 3), (1, 5)),
    ]
    assert pipe.counters.superseded == 2
    assert pipe.tracker.committable((TOPIC, 1)) == 6 and pipe.tracker.pending((TOPIC, 1)) == 0
    assert pipe.tracker.committable((TOPIC, 0)) == 5


async def test_events_ingested_before_an_immediate_outcome_are_queued_before_it_goes_out(
    make_pipeline: Any,
) -> None:
    """Ingest hands the scheduler its events a run at a time: before a dead letter (or any
    other outcome decided at ingest) is published, the events before it are queued, and
    every event still gets one decision in key order."""
    queued_at_dead: list[int] = []

    def seen(msg: Any) -> None:
        if msg.topic == "weir.dlq":
            queued_at_dead.append(pipe.queued)

    pipe, sink, _ = make_pipeline(sink=MemorySink(on_message=seen))
    records = [_quote_record(i) for i in range(WINDOW + 2)]
    records.append(MemoryRecord(TOPIC, 0, WINDOW + 2, b"{not json"))
    records += [_quote_record(i) for i in range(WINDOW + 3, WINDOW + 5)]
    await pipe.ingest(records)  # one call, the dispatcher not started: nothing decided yet
    assert queued_at_dead == [3] and pipe.queued == 5
    pipe.start()
    assert await pipe.drain(5.0)
    await pipe.close()
    decided = sink_decisions(sink)
    assert [d.offset for d in decided if d.status == "ok"] == [3, 4, 5, 7, 8]
    assert sorted(d.offset for d in decided) == [0, 1, 2, 3, 4, 5, 7, 8]


async def test_events_are_counted_by_topic_and_kind_across_runs_and_calls(
    make_pipeline: Any,
) -> None:
    """``counters.kinds`` counts every decoded event by topic and kind, however kinds and
    topics alternate within and across ingest calls; undecodable records count as None."""
    pipe, _, _ = make_pipeline()
    enc = event_codec().encode
    trade = enc(Trade(symbol="K", trade_id=1, price=1.0, qty=1.0, buyer_is_maker=False))
    quote = enc(Quote(symbol="K", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0))
    values = [quote, quote, trade, quote, trade, trade, b"{not json", quote]
    topics = [TOPIC, TOPIC, TOPIC, "other", "other", TOPIC, TOPIC, TOPIC]
    records = [
        MemoryRecord(t, 0 if t == TOPIC else 1, i, v)
        for i, (t, v) in enumerate(zip(topics, values, strict=True))
    ]
    await pipe.ingest(records[:4])
    await pipe.ingest(records[4:])
    assert pipe.counters.kinds == {
        (TOPIC, Quote): 3,
        (TOPIC, Trade): 2,
        ("other", Quote): 1,
        ("other", Trade): 1,
        (TOPIC, None): 1,
    }


async def test_drain_waits_for_a_batch_whose_publishing_waits_for_room(
    make_pipeline: Any,
) -> None:
    """A batch whose decisions wait for room in a full sink keeps the pipeline busy: drain
    returns only once all of them are out and acknowledged."""
    kafka = MemoryKafka()
    kafka.create_topic("weir.decisions", 1)
    producer = MemoryProducer(kafka, None)
    producer.hold = True
    sink = KafkaSink(producer, max_inflight=WINDOW)
    pipe, _, _ = make_pipeline(sink=sink)
    pipe.start()
    await pipe.ingest([_quote_record(i) for i in range(WINDOW - 1)])  # warming, held
    await pipe.ingest([_quote_record(i) for i in range(WINDOW - 1, WINDOW + 2)])
    await kafka.wait_until(lambda: producer.unanswered == WINDOW)
    assert sink.full and pipe.scheduler.queued == 0 and not pipe.idle
    drained = asyncio.get_running_loop().create_task(pipe.drain(5.0))
    producer.release()
    assert await drained
    assert len(kafka.records("weir.decisions")) == WINDOW + 2
    await pipe.close()
    await sink.close()


async def test_avro_input_decides_and_dead_letters_with_reasons(make_pipeline: Any) -> None:
    """Framed Avro readings are decided per device; bad framing, an unknown schema id and a
    mismatched payload are dead-lettered with their reasons; the registry is asked once."""
    fastavro = pytest.importorskip("fastavro", reason="the registry extra is not installed")
    schema = json.dumps(
        {
            "type": "record",
            "name": "Reading",
            "fields": [
                {"name": "device", "type": "string"},
                {"name": "temp", "type": "double"},
                {"name": "at_ms", "type": "long"},
            ],
        }
    )
    parsed = fastavro.parse_schema(json.loads(schema))
    schemas = MemorySchemas()
    sid = schemas.register("AVRO", schema)
    field_map = FieldMap(
        kind="sensor", key_field="device", values={"value": "temp"}, source_ts_field="at_ms"
    )
    decoder = ConfluentDecoder(schemas, field_map, "AVRO")
    pipe, sink, _ = make_pipeline(task=Task.SENSOR, decoder=decoder)

    def reading(i: int) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, {"device": "m1", "temp": 1.0 + i % 2, "at_ms": i})
        return frame(sid, buf.getvalue())

    good = [MemoryRecord(TOPIC, 0, i, reading(i), timestamp=i) for i in range(8)]
    bad = [
        MemoryRecord(TOPIC, 0, 8, b"\x01" + reading(8)[1:]),
        MemoryRecord(TOPIC, 0, 9, frame(sid + 1, b"\x02")),
        MemoryRecord(TOPIC, 0, 10, reading(10)[:-4]),
    ]
    await run_pipeline(
        pipe, good + bad + [MemoryRecord(TOPIC, 0, 11, reading(11), timestamp=11)], chunk=7
    )
    got = sink_decisions(sink)
    assert [d.offset for d in got] == [*range(8), 11]
    assert {d.key for d in got} == {"m1"}
    assert [d.status for d in got].count(Status.OK) == 9 - (WINDOW - 1)
    assert got[-1].stamps.source_ts_ns == 11_000_000
    dead = [dead_letter_codec().decode(m.value) for m in sink.on("weir.dlq")]
    assert [(d.offset, d.reason) for d in dead] == [
        (8, "bad_framing"),
        (9, "unknown_schema"),
        (10, "schema_mismatch"),
    ]
    assert dead[0].detail == (
        "decode failed: magic byte is 0x01, expected 0x00 (Confluent wire format) "
        "- topic=weir.events partition=0 offset=8"
    )
    assert dead[1].detail == (
        "decode failed: schema id 2 is not in the registry - topic=weir.events partition=0 offset=9"
    )
    assert dead[2].value == reading(10)[:-4]
    assert schemas.lookups == 2


class _Reading(msgspec.Struct, frozen=True, kw_only=True):
    """A user's own event type, which weir's built-in features do not take."""

    device: str
    temp: float


@pytest.mark.parametrize("task", [Task.SENSOR, Task.TRADING])
async def test_user_struct_into_builtin_features_is_dead_lettered(
    make_pipeline: Any, task: Task
) -> None:
    """A user Struct reaching weir's own features is refused (``wrong_task``), never
    folded into a window as zeros."""
    decoder = StructDecoder(_Reading, key_field="device")
    pipe, sink, _ = make_pipeline(task=task, decoder=decoder)
    await run_pipeline(pipe, [MemoryRecord(TOPIC, 0, 0, b'{"device":"d","temp":1.5}')], chunk=7)
    dead = [dead_letter_codec().decode(m.value) for m in sink.on("weir.dlq")]
    assert [(d.reason, d.detail) for d in dead] == [
        ("wrong_task", f"{task} features got a _Reading, not one of weir's event types")
    ]
    assert sink_decisions(sink) == [] and len(pipe.state) == 0


async def test_unreachable_registry_stops_ingest_without_dead_letters(make_pipeline: Any) -> None:
    """A registry that does not answer raises RegistryError out of ingest: the record is not
    at fault, so it is neither dead-lettered nor committed past."""
    pytest.importorskip("fastavro", reason="the registry extra is not installed")

    def refuse(url: str, timeout_s: float) -> tuple[int, bytes]:
        raise ConnectionRefusedError(111, "Connection refused")

    field_map = FieldMap(kind="sensor", key_field="device", values={"value": "temp"})
    client = RegistryClient("http://registry:8081", fetch=refuse)
    pipe, sink, _ = make_pipeline(
        task=Task.SENSOR, decoder=ConfluentDecoder(client, field_map, "AVRO")
    )
    with pytest.raises(RegistryError) as info:
        await pipe.ingest([MemoryRecord(TOPIC, 0, 0, frame(1, b"\x02d"))])
    assert str(info.value) == (
        "schema registry http://registry:8081/schemas/ids/1 unreachable: "
        "[Errno 111] Connection refused"
    )
    assert sink.on("weir.dlq") == [] and pipe.tracker.to_commit() == {}
    await pipe.close()


async def test_probes_run_while_every_event_expires_at_submit(make_engine: Any) -> None:
    """When the smallest bucket's p99 misses the budget, every event expires on arrival; a
    probe run (at most one per probe interval, on that bucket) still times the engine, and
    after ``PROBE_REFRESH`` of them the finished spike is dropped and events queue again."""
    now = [0]
    engine = make_engine(latency_ns=1_000_000)
    pipe = Pipeline(
        settings=_settings(scheduler={"budget_ms": 40.0}),
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=FeatureSpec(task=Task.TRADING, window=WINDOW),
        sink=MemorySink(),
        model_version="t",
        clock=lambda: now[0],
    )
    profile = pipe.scheduler.profile
    for _ in range(profile.refresh_every):
        profile.observe(1, 60_000_000)  # a spike that has ended
    assert profile.p99_ns(1) == 60_000_000
    await pipe.ingest([_quote_record(i) for i in range(WINDOW - 1)])  # warming
    for i in range(PROBE_REFRESH):
        now[0] += PROBE_INTERVAL_NS
        await pipe.ingest([_quote_record(WINDOW - 1 + i)])
        assert pipe.counters.decisions[Status.EXPIRED] == i + 1
    assert pipe.counters.probes == PROBE_REFRESH
    assert profile.p99_ns(1) < 40_000_000
    now[0] += PROBE_INTERVAL_NS
    await pipe.ingest([_quote_record(WINDOW - 1 + PROBE_REFRESH)])
    assert pipe.counters.decisions[Status.EXPIRED] == PROBE_REFRESH
    assert pipe.scheduler.queued == 1
    await pipe.close()


async def test_a_run_expiring_at_submit_frees_its_slots_before_a_record_is_shed(
    make_engine: Any,
) -> None:
    """With no slot free, ingest first hands its run to the scheduler: the run's events that
    expire at submit free their slots, so the records after them are decided on their own
    merits (expired here too), not shed for want of a slot."""
    engine = make_engine(max_batch=2)
    pipe = Pipeline(
        settings=_settings(scheduler={"budget_ms": 40.0, "max_queue": 2}),
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=FeatureSpec(task=Task.TRADING, window=WINDOW),
        sink=MemorySink(),
        model_version="t",
        clock=lambda: 0,
    )
    assert pipe.slots.capacity == 4
    profile = pipe.scheduler.profile
    for _ in range(profile.refresh_every):
        profile.observe(1, 60_000_000)  # every event now expires on arrival
    await pipe.ingest([_quote_record(i) for i in range(WINDOW - 1 + 10)])
    assert pipe.counters.decisions[Status.EXPIRED] == 10
    assert pipe.counters.decisions[Status.SHED] == 0
    assert len(pipe.slots.free) == 4
    await pipe.close()


class _FailingDecoder:
    """weir's JSON decoding, except that one offset's record raises an error that is not the
    record's fault (as an unreachable registry's does)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.inner = event_codec()

    def decode(self, value: bytes, headers: Any, **where: Any) -> Any:
        if where.get("offset") == self.at:
            raise RuntimeError("the decoder's backend is down")
        event = self.inner.decode(value)
        return event, event.key, event.source_ts_ns


async def test_an_error_mid_ingest_still_queues_the_events_before_it(make_pipeline: Any) -> None:
    """An error out of ingest (here the decoder's) leaves none of the events before it
    unqueued: they are decided (by the drain at a stop, say) and committed past; the
    failing record and those after it are neither decided nor committed."""
    pipe, sink, _ = make_pipeline(decoder=_FailingDecoder(at=WINDOW + 3))
    pipe.start()
    with pytest.raises(RuntimeError, match="the decoder's backend is down"):
        await pipe.ingest([_quote_record(i) for i in range(WINDOW + 6)])
    assert await pipe.drain(5.0)
    await pipe.close()
    assert [d.offset for d in sink_decisions(sink)] == list(range(WINDOW + 3))
    assert pipe.tracker.committable((TOPIC, 0)) == WINDOW + 3
    assert len(pipe.slots.free) == pipe.slots.capacity
