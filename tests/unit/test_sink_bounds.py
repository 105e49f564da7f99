"""KafkaSink over the in-memory producer: in-flight bounds by count and bytes, the
too-large message naming its limit, and a dying submitter answering every message."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import MessageBatch
from aiokafka.structs import TopicPartition

from service.kafka import KafkaSink
from service.memory_kafka import MemoryKafka, MemoryProducer
from service.tasks import TaskDied, TaskSupervisor

TOPIC = "out"


def _producer(partitions: int = 1) -> tuple[MemoryKafka, MemoryProducer]:
    kafka = MemoryKafka()
    kafka.create_topic(TOPIC, partitions)
    return kafka, MemoryProducer(kafka, None)


class _Answers:
    def __init__(self) -> None:
        self.got: dict[Any, BaseException | None] = {}

    def __call__(self, token: Any, error: BaseException | None) -> None:
        self.got[token] = error


async def test_count_bound_makes_send_wait_until_answers_come() -> None:
    """With every answer held, the sink is full at ``max_inflight`` messages and the next
    send waits; answers free room and it goes through."""
    kafka, producer = _producer()
    producer.hold = True
    sink = KafkaSink(producer, max_inflight=3)
    answers = _Answers()
    for i in range(3):
        await sink.send(TOPIC, b"k", b"v", [], i, answers)
    assert sink.full and sink.inflight == 3
    late = asyncio.create_task(sink.send(TOPIC, b"k", b"v", [], 3, answers))
    await kafka.wait_until(lambda: producer.unanswered == 3)
    await asyncio.sleep(0)  # one loop turn: the fourth send runs up to its wait
    assert not late.done() and sink.waits == 1
    producer.release()
    await late
    await sink.flush()
    assert answers.got == dict.fromkeys(range(4))
    assert producer.max_unanswered == 3 and not sink.full and sink.inflight == 0
    await sink.close()


async def test_byte_bound_counts_key_value_and_headers() -> None:
    """The byte bound counts each message's key, value and header bytes (2 + 40 + 8 here):
    two such messages reach 100 bytes, and the answers bring the count back to zero."""
    _, producer = _producer()
    producer.hold = True
    sink = KafkaSink(producer, max_inflight=100, max_inflight_bytes=100)
    answers = _Answers()
    await sink.send(TOPIC, b"kk", b"v" * 40, [("hd", b"123456")], 0, answers)
    assert sink.inflight_bytes == 50 and not sink.full
    await sink.send(TOPIC, b"kk", b"v" * 40, [("hd", b"123456")], 1, answers)
    assert sink.inflight_bytes == 100 and sink.full
    producer.release()
    await sink.flush()
    assert sink.inflight_bytes == 0 and not sink.full
    await sink.close()


async def test_too_large_message_fails_naming_its_size_and_the_limit() -> None:
    """A message over ``max_message_bytes`` is answered at once with an error that names
    its size, its topic and the limit; nothing is sent."""
    _, producer = _producer()
    sink = KafkaSink(producer, max_message_bytes=64)
    answers = _Answers()
    await sink.send(TOPIC, b"key", b"x" * 62, [], "t", answers)
    error = answers.got["t"]
    assert isinstance(error, MessageSizeTooLargeError)
    assert str(error).endswith(
        "decision of 65 bytes for topic 'out' exceeds the producer's max_request_size=64"
    )
    assert sink.inflight == 0 and producer.max_unanswered == 0
    await sink.close()


class _BadFuture:
    def add_done_callback(self, fn: Any) -> None:
        raise RuntimeError("callback refused")


class _BrokenProducer(MemoryProducer):
    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        return _BadFuture()


async def test_dying_submitter_answers_every_message_and_stops_the_service() -> None:
    """When the submitter task dies, the supervisor has the death, every message it held
    and every later one is answered with it, and flush returns."""
    kafka = MemoryKafka()
    kafka.create_topic(TOPIC, 2)
    heard: list[TaskDied] = []
    sink = KafkaSink(_BrokenProducer(kafka, None), tasks=TaskSupervisor(on_death=heard.append))
    answers = _Answers()
    for i in range(4):
        await sink.send(TOPIC, b"k%d" % i, b"v", [], i, answers)
    await sink.flush()
    assert len(heard) == 1
    assert str(heard[0]) == (
        "background task 'weir-sink-submitter' died: RuntimeError: callback refused"
    )
    await sink.send(TOPIC, b"k", b"v", [], 9, answers)
    assert sink.send_now(TOPIC, b"k", b"v", [], 10, answers)
    assert sorted(answers.got) == [0, 1, 2, 3, 9, 10]
    assert all(isinstance(e, TaskDied) for e in answers.got.values())
    assert sink.inflight == 0
    await sink.close()


async def test_a_send_that_fits_does_not_overtake_a_waiting_one() -> None:
    """A small message sent after a large one that waits for room queues behind it: the
    partition's log keeps the send order (each key's decisions stay in event order)."""
    kafka, producer = _producer()
    producer.hold = True
    sink = KafkaSink(producer, max_inflight=100, max_inflight_bytes=100)
    answers = _Answers()
    await sink.send(TOPIC, b"k", b"a" * 59, [], "first", answers)
    large = asyncio.create_task(sink.send(TOPIC, b"k", b"b" * 49, [], "large", answers))
    small = asyncio.create_task(sink.send(TOPIC, b"k", b"c" * 9, [], "small", answers))
    await asyncio.sleep(0)  # one loop turn: both sends run up to their waits
    assert not large.done() and not small.done() and sink.full and sink.waits == 2
    producer.release()
    await asyncio.gather(large, small)
    await sink.flush()
    assert [r.value[:1] for r in kafka.records(TOPIC)] == [b"a", b"b", b"c"]
    assert list(answers.got) == ["first", "large", "small"]
    await sink.close()


async def test_each_key_goes_to_the_producers_partition_when_routes_start_over(
    monkeypatch: Any,
) -> None:
    """Keys are routed by murmur2 as ``producer.send`` would, remembered per key; with the
    memory of routes smaller than the keys (it empties and fills again) every message still
    lands on its key's partition, in send order; a keyless message goes somewhere valid."""
    import service.kafka

    monkeypatch.setattr(service.kafka, "MAX_ROUTES", 4)
    kafka = MemoryKafka()
    kafka.create_topic(TOPIC, 3)
    sink = KafkaSink(MemoryProducer(kafka, None))
    answers = _Answers()
    keys = [f"key-{i}".encode() for i in range(10)]
    for n in range(3):
        for key in keys:
            await sink.send(TOPIC, key, b"%d" % n, [], (key, n), answers)
    await sink.send(TOPIC, None, b"none", [], "keyless", answers)
    await sink.flush()
    assert all(err is None for err in answers.got.values()) and len(answers.got) == 31
    murmur = DefaultPartitioner()
    seen: dict[bytes, list[bytes]] = {}
    for rec in kafka.records(TOPIC):
        if rec.key is None:
            assert rec.partition in (0, 1, 2)
            continue
        assert rec.partition == murmur(rec.key, [0, 1, 2], [0, 1, 2]), rec.key
        seen.setdefault(rec.key, []).append(rec.value)
    assert seen == {key: [b"0", b"1", b"2"] for key in keys}
    assert len({murmur(k, [0, 1, 2], [0, 1, 2]) for k in keys}) > 1  # the test spreads keys
    await sink.close()


