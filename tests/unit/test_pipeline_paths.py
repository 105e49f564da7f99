"""The pipeline's per-chunk and per-batch paths: deadlines shared per topic within a chunk,
decisions published a batch at a time; one outcome per input, each key's in order, and
commits only below what the sink acknowledged."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import msgspec

from schemas.codec import decision_codec, event_codec
from schemas.decision import Decision, Status
from schemas.events import Quote
from service.base import AckCallback
from service.memory import MemoryRecord, MemorySink, SentMessage
from service.pipeline import Pipeline
from service.publisher import MODEL_HEADER, STATUS_HEADER
from service.settings import Settings, load_settings

WINDOW = 4  # the window of the conftest fixtures
MS = 1_000_000


def _settings(**scheduler: object) -> Settings:
    env = {
        f"WEIR_SCHEDULER__{k.upper()}": v if isinstance(v, str) else msgspec.json.encode(v).decode()
        for k, v in scheduler.items()
    }
    return load_settings(env=env)


def _record(topic: str, partition: int, offset: int, key: str, ts_ms: int) -> MemoryRecord:
    q = Quote(symbol=key, bid_px=100.0 + offset % 7, bid_qty=1.0, ask_px=100.5, ask_qty=2.0)
    return MemoryRecord(topic, partition, offset, event_codec().encode(q), timestamp=ts_ms)


def _decisions(messages: list[SentMessage]) -> list[Decision]:
    codec = decision_codec()
    return [codec.decode(m.value) for m in messages if m.topic == "weir.decisions"]


async def _run(pipe: Pipeline, records: list[MemoryRecord], chunk: int) -> None:
    pipe.start()
    for i in range(0, len(records), chunk):
        await pipe.ingest(records[i : i + chunk])
        await asyncio.sleep(0)
    assert await pipe.drain(5.0)
    await pipe.close()


async def test_each_topic_keeps_its_budget_within_one_chunk(make_pipeline: Any) -> None:
    """Records of two topics with their own budgets, interleaved in one ingest call, each
    get ingest time plus their own topic's budget as deadline."""
    settings = _settings(budget_ms=5_000, topic_budget_ms__t_a=4_000, topic_budget_ms__t_b=9_000)
    assert settings.scheduler.topic_budget_ms == {"t_a": 4_000, "t_b": 9_000}
    pipe, sink, _ = make_pipeline(settings=settings)
    topics = ["t_a", "t_b", "t_c"]
    records = [_record(topics[i % 3], 0, i // 3, f"K{i % 2}", 1) for i in range(60)]
    await _run(pipe, records, chunk=60)
    got = _decisions(sink.messages)
    assert len(got) == 60
    budgets = {"t_a": 4_000 * MS, "t_b": 9_000 * MS, "t_c": 5_000 * MS}
    queued = [d for d in got if d.status is not Status.WARMING]
    assert len(queued) == 60 - 2 * (WINDOW - 1)  # two keys warm up
    for d in queued:
        s = d.stamps
        assert s.deadline_wall_ns is not None and s.ingest_wall_ns is not None
        assert s.deadline_wall_ns - s.ingest_wall_ns == budgets[d.topic]


async def test_a_kafka_anchor_gives_each_record_its_own_deadline(make_pipeline: Any) -> None:
    """With the Kafka timestamp as anchor, records of one topic and chunk keep deadlines of
    their own: record time plus the budget."""
    pipe, sink, _ = make_pipeline(settings=_settings(budget_ms=60_000, anchor="kafka"))
    now_ms = time.time_ns() // MS
    records = [_record("t", 0, i, "K", now_ms - 100 + i) for i in range(20)]
    await _run(pipe, records, chunk=20)
    queued = [d for d in _decisions(sink.messages) if d.status is not Status.WARMING]
    assert len(queued) == 20 - (WINDOW - 1)
    assert len({d.stamps.deadline_wall_ns for d in queued}) == len(queued)
    for d in queued:
        assert d.stamps.kafka_ts_ns is not None
        assert d.stamps.deadline_wall_ns == d.stamps.kafka_ts_ns + 60_000 * MS


class _HoldingSink:
    """Keeps every message and its acknowledgement until the test releases it."""

    def __init__(self) -> None:
        self.messages: list[SentMessage] = []
        self.held: list[tuple[Any, AckCallback]] = []
        self.acked: set[tuple[str, int, int]] = set()

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> None:
        self.messages.append(SentMessage(topic, key, value, list(headers)))
        self.held.append((token, on_ack))

    def release(self, rng: random.Random, share: float) -> None:
        """Acknowledge a random ``share`` of the held messages, in random order."""
        rng.shuffle(self.held)
        n = int(len(self.held) * share)
        now, self.held = self.held[:n], self.held[n:]
        for token, on_ack in now:
            tracked, offset = token  # the publisher's: the partition's offsets and the offset
            self.acked.add((*tracked.tp, offset))
            on_ack(token, None)

    async def flush(self) -> None:
        self.release(random.Random(0), 1.0)


def _commits_only_acked(pipe: Pipeline, sink: _HoldingSink, tracked: list[MemoryRecord]) -> None:
    """Every offset below each partition's commit point has an acknowledged outcome."""
    for tp, point in pipe.tracker.to_commit().items():
        below = [r for r in tracked if (r.topic, r.partition) == tp and r.offset < point]
        assert all((r.topic, r.partition, r.offset) in sink.acked for r in below), tp


async def test_batches_published_in_key_order_commit_only_below_acks(
    make_pipeline: Any,
) -> None:
    """Acknowledged in random order and bits, batch-published decisions never let the
    commit point pass an unacknowledged outcome; in the end each input has exactly one
    decision, each key's in offset order, with the model and status headers."""
    sink = _HoldingSink()
    pipe, _, _ = make_pipeline(sink=sink)  # type: ignore[arg-type]
    rng = random.Random(7)
    records = [_record("weir.events", i % 3, i, f"K{rng.randrange(5)}", 1) for i in range(300)]
    bad = MemoryRecord("weir.events", 0, 300, b"{not json", timestamp=1)
    records.append(bad)
    pipe.start()
    for i in range(0, len(records), 23):
        await pipe.ingest(records[i : i + 23])
        await asyncio.sleep(0)
        _commits_only_acked(pipe, sink, records)
        sink.release(rng, 0.5)
        _commits_only_acked(pipe, sink, records)
    assert await pipe.drain(5.0)
    await pipe.close()
    got = _decisions(sink.messages)
    assert sorted((d.partition, d.offset) for d in got) == sorted((i % 3, i) for i in range(300))
    for k in {d.key for d in got}:
        offs = [d.offset for d in got if d.key == k]
        assert offs == sorted(offs), k
    assert [m.topic for m in sink.messages].count("weir.dlq") == 1
    for m in sink.messages:
        if m.topic == "weir.decisions":
            d = decision_codec().decode(m.value)
            assert m.header(MODEL_HEADER) == b"test-1"
            assert m.header(STATUS_HEADER) == d.status.value.encode()
    assert pipe.tracker.to_commit() == {
        ("weir.events", 0): 301,
        ("weir.events", 1): 299,
        ("weir.events", 2): 300,
    }


async def test_decisions_published_after_their_deadline_are_late(make_pipeline: Any) -> None:
    """Each decision of a batch reads the clock as it goes out: once the clock passes the
    deadlines mid-batch, the rest of the batch is marked late and counted."""
    shift = [0]

    def jump(msg: SentMessage) -> None:
        if msg.header(STATUS_HEADER) == b"ok":
            shift[0] = 10**12  # every deadline passes after the first ok decision

    sink = MemorySink(on_message=jump)
    base, _, engine = make_pipeline()
    pipe = Pipeline(
        settings=_settings(budget_ms=5_000),
        engine=engine,
        head=base.head,
        spec=base.spec,
        sink=sink,
        model_version="test-1",
        clock=lambda: time.monotonic_ns() + shift[0],
    )
    records = [_record("t", 0, i, "K", 1) for i in range(WINDOW - 1 + 5)]
    await _run(pipe, records, chunk=len(records))
    ok = [d for d in _decisions(sink.messages) if d.status is Status.OK]
    assert [d.late for d in ok] == [False, True, True, True, True]
    assert [d.batch_size for d in ok] == [5] * 5
    assert pipe.counters.late == 4


async def test_decisions_go_out_in_the_output_encoding(make_pipeline: Any) -> None:
    """With MessagePack output, every decision decodes with the MessagePack codec."""
    # A budget no host stall reaches: the test is about the encoding, and at the default
    # 5 ms a busy CI host once expired an event here.
    settings = load_settings(
        env={"WEIR_KAFKA__OUTPUT_ENCODING": "msgpack", "WEIR_SCHEDULER__BUDGET_MS": "60000"}
    )
    pipe, sink, _ = make_pipeline(settings=settings)
    await _run(pipe, [_record("t", 0, i, "K", 1) for i in range(10)], chunk=10)
    codec = decision_codec("msgpack")
    got = [codec.decode(m.value) for m in sink.on("weir.decisions")]
    assert [d.offset for d in got] == list(range(10))
    assert [d.status for d in got] == [Status.WARMING] * (WINDOW - 1) + [Status.OK] * 7


async def test_a_topic_with_its_own_budget_is_ordered_apart_from_the_others(
    make_pipeline: Any,
) -> None:
    """A topic with a budget of its own is a class of its own: its events keep each key's
    order among themselves, but need not wait behind the same key's events of another
    topic. A tight event ingested after six loose events of its key, in one chunk, is
    published first; the loose ones keep their order."""
    settings = _settings(budget_ms=60_000, topic_budget_ms__tight=30_000)
    pipe, sink, _ = make_pipeline(settings=settings)
    records = [_record("loose", 0, i, "K", 1) for i in range(WINDOW - 1 + 6)]
    records.append(_record("tight", 0, 0, "K", 1))
    await _run(pipe, records, chunk=len(records))
    queued = [d for d in _decisions(sink.messages) if d.status is not Status.WARMING]
    assert [(d.topic, d.offset) for d in queued] == [("tight", 0)] + [
        ("loose", WINDOW - 1 + i) for i in range(6)
    ]
