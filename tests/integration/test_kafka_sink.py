"""KafkaSink on a real broker: batches per partition and burst, every message answered,
the producer's own partitioning, per-key order, full batches and a dead producer."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaProducer

from service.kafka import KafkaSink
from tests.kafka_io import read_records

KEYS = [f"K{i}".encode() for i in range(8)]


async def _send_all(
    sink: KafkaSink, topic: str, n: int, answers: dict[int, Any], burst: int, size: int = 64
) -> None:
    def on_ack(token: Any, error: BaseException | None) -> None:
        assert token not in answers, f"message {token} answered twice"
        answers[token] = error

    for i in range(n):
        key = KEYS[i % len(KEYS)]
        await sink.send(topic, key, b"%d:" % i + b"x" * size, [("h", b"v")], i, on_ack)
        if i % burst == burst - 1:
            await asyncio.sleep(0)


async def test_every_message_answered_in_key_order_on_the_producers_partition(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    """5,000 messages in bursts of 64 to 3 partitions: each acknowledged once without error,
    each key on the partition ``producer.send`` picks for it, in send order per key."""
    topic = await topic_factory(3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=1)
    await producer.start()
    sink = KafkaSink(producer)
    answers: dict[int, Any] = {}
    try:
        await _send_all(sink, topic, 5000, answers, burst=64)
        await sink.flush()
        assert sink.inflight == 0
        expected = {}
        for key in KEYS:
            meta = await (await producer.send(topic, b"probe", key=key))
            expected[key] = meta.partition
    finally:
        await sink.close()
        await producer.stop()
    assert len(answers) == 5000 and all(e is None for e in answers.values())
    records = [
        r
        for r in await read_records(kafka_bootstrap, topic, 5000 + len(KEYS), timeout_s=30)
        if r.value != b"probe"
    ]
    assert len(records) == 5000
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for r in records:
        assert r.partition == expected[r.key]
        assert r.headers == (("h", b"v"),)
        per_key[r.key].append(int(r.value.split(b":")[0]))
    for seq in per_key.values():
        assert seq == sorted(seq)


async def test_a_burst_larger_than_a_batch_goes_as_several_in_order(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    """With 2 KB record batches, 300 messages of 300 bytes in one burst fill many batches;
    all arrive, acknowledged, in order."""
    topic = await topic_factory(1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=2048)
    await producer.start()
    sink = KafkaSink(producer)
    answers: dict[int, Any] = {}
    try:
        await _send_all(sink, topic, 300, answers, burst=10_000, size=300)
        await sink.flush()
    finally:
        await sink.close()
        await producer.stop()
    assert len(answers) == 300 and all(e is None for e in answers.values())
    records = await read_records(kafka_bootstrap, topic, 300, timeout_s=30)
    assert [int(r.value.split(b":")[0]) for r in records] == list(range(300))


async def test_an_idempotent_producer_takes_decisions_joining_a_handed_over_batch(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    """With the loop held 2 ms after each burst (an inline engine call), decisions join
    batches already handed to aiokafka until its sender takes them; with an idempotent
    producer (the broker checks each batch's sequence numbers) 3,000 messages are all
    acknowledged without error, once each, in send order per partition, and some batch
    did grow after its hand-over (the path is exercised)."""
    topic = await topic_factory(2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    handed: list[tuple[Any, int]] = []
    send_batch = producer.send_batch

    async def spy(batch: Any, topic: str, *, partition: int) -> Any:
        handed.append((batch, batch.record_count()))
        return await send_batch(batch, topic, partition=partition)

    producer.send_batch = spy  # type: ignore[method-assign]
    sink = KafkaSink(producer)
    answers: dict[int, Any] = {}

    def on_ack(token: Any, error: BaseException | None) -> None:
        assert token not in answers, f"message {token} answered twice"
        answers[token] = error

    try:
        for i in range(3000):
            key = KEYS[i % len(KEYS)]
            await sink.send(topic, key, b"%d:" % i + b"x" * 200, [], i, on_ack)
            if i % 40 == 39:
                await asyncio.sleep(0)
                time.sleep(0.002)  # noqa: ASYNC251 - the loop held, as an inline engine holds it
        await sink.flush()
    finally:
        await sink.close()
        await producer.stop()
    assert len(answers) == 3000 and all(e is None for e in answers.values())
    assert any(batch.record_count() > at for batch, at in handed)
    records = await read_records(kafka_bootstrap, topic, 3000, timeout_s=30)
    per_partition: dict[int, list[int]] = defaultdict(list)
    for r in records:
        per_partition[r.partition].append(int(r.value.split(b":")[0]))
    assert sorted(i for seq in per_partition.values() for i in seq) == list(range(3000))
    for seq in per_partition.values():
        assert seq == sorted(seq)


async def test_a_stopped_producer_fails_every_message_and_nothing_hangs(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    """Messages appended after the producer stopped are each answered with an error, and
    flush returns (the commit point cannot move past them)."""
    topic = await topic_factory(1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    sink = KafkaSink(producer)
    answers: dict[int, Any] = {}
    await _send_all(sink, topic, 1, answers, burst=1)
    await sink.flush()
    assert answers == {0: None}
    await producer.stop()
    failed: dict[int, Any] = {}

    def on_ack(token: Any, error: BaseException | None) -> None:
        failed[token] = error

    for i in range(20):
        await sink.send(topic, KEYS[0], b"late", [], i, on_ack)
    async with asyncio.timeout(10):
        await sink.flush()
    await sink.close()
    assert len(failed) == 20 and all(e is not None for e in failed.values())
    assert sink.inflight == 0


async def test_the_sink_benchmark_times_both_paths_with_the_loop_held(
    kafka_bootstrap: str, capsys: Any
) -> None:
    """``python -m bench.sink --turns 2 --hold-ms 1`` sends through ``producer.send`` and
    ``KafkaSink`` alike, holding the loop after each burst, and prints each path's cost and
    its send-to-ack p50/p99 (it asserts nothing itself: this checks it runs and reports)."""
    from bench import sink as bench_sink

    argv = ["--messages", "300", "--burst", "20", "--rounds", "1", "--turns", "2", "--hold-ms", "1"]
    args = bench_sink.build_parser().parse_args(["--bootstrap", kafka_bootstrap, *argv])
    await bench_sink._run(args)
    out = capsys.readouterr().out
    assert "2 loop turn(s) then the loop held 1 ms after each burst" in out
    rows = {
        line.split()[0]: [float(x) for x in line.split()[1:]]
        for line in out.splitlines()
        if line.startswith(("producer.send ", "KafkaSink "))
    }
    assert set(rows) == {"producer.send", "KafkaSink"}
    assert all(len(v) == 4 and all(x > 0 for x in v) for v in rows.values())
