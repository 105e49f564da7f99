"""The service's seams: what a source hands in, what a sink sends out, what the pipeline
tells of each batch and what the metrics read of the consumer.

``Record`` is the shape of one consumed record; aiokafka's ``ConsumerRecord`` satisfies it
as it is (no copy). ``Sink`` sends encoded messages and reports each one's durable
acknowledgement through the callback it was given. ``service.memory`` holds the in-memory
fakes of both, used by tests, benchmarks and the in-process replay. ``BatchObserver`` is
what the pipeline tells of every batch (``service.metrics.Metrics`` is one);
``ConsumerLike`` is the part of ``AIOKafkaConsumer`` the metrics read.

Call contract of ``Sink``: ``send`` is called from the event loop; it may wait when the
sink's buffer is full (that is backpressure) but never waits for acknowledgements.
``on_ack(token, error)`` is called on the event loop once per message, with ``error`` None
when the broker acknowledged it. ``flush`` waits until every message sent so far is
acknowledged (or failed).

``TopicAdmin`` is what ``service.topics`` needs of Kafka's admin API to check and create the
service's topics; ``service.topics.KafkaTopicAdmin`` is the real one, ``MemoryAdmin`` the
fake. Its coroutines run on the event loop, each waiting for at most one broker round trip
(bounded by the client's request timeout); a broker refusal raises aiokafka's ``KafkaError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from service.scheduler.base import Item


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


class BatchObserver(Protocol):
    """What the pipeline tells of each batch (``Pipeline(observer=...)``).

    Call contract: both methods are called on the pipeline's event loop, once per batch
    that ran the engine, in this order, and must not block or await. ``on_batch`` comes
    right after the engine call, before any of the batch's decisions is published; the
    sequences it gets are the pipeline's per-slot stamp arrays, indexed by
    ``item.payload``, valid only during the call (slots are reused after publishing).
    ``on_published`` comes after the batch's last decision was handed to the sink.
    """

    def on_batch(
        self,
        bucket: int,
        items: Sequence[Item[int]],
        ingest_ns: Sequence[int],
        kafka_ts_ns: Sequence[int | None],
        source_ts_ns: Sequence[int | None],
        dispatch_ns: int,
        done_ns: int,
    ) -> None:
        """A batch ran: monotonic ingest stamps per slot, wall Kafka/source stamps per slot,
        monotonic dispatch and inference-done times."""
        ...

    def on_published(self, end_ns: int, mono_to_wall_ns: int) -> None:
        """The batch's decisions were all handed to the sink at monotonic ``end_ns``."""
        ...


class ConsumerLike(Protocol):
    """What the metrics read from an ``AIOKafkaConsumer`` (called on its event loop)."""

    def assignment(self) -> set[Any]:
        """Assigned ``TopicPartition`` set."""
        ...

    def paused(self) -> set[Any]:
        """Paused ``TopicPartition`` set."""
        ...

    def highwater(self, partition: Any) -> int | None:
        """Last known highwater offset of ``partition``."""
        ...

    async def position(self, partition: Any) -> int:
        """Offset of the next record to fetch from ``partition``."""


class TopicAdmin(Protocol):
    """Looks up and creates topics (call ``start`` first and ``close`` last)."""

    async def start(self) -> None:
        """Connect to the cluster."""
        ...

    async def topics(self) -> set[str]:
        """Names of every topic this client may see; asking never creates one."""
        ...

    async def create(self, topic: str, partitions: int, replication_factor: int) -> bool:
        """Create ``topic``: True when created here, False when it already existed."""
        ...

    async def has_leaders(self, topic: str) -> bool:
        """Whether the existing ``topic`` has a leader for every partition."""
        ...

    async def close(self) -> None:
        """Disconnect."""
        ...
