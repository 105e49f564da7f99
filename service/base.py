"""The service's seams: what a source hands in, what a sink sends out, what the pipeline
tells of each batch and what the metrics read of the consumer.

``Record`` is the shape of one consumed record; aiokafka's ``ConsumerRecord`` satisfies it
as it is (no copy). ``Sink`` sends encoded messages and reports each one's durable
acknowledgement through the callback it was given. ``service.memory`` holds the in-memory
fakes of both, used by tests, benchmarks and the in-process replay. ``BatchObserver`` is
what the pipeline tells of every batch (``service.metrics.Metrics`` is one);
``ConsumerLike`` is the part of ``AIOKafkaConsumer`` the metrics read. ``BatchTracer``
makes the OpenTelemetry span of each batch (``service.otel.OtelBatchTracer``; ``None``: off).

Call contract of ``Sink``: ``send`` is called from the event loop; it may wait when the
sink's buffer is full (that is backpressure) but never waits for acknowledgements; it
reads ``headers`` and never changes them (the pipeline hands one list to many messages).
``on_ack(token, error)`` is called on the event loop once per message, with ``error`` None
when the broker acknowledged it. ``flush`` waits until every message sent so far is
acknowledged (or failed).

``TopicAdmin`` is what ``service.topics`` needs of Kafka's admin API to check and create the
service's topics; ``service.topics.KafkaTopicAdmin`` is the real one, ``MemoryAdmin`` the
fake. Its coroutines run on the event loop, each waiting for at most one broker round trip
(bounded by the client's request timeout); a broker refusal raises aiokafka's ``KafkaError``.

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

    from service.scheduler.base import Item
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
    """Sends encoded messages; acknowledgements come back through ``on_ack``.

    A sink may also have ``send_now`` (``SendNow``): the same send where it can queue the
    message without waiting, returning False, having done nothing, where it would wait.
    The publisher then calls it first and awaits ``send`` only when it returns False, so a
    decision that needs no wait costs no coroutine."""

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


class SendNow(Protocol):
    """A sink's ``send_now`` (see ``Sink``)."""

    def __call__(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> bool:
        """Queue one message like ``Sink.send`` if that needs no wait; False if it would."""
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


TraceHeaders = tuple[tuple[str, bytes], ...]
"""The trace headers a decision carries: ``traceparent`` first, then ``tracestate`` if any."""


class TraceSlots(Protocol):
    """The pipeline's trace headers by slot (``service.tracing.TraceCarry``)."""

    slot: list[TraceHeaders | None]
    """The headers the decision of the event in each slot carries out (None: none)."""
    held: int
    """How many slots hold headers (0: no queued event is traced)."""


class BatchTracer(Protocol):
    """Makes one span per engine batch and gives each traced event's decision its context.

    Call contract: called on the pipeline's event loop and must not block or await (span
    export happens elsewhere, e.g. in a ``BatchSpanProcessor`` thread). ``begin`` comes
    right after the engine call, before any of the batch's decisions is published;
    ``carry`` holds the pipeline's per-slot trace headers (``TraceSlots``, indexed by
    ``item.payload``; ``carry.held == 0``: no item has any): ``begin`` replaces the headers
    of each traced item by those its decision carries out. ``end`` comes after the batch's last decision was handed to
    the sink. Times are monotonic ns; ``mono_to_wall_ns`` turns them into wall ns.
    ``close`` (once, off the loop: it may block while spans are exported) flushes and
    stops what the tracer started itself.
    """

    def begin(
        self,
        bucket: int,
        items: Sequence[Item[int]],
        carry: TraceSlots,
        ingest_ns: Sequence[int],
        dispatch_ns: int,
        done_ns: int,
        model_version: str,
        error: str | None,
        mono_to_wall_ns: int,
    ) -> None:
        """A batch of ``model_version`` ran (``error``: the engine's failure; its decisions
        are then ``error``)."""
        ...

    def end(self, end_ns: int) -> None:
        """The batch begun last has all its decisions handed to the sink at ``end_ns``."""
        ...

    def close(self) -> None:
        """Flush and stop what the tracer started (a tracer provider of its own)."""
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
    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partitions of ``topic`` in the consumer's cached metadata (no I/O); None if unknown."""
        ...


class Clients(Protocol):
    """Makes the runtime's Kafka clients (not started): ``service.kafka.KafkaClients``
    builds aiokafka's from settings, ``service.memory.MemoryBroker`` fakes over memory."""

    def producer(self, k: KafkaSettings, *, transactional_id: str | None) -> Producer: ...
    def consumer(self, k: KafkaSettings, *, isolation_level: str) -> Consumer: ...
    def admin(self, k: KafkaSettings) -> TopicAdmin:
        """A topic admin client of the same cluster, not started."""
        ...

    def metadata_refresher(self, consumer: Any) -> Callable[[], object]:
        """A call that makes ``consumer`` (one this factory made) fetch metadata now,
        without waiting for it; the topic watch uses it while an input topic is missing."""
        ...

    def watch(self, consumer: Any, producer: Any) -> Callable[[], str | None]:
        """A check of the started ``consumer`` and ``producer`` (ones this factory made):
        None while their background work runs, else what ended; the runtime calls it
        after every fetch and stops the worker on an answer."""
        ...
