"""The service's transport seam: what a source hands in and what a sink sends out.

``Record`` is the shape of one consumed record; aiokafka's ``ConsumerRecord`` satisfies it
as it is (no copy). ``Sink`` sends encoded messages and reports each one's durable
acknowledgement through the callback it was given. ``service.memory`` holds the in-memory
fakes of both, used by tests, benchmarks and the in-process replay.

Call contract of ``Sink``: ``send`` is called from the event loop; it may wait when the
sink's buffer is full (that is backpressure) but never waits for acknowledgements.
``on_ack(token, error)`` is called on the event loop once per message, with ``error`` None
when the broker acknowledged it. ``flush`` waits until every message sent so far is
acknowledged (or failed).

``Clients`` makes the Kafka clients the runtime opens (``Producer``, ``Consumer``: the parts
of aiokafka's it calls), so tests hand it ``service.memory_kafka.MemoryKafka`` instead of a
broker (as httpx's ``Client(transport=...)`` takes a mock transport).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiokafka.structs import TopicPartition

    from service.settings import KafkaSettings


class Record(Protocol):
    """One consumed record (the fields of aiokafka's ``ConsumerRecord`` weir reads)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int:
        """Record timestamp, wall ms since epoch (-1 when absent)."""
        ...

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


AckCallback = Callable[[Any, BaseException | None], None]
"""``on_ack(token, error)``: ``token`` is what the sender passed with the message."""


class Sink(Protocol):
    """Sends encoded messages; acknowledgements come back through ``on_ack``."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> None:
        """Queue one message for ``topic``; ``on_ack(token, error)`` follows later."""
        ...

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged or failed."""
        ...


# -- Kafka clients (the runtime's seam; aiokafka's clients satisfy it, fakes in memory.py) --


class BatchBuilder(Protocol):
    """A record batch being filled (aiokafka's ``BatchBuilder``)."""

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> object | None:
        """Add one message; ``None`` when the batch is full (the first always fits)."""
        ...


class Producer(Protocol):
    """What the runtime and ``KafkaSink`` call on a producer (``AIOKafkaProducer``).

    Every method runs on the event loop; ``send_batch`` returns a future that completes
    when the broker answers for the batch (its exception when it failed).
    """

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def flush(self) -> None: ...
    def create_batch(self) -> BatchBuilder: ...
    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]: ...
    async def partitions_for(self, topic: str) -> set[int]: ...
    async def begin_transaction(self) -> None: ...
    async def commit_transaction(self) -> None: ...
    async def abort_transaction(self) -> None: ...
    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None: ...


class Consumer(Protocol):
    """What the runtime calls on a group consumer (``AIOKafkaConsumer``), on the loop.

    ``subscribe``'s listener gets ``on_partitions_revoked``/``on_partitions_assigned``
    awaited from inside ``getmany``, as aiokafka does.
    """

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def subscribe(self, topics: list[str], listener: Any) -> None: ...
    async def getmany(
        self, *, timeout_ms: int, max_records: int | None
    ) -> dict[TopicPartition, list[Any]]: ...
    def assignment(self) -> set[TopicPartition]: ...
    def paused(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    async def position(self, partition: TopicPartition) -> int: ...
    async def committed(self, partition: TopicPartition) -> int | None: ...
    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...


class Clients(Protocol):
    """Makes the runtime's Kafka clients (not started): ``service.kafka.KafkaClients``
    builds aiokafka's from settings, ``service.memory.MemoryBroker`` fakes over memory."""

    def producer(self, k: KafkaSettings, *, transactional_id: str | None) -> Producer: ...
    def consumer(self, k: KafkaSettings, *, isolation_level: str) -> Consumer: ...