class _Accumulating(MemoryProducer):
    """A memory producer with aiokafka's accumulator rules: a handed-over batch waits in
    ``_batches`` (aiokafka's own ``MessageBatch``) until the sender takes it (``take``), and
    a partition takes a new batch only once the one before has been taken (``send_batch``
    waits for that)."""

    def __init__(self, kafka: MemoryKafka) -> None:
        super().__init__(kafka, None)
        self._message_accumulator = SimpleNamespace(_batches={})
        self.handed = 0
        self.taken: list[int] = []
        """Messages in each batch the sender took, in order."""

    def queue(self, topic: str, partition: int) -> deque[MessageBatch]:
        queued: deque[MessageBatch] = self._message_accumulator._batches.setdefault(
            TopicPartition(topic, partition), deque()
        )
        return queued

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        queued = self.queue(topic, partition)
        while queued:
            await queued[-1].wait_drain()
        held = MessageBatch(TopicPartition(topic, partition), batch, 30.0, 0.0)
        queued.append(held)
        self.handed += 1
        return asyncio.shield(held.future)

    async def take(self, topic: str, partition: int) -> None:
        """The sender's drain: pop the partition's oldest batch and deliver it."""
        held = self.queue(topic, partition).popleft()
        held.drain_ready()
        self.taken.append(len(held._builder.messages))
        fut = await super().send_batch(held._builder, topic, partition=partition)
        fut.add_done_callback(lambda _: held.future.set_result(None))


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)  # the submitter has every chance to hand a batch over


