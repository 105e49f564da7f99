"""Replay through Apache Kafka: topic set-up, the settings a replay talks to, the transport.

:class:`KafkaTransport`: an aiokafka producer keyed by the event key (the default murmur2
partitioner, as Java clients do) sends to the input topic; the producer's delivery future
gives each event's partition and offset. A group-less consumer, assigned every partition
of the decision and dead-letter topics and positioned at their ends *before* the first
send, reads the outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from replay.base import Clock
from replay.errors import ReplayError
from replay.measure import Recorder
from schemas.codec import dead_letter_codec, decision_codec
from schemas.errors import DecodeError
from service.kafka import make_consumer, make_producer
from service.settings import KafkaSettings, Settings, load_settings


def settings_for(
    config: Path | None,
    *,
    bootstrap: str | None = None,
    topic: str | None = None,
    decision_topic: str | None = None,
    dlq_topic: str | None = None,
    encoding: str | None = None,
) -> Settings:
    """Service settings (file + ``WEIR_*`` environment) with the command line's overrides."""
    settings = load_settings(config)
    changes: dict[str, Any] = {}
    if bootstrap:
        changes["bootstrap_servers"] = bootstrap
    if topic:
        changes["input_topics"] = [topic]
    if decision_topic:
        changes["decision_topic"] = decision_topic
    if dlq_topic:
        changes["dlq_topic"] = dlq_topic
    if encoding:
        changes["input_encoding"] = encoding
    kafka = msgspec.structs.replace(settings.kafka, **changes)
    return msgspec.structs.replace(settings, kafka=kafka)


async def ensure_topics(
    kafka: KafkaSettings,
    topics: dict[str, int],
    *,
    create: bool = True,
    timeout_s: float = 15.0,
) -> dict[str, int]:
    """Partition count of each topic, once every partition has a leader; the missing ones
    are created (name -> partitions) or, with ``create=False``, an error naming them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id="weir-replay")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing and not create:
            raise ReplayError(
                f"no topic {', '.join(repr(t) for t in missing)} at {kafka.bootstrap_servers}"
            )
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(t, topics[t], 1) for t in missing])
        counts: dict[str, int] = {}
        async with asyncio.timeout(timeout_s):
            for topic in topics:
                while True:
                    (described,) = await admin.describe_topics([topic])
                    parts = described.get("partitions") or []
                    if (
                        described.get("error_code") == 0
                        and parts
                        and all(p["leader"] >= 0 for p in parts)
                    ):
                        counts[topic] = len(parts)
                        break
                    await asyncio.sleep(0.05)
        return counts
    except (KafkaError, OSError) as exc:
        raise ReplayError(
            f"cannot set up topics {', '.join(topics)} at {kafka.bootstrap_servers}: {exc}"
        ) from exc
    except TimeoutError as exc:
        raise ReplayError(
            f"topics {', '.join(topics)} at {kafka.bootstrap_servers} had no leaders "
            f"within {timeout_s:g} s"
        ) from exc
    finally:
        with contextlib.suppress(KafkaError):
            await admin.close()


class KafkaTransport:
    """Produce to the input topic, read decisions and dead letters back (module docstring)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        topic: str | None = None,
        partitions: int = 1,
        fetch_max_wait_ms: int | None = None,
        isolation_level: str = "read_uncommitted",
        clock: Clock = time.time_ns,
    ) -> None:
        self.kafka = kafka
        self.isolation_level = isolation_level
        self.topic = topic or kafka.input_topics[0]
        self.decision_topic = kafka.decision_topic
        self.dlq_topic = kafka.dlq_topic
        self.partitions = partitions
        self.fetch_max_wait_ms = (
            kafka.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
        )
        self.description = f"kafka {kafka.bootstrap_servers}"
        self._clock = clock
        self._decision = decision_codec(kafka.output_encoding)
        self._dead = dead_letter_codec(kafka.output_encoding)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._rec: Recorder | None = None

    async def open(self, recorder: Recorder) -> None:
        """Create missing topics, start the clients, seek the outcome topics to their ends."""
        self._rec = recorder
        counts = await ensure_topics(
            self.kafka,
            {self.topic: self.partitions, self.decision_topic: self.partitions, self.dlq_topic: 1},
        )
        self.partitions = counts[self.topic]
        k = self.kafka
        self._producer = make_producer(k, client_id="weir-replay", linger_ms=0)
        self._consumer = make_consumer(
            k,
            client_id="weir-replay",
            group_id=None,
            group_instance_id=None,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            auto_offset_reset="latest",
            isolation_level=self.isolation_level,
        )
        try:
            await self._producer.start()
            await self._consumer.start()
            tps = [
                TopicPartition(t, p)
                for t in (self.decision_topic, self.dlq_topic)
                for p in range(counts[t])
            ]
            self._consumer.assign(tps)
            ends = await self._consumer.end_offsets(tps)
            for tp in tps:
                self._consumer.seek(tp, ends[tp])
        except KafkaError as exc:
            await self.close()
            raise ReplayError(f"cannot connect to Kafka at {k.bootstrap_servers}: {exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="replay-read")

    async def _read(self) -> None:
        assert self._consumer is not None and self._rec is not None
        consumer, rec, clock = self._consumer, self._rec, self._clock
        decode, dead = self._decision.decode, self._dead.decode
        dlq = self.dlq_topic
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            now = clock()
            for tp, records in batches.items():
                for r in records:
                    try:
                        if tp.topic == dlq:
                            d = dead(r.value)
                            rec.dead_lettered(d.topic, d.partition, d.offset, now)
                        else:
                            rec.decided(decode(r.value), now)
                    except DecodeError:
                        rec.garbled()

    async def send(self, seq: int, key: bytes, value: bytes) -> None:
        """Append to the producer's batch; the delivery future binds the coordinates."""
        assert self._producer is not None
        try:
            fut = await self._producer.send(self.topic, value=value, key=key)
        except KafkaError as exc:
            assert self._rec is not None
            self._rec.send_failed(seq, exc)
            return
        fut.add_done_callback(functools.partial(self._acked, seq))

    def _acked(self, seq: int, fut: asyncio.Future[Any]) -> None:
        rec = self._rec
        assert rec is not None
        if fut.cancelled():
            rec.send_failed(seq, asyncio.CancelledError())
            return
        exc = fut.exception()
        if exc is not None:
            rec.send_failed(seq, exc)
            return
        md = fut.result()
        rec.bound(seq, md.topic, md.partition, md.offset)

    async def end_burst(self) -> None:
        """Nothing to do: the producer sends as soon as it can (``linger_ms=0``)."""

    async def flush(self) -> None:
        """Until every produced event is acknowledged."""
        if self._producer is not None:
            await self._producer.flush()
        await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop the reader and both clients."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await self._reader
            self._reader = None
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(KafkaError):
                    await client.stop()
        self._consumer = self._producer = None
