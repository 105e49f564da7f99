"""Replay straight into the service's pipeline on the replay's own event loop: no broker,
so the figures are the service's own overhead."""

from __future__ import annotations

import time

from aiokafka.partitioner import murmur2

from engines.base import Engine
from engines.features import Features
from engines.head import Head
from replay.base import Clock
from replay.measure import Recorder
from schemas.codec import dead_letter_codec, decision_codec
from schemas.errors import DecodeError
from service.memory import MemoryRecord, MemorySink, SentMessage
from service.pipeline import Pipeline
from service.settings import Settings


class InProcessTransport:
    """Replay straight into a ``Pipeline`` with a ``MemorySink``: the service without Kafka.

    Events of one burst are ingested together (as one fetch would hand them over),
    partitioned by key like the Kafka producer does; a decision "arrives" when the pipeline
    hands it to the sink.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        head: Head,
        spec: Features,
        model_version: str,
        topic: str | None = None,
        partitions: int = 1,
        clock: Clock = time.time_ns,
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.kafka.input_topics[0]
        self.partitions = max(1, partitions)
        self.description = f"in-process pipeline ({model_version})"
        self._engine, self._head, self._spec = engine, head, spec
        self._model_version = model_version
        self._clock = clock
        self._decision_topic = settings.kafka.decision_topic
        self._dlq_topic = settings.kafka.dlq_topic
        self._decision = decision_codec(settings.kafka.output_encoding)
        self._dead = dead_letter_codec(settings.kafka.output_encoding)
        self._next = [0] * self.partitions
        self._buf: list[MemoryRecord] = []
        self._rec: Recorder | None = None
        self.pipeline: Pipeline | None = None

    async def open(self, recorder: Recorder) -> None:
        """Build the pipeline around a ``MemorySink`` that reports to ``recorder``."""
        self._rec = recorder
        self.pipeline = Pipeline(
            settings=self.settings,
            engine=self._engine,
            head=self._head,
            spec=self._spec,
            sink=MemorySink(on_message=self._on_message),
            model_version=self._model_version,
        )
        self.pipeline.start()

    def _on_message(self, msg: SentMessage) -> None:
        rec = self._rec
        assert rec is not None
        now = self._clock()
        try:
            if msg.topic == self._decision_topic:
                rec.decided(self._decision.decode(msg.value), now)
            elif msg.topic == self._dlq_topic:
                d = self._dead.decode(msg.value)
                rec.dead_lettered(d.topic, d.partition, d.offset, now)
        except DecodeError:
            rec.garbled()

    async def send(self, seq: int, key: bytes, value: bytes) -> None:
        """Queue the record for this burst's ``ingest``; its coordinates are known at once."""
        assert self._rec is not None
        part = (murmur2(key) & 0x7FFFFFFF) % self.partitions
        off = self._next[part]
        self._next[part] = off + 1
        self._rec.bound(seq, self.topic, part, off)
        self._buf.append(
            MemoryRecord(
                self.topic, part, off, value, key=key, timestamp=self._clock() // 1_000_000
            )
        )

    async def end_burst(self) -> None:
        """Ingest the burst."""
        if self._buf and self.pipeline is not None:
            batch, self._buf = self._buf, []
            await self.pipeline.ingest(batch)

    async def flush(self) -> None:
        """Ingest what is left."""
        await self.end_burst()

    async def close(self) -> None:
        """Drain and stop the pipeline."""
        if self.pipeline is not None:
            await self.pipeline.drain(5.0)
            await self.pipeline.close()
            self.pipeline = None