async def test_decisions_made_while_the_partition_is_busy_go_in_one_batch() -> None:
    """While the partition's batch before has not been taken by the sender, each new
    decision joins the one open batch; it goes as one (three sends in three loop turns:
    one batch of 3, not a batch of 1 and then one of 2), answered in order."""
    kafka = MemoryKafka()
    kafka.create_topic(TOPIC, 1)
    producer = _Accumulating(kafka)
    producer.queue(TOPIC, 0).append(MessageBatch(TopicPartition(TOPIC, 0), None, 30.0, 0.0))
    sink = KafkaSink(producer)
    answers = _Answers()
    for i in range(3):
        await sink.send(TOPIC, b"k", b"%d" % i, [], i, answers)
        await _turns()
    assert producer.handed == 0
    producer.queue(TOPIC, 0)[0].drain_ready()
    producer.queue(TOPIC, 0).popleft()
    await _turns()
    await producer.take(TOPIC, 0)
    await sink.flush()
    assert producer.taken == [3]
    assert [r.value for r in kafka.records(TOPIC)] == [b"0", b"1", b"2"]
    assert answers.got == dict.fromkeys(range(3))
    await sink.close()


async def test_decisions_join_a_handed_over_batch_until_the_sender_takes_it() -> None:
    """A batch handed to the producer stays open, as ``producer.send``'s does: decisions
    made before the sender takes it go with it (2 handed over after the first, 3 in one
    request); the first one after goes in the next batch; order and answers are kept."""
    kafka = MemoryKafka()
    kafka.create_topic(TOPIC, 1)
    producer = _Accumulating(kafka)
    sink = KafkaSink(producer)
    answers = _Answers()
    for i in range(3):
        await sink.send(TOPIC, b"k", b"%d" % i, [], i, answers)
        await _turns()
        assert producer.handed == 1  # handed over after the first send, and still open
    await producer.take(TOPIC, 0)
    await sink.send(TOPIC, b"k", b"3", [], 3, answers)
    await _turns()
    await producer.take(TOPIC, 0)
    await sink.flush()
    assert producer.taken == [3, 1] and producer.handed == 2
    assert [r.value for r in kafka.records(TOPIC)] == [b"0", b"1", b"2", b"3"]
    assert answers.got == dict.fromkeys(range(4))
    assert sink.inflight == 0
    await sink.close()


async def test_send_now_queues_only_what_needs_no_wait() -> None:
    """``send_now`` refuses (doing nothing) a topic whose partitions are not known yet, a
    message over the bounds and one behind a waiting send; what fits it queues like
    ``send``, in order; a message too large or a dead sink it answers with the error."""
    kafka, producer = _producer()
    producer.hold = True
    sink = KafkaSink(producer, max_inflight=3, max_message_bytes=64)
    answers = _Answers()
    assert not sink.send_now(TOPIC, b"k", b"v", [], 0, answers)  # partitions unknown
    assert sink.inflight == 0 and not answers.got
    await sink.send(TOPIC, b"k", b"v", [], 0, answers)
    assert sink.send_now(TOPIC, b"k", b"w", [], 1, answers)
    assert sink.send_now(TOPIC, b"k", b"x" * 70, [], "big", answers)
    assert isinstance(answers.got.pop("big"), MessageSizeTooLargeError)
    assert sink.send_now(TOPIC, b"k", b"y", [], 2, answers)
    assert sink.inflight == 3 and sink.full
    assert not sink.send_now(TOPIC, b"k", b"z", [], 3, answers)  # over the count bound
    late = asyncio.create_task(sink.send(TOPIC, b"k", b"z", [], 3, answers))
    await asyncio.sleep(0)
    producer.release()
    assert not sink.send_now(TOPIC, b"k", b"!", [], 4, answers)  # behind the waiting one
    await late
    assert sink.send_now(TOPIC, b"k", b"!", [], 4, answers)
    await sink.flush()
    assert [r.value for r in kafka.records(TOPIC)] == [b"v", b"w", b"y", b"z", b"!"]
    assert answers.got == dict.fromkeys(range(5))
    await sink.close()
