"""aiokafka glue: client settings from ``KafkaSettings``, and the Kafka ``Sink``.

Secrets are revealed only here, into the client constructors. Every aiokafka error that
leaves this module is wrapped in a ``ServiceError`` naming what was being done.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from service.base import AckCallback, Producer
from service.errors import ConfigError, ServiceError
from service.kafka_guard import guard_closed_writes, watch_clients
from service.settings import DeliverySettings, KafkaSettings
from service.tasks import TaskDied, TaskSupervisor


def _security(k: KafkaSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = create_ssl_context(
            cafile=k.ssl_cafile,
            certfile=k.ssl_certfile,
            keyfile=k.ssl_keyfile,
            password=k.ssl_password.reveal() if k.ssl_password is not None else None,
        )
    if k.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        out["sasl_mechanism"] = k.sasl_mechanism or "PLAIN"
        out["sasl_plain_username"] = k.sasl_username
        out["sasl_plain_password"] = (
            k.sasl_password.reveal() if k.sasl_password is not None else None
        )
    return out


def consumer_kwargs(
    k: KafkaSettings, *, isolation_level: str = "read_uncommitted"
) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaConsumer`` (manual commits, low-latency fetch)."""
    kw: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": k.client_id,
        "group_id": k.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": k.auto_offset_reset,
        "fetch_max_wait_ms": k.fetch_max_wait_ms,
        "fetch_min_bytes": k.fetch_min_bytes,
        "max_partition_fetch_bytes": k.max_partition_fetch_bytes,
        "session_timeout_ms": k.session_timeout_ms,
        "heartbeat_interval_ms": k.heartbeat_interval_ms,
        "max_poll_interval_ms": k.max_poll_interval_ms,
        "request_timeout_ms": k.request_timeout_ms,
        "retry_backoff_ms": k.retry_backoff_ms,
        "isolation_level": isolation_level,
        **_security(k),
    }
    if k.group_instance_id:
        kw["group_instance_id"] = k.group_instance_id
    return kw


def producer_kwargs(k: KafkaSettings, *, transactional_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``."""
    if k.max_batch_bytes > k.max_request_bytes:
        raise ConfigError(
            f"[kafka] max_batch_bytes = {k.max_batch_bytes} exceeds max_request_bytes = "
            f"{k.max_request_bytes}: a full batch could never be sent"
        )
    kw: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": k.client_id,
        "acks": k.acks if transactional_id is None else "all",
        "linger_ms": k.linger_ms,
        "compression_type": k.compression_type,
        "request_timeout_ms": k.request_timeout_ms,
        "retry_backoff_ms": k.retry_backoff_ms,
        "max_request_size": k.max_request_bytes,
        "max_batch_size": k.max_batch_bytes,
        "enable_idempotence": k.enable_idempotence or transactional_id is not None,
        **_security(k),
    }
    if transactional_id is not None:
        kw["transactional_id"] = transactional_id
        kw["transaction_timeout_ms"] = k.transaction_timeout_ms
    return kw


def admin_kwargs(k: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaAdminClient``."""
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": k.client_id,
        "request_timeout_ms": k.request_timeout_ms,
        "retry_backoff_ms": k.retry_backoff_ms,
        **_security(k),
    }


def transactional_id(k: KafkaSettings, prefix: str, worker_index: int, host: str) -> str:
    """The exactly-once producer's transactional id: one per worker of one group member,
    the same when that worker restarts, so the restarted producer fences its predecessor
    and aborts the transaction it left open (Kafka's zombie fencing), and never another
    process's, which it would fence while it serves (every pod of a Deployment runs worker
    0). The member is ``group_instance_id`` (static membership) where set, else ``host``
    (the host name: two ``weir serve`` of one group on one host need instance ids)."""
    member = k.group_instance_id or host
    return f"{prefix}-{k.group_id}-{member}-{worker_index}"


LOST_GENERATION = -1
"""The generation aiokafka's group coordinator resets to (``reset_generation``) when the
group no longer knows this member."""


def membership_lost(consumer: object) -> bool:
    """Whether the group no longer knows ``consumer`` as a member (a heartbeat, join or
    commit answered ``UNKNOWN_MEMBER_ID`` or ``ILLEGAL_GENERATION``: its session expired
    while the worker stalled, say). aiokafka resets its generation then, before it rejoins
    and calls ``on_partitions_revoked``: the partitions it revokes may already be another
    member's, which reads on from their last commit, so nothing may be committed for them.
    aiokafka has no ``on_partitions_lost`` (Java's), and its ``TxnOffsetCommit`` carries no
    generation (KIP-447), so the broker would take a transaction's offsets from this
    member; this check is what keeps them out."""
    coordinator = getattr(consumer, "_coordinator", None)
    return getattr(coordinator, "generation", None) == LOST_GENERATION


def make_consumer(k: KafkaSettings, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer from settings (not started, not subscribed)."""
    guard_closed_writes()
    return AIOKafkaConsumer(**{**consumer_kwargs(k), **overrides})


def make_producer(k: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer from settings (not started)."""
    guard_closed_writes()
    return AIOKafkaProducer(**{**producer_kwargs(k), **overrides})


class KafkaClients:
    """The runtime's ``Clients`` over aiokafka: clients built from settings."""

    def admin(self, k: KafkaSettings) -> KafkaTopicAdmin:
        """A topic admin client, not started."""
        return KafkaTopicAdmin(k)

    def metadata_refresher(self, consumer: Any) -> Callable[[], object]:
        """Asks ``consumer`` (an ``AIOKafkaConsumer``) to fetch metadata now, not waiting.

        aiokafka has no public call for it; its own consumer and producer call the client's
        ``force_metadata_update`` when metadata is stale, and so does this.
        """
        refresh: Callable[[], object] = consumer._client.force_metadata_update
        return refresh

    def watch(self, consumer: Any, producer: Any) -> Callable[[], str | None]:
        """A check of the started clients' background tasks (``watch_clients``)."""
        return watch_clients(consumer, producer)

    def producer(self, k: KafkaSettings, *, transactional_id: str | None) -> AIOKafkaProducer:
        """A producer (transactional when ``transactional_id`` is set), not started."""
        return make_producer(
            k, **({"transactional_id": transactional_id} if transactional_id else {})
        )

    def consumer(self, k: KafkaSettings, *, isolation_level: str) -> AIOKafkaConsumer:
        """A group consumer, not started, not subscribed."""
        return make_consumer(k, isolation_level=isolation_level)


class KafkaTopicAdmin:
    """``TopicAdmin`` over aiokafka's admin client, with the settings' security."""

    def __init__(self, k: KafkaSettings) -> None:
        guard_closed_writes()
        self._admin = AIOKafkaAdminClient(**admin_kwargs(k))

    async def start(self) -> None:
        """Connect to the cluster."""
        await self._admin.start()

    async def topics(self) -> set[str]:
        """Every topic name the cluster shows this client (metadata for all topics)."""
        return set(await self._admin.list_topics())

    async def create(self, topic: str, partitions: int, replication_factor: int) -> bool:
        """Create ``topic``; False when it already existed, the broker's error otherwise."""
        response = await self._admin.create_topics(
            [NewTopic(topic, partitions, replication_factor)]
        )
        for _name, code, *message in response.topic_errors:
            if code == TopicAlreadyExistsError.errno:
                return False
            if code:
                raise for_code(code)(message[0] if message and message[0] else topic)
        return True

    async def has_leaders(self, topic: str) -> bool:
        """Whether every partition of the existing ``topic`` has a leader."""
        (described,) = await self._admin.describe_topics([topic])
        parts: list[dict[str, Any]] = described.get("partitions") or []
        return (
            described.get("error_code") == 0
            and bool(parts)
            and all(p["leader"] >= 0 for p in parts)
        )

    async def close(self) -> None:
        """Disconnect."""
        await self._admin.close()


_DELIVERY = DeliverySettings()
DEFAULT_MAX_INFLIGHT = _DELIVERY.max_inflight_decisions
DEFAULT_MAX_INFLIGHT_BYTES = _DELIVERY.max_inflight_bytes
DEFAULT_MAX_REQUEST_BYTES = KafkaSettings().max_request_bytes
MAX_ROUTES = 65_536
"""Keys whose partition a ``KafkaSink`` remembers per topic (then it starts over)."""


class _Pending:
    """One partition's batch being filled, with the acknowledgements it owes."""

    __slots__ = ("acks", "batch", "builder", "nbytes", "partition", "topic")

    def __init__(self, builder: Any, topic: str, partition: int) -> None:
        self.builder = builder
        self.topic = topic
        self.partition = partition
        self.acks: list[tuple[Any, AckCallback]] = []
        self.nbytes = 0
        self.batch: Any = None
        """aiokafka's ``MessageBatch`` once handed over and still open (None: not handed
        over yet, or closed at hand-over)."""

    def taken(self) -> bool:
        """The producer's sender has taken the handed-over batch: nothing more may join it
        (aiokafka counts an idempotent batch's records when it takes it)."""
        return bool(self.batch._drain_waiter.done())


def _payload(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """A message's payload bytes, as the in-flight byte bound counts them."""
    size = len(value) + (len(key) if key is not None else 0)
    for name, data in headers:
        size += len(name) + len(data)
    return size


class KafkaSink:
    """The ``Sink`` over an ``AIOKafkaProducer``: one record batch per partition and burst.

    ``send`` appends to the open batch of the record's partition (chosen as the producer
    would: murmur2 of the key over the topic's partitions, computed once per key and
    remembered; a one-partition topic needs none) and never waits for the broker;
    a submitter task hands the batches to the producer (``send_batch``) in the order they
    were opened, once the caller yields, and acknowledges every message of a batch when the
    broker answers for it. With aiokafka's producer a handed-over batch stays open: later
    messages of its partition join it until the sender takes it for a request, as
    ``producer.send``'s do, so what is decided while the request before is in flight
    leaves with the next one, not a round trip later (``bench.sink --hold-ms``). With
    another producer a batch is closed when it is handed over. A future and
    a callback per batch instead of per message halves the CPU per message: 10.8 vs 5.7 µs
    in bursts of 64, 11.7 vs 5.6 µs in bursts of 8 (``python -m bench.sink --bootstrap
    ...``, local Apache Kafka, 3 partitions).

    In-flight messages (sent, not yet answered) are bounded by count (``max_inflight``)
    and by payload bytes (``max_inflight_bytes``, key + value + headers): a message that
    does not fit waits in ``send`` until answers make room (a message alone is always let
    through), later sends queue behind it in order, and ``full`` says so (the runtime
    pauses consumption then), so a slow or unreachable broker holds the decisions in
    Kafka's lag, not in memory. A message larger than ``max_message_bytes`` (the
    producer's ``max_request_size``) is failed at once, naming its size and that limit.
    The submitter is started through ``tasks``, so its death stops the service.
    """

    __slots__ = (
        "_batches",
        "_bytes",
        "_dead",
        "_done",
        "_gate",
        "_inflight",
        "_kick",
        "_max_bytes",
        "_max_count",
        "_max_message",
        "_open",
        "_partitioner",
        "_parts",
        "_producer",
        "_queued",
        "_ready",
        "_room",
        "_routes",
        "_submitted",
        "_submitter",
        "_tasks",
        "waits",
    )

    def __init__(
        self,
        producer: Producer,
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        max_message_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        tasks: TaskSupervisor | None = None,
    ) -> None:
        self._producer = producer
        self._max_count = max_inflight
        self._max_bytes = max_inflight_bytes
        self._max_message = max_message_bytes
        self._tasks = tasks or TaskSupervisor()
        self._bytes = 0
        self._dead: TaskDied | None = None
        self._room = asyncio.Event()
        self._gate = asyncio.Lock()
        self._queued = 0
        self.waits = 0
        """How many sends waited for room (a bound was reached)."""
        self._partitioner = DefaultPartitioner()
        self._parts: dict[str, list[int]] = {}
        self._routes: dict[str, dict[bytes, int]] = {}
        """Topic -> key -> partition: murmur2 (pure Python in aiokafka) once per key, not
        per message; emptied when it reaches ``MAX_ROUTES`` keys."""
        self._open: dict[tuple[str, int], _Pending] = {}
        self._ready: deque[_Pending] = deque()
        """Batches to hand over, in order; one stays here until the producer has it."""
        self._inflight = 0
        self._done = asyncio.Event()
        self._done.set()
        self._kick = asyncio.Event()
        self._submitted = asyncio.Event()
        self._submitted.set()
        self._submitter: asyncio.Task[None] | None = None
        accumulator = getattr(producer, "_message_accumulator", None)
        self._batches: dict[TopicPartition, Any] | None = getattr(accumulator, "_batches", None)
        """aiokafka's batches not yet taken by its sender, by partition (None for another
        producer: a batch is closed when it is handed over)."""

    @property
    def inflight(self) -> int:
        """Messages sent and not yet acknowledged or failed."""
        return self._inflight

    @property
    def inflight_bytes(self) -> int:
        """Payload bytes (key, value, headers) of the messages in flight."""
        return self._bytes

    @property
    def full(self) -> bool:
        """A send is waiting for room, or in-flight messages reached ``max_inflight`` or
        ``max_inflight_bytes`` (the runtime pauses consumption while this holds)."""
        return bool(self._queued) or (
            self._inflight >= self._max_count or self._bytes >= self._max_bytes
        )

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> None:
        """Append to the open batch of the message's partition; ``on_ack`` runs when the
        broker answers for that batch (with the error, if it failed). Waits while the
        message does not fit the in-flight bounds (see the class docstring); waiting sends
        go on in the order they came, so each key's messages keep their order."""
        if self.send_now(topic, key, value, headers, token, on_ack):
            return
        size = _payload(key, value, headers)
        if self._dead is not None or size > self._max_message:
            on_ack(token, self._refusal(topic, size))
            return
        if not self._queued and self._fits(size):
            if topic not in self._routes:
                await self._partitions(topic)
            self._append(topic, key, value, headers, token, on_ack, size)
            return
        self._queued += 1
        self.waits += 1
        try:
            async with self._gate:  # FIFO: one waiting send at a time, in arrival order
                while not self._fits(size) and self._dead is None:
                    self._room.clear()
                    self._kick_submitter()
                    await self._room.wait()
                if self._dead is not None:
                    on_ack(token, self._dead)
                    return
                if topic not in self._routes:
                    await self._partitions(topic)
                self._append(topic, key, value, headers, token, on_ack, size)
        finally:
            self._queued -= 1

    def send_now(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> bool:
        """``send`` without a coroutine (``service.base.SendNow``) where it would not wait:
        the topic's partitions known, nothing waiting and the message within the bounds.
        False (nothing done) otherwise."""
        if self._queued or topic not in self._routes:
            return False
        size = _payload(key, value, headers)
        if self._dead is not None or size > self._max_message:
            on_ack(token, self._refusal(topic, size))
            return True
        if not self._fits(size):
            return False
        self._append(topic, key, value, headers, token, on_ack, size)
        return True

    def _refusal(self, topic: str, size: int) -> BaseException:
        """Why a message of ``size`` payload bytes is answered at once: the sink is dead,
        or the message exceeds ``max_message_bytes``."""
        if self._dead is not None:
            return self._dead
        error: BaseException = MessageSizeTooLargeError(
            f"decision of {size} bytes for topic {topic!r} exceeds the producer's "
            f"max_request_size={self._max_message}"
        )
        return error

    def _fits(self, size: int) -> bool:
        return not self._inflight or (
            self._inflight < self._max_count and self._bytes + size <= self._max_bytes
        )

    def _append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
        size: int,
    ) -> None:
        """Append to the open batch of the message's partition (the topic's partitions
        known: ``_partitions``)."""
        routes = self._routes[topic]
        partition = routes.get(key) if key is not None else None
        if partition is None:
            parts = self._parts[topic]
            partition = parts[0] if len(parts) == 1 else self._partitioner(key, parts, parts)
            if key is not None:
                if len(routes) >= MAX_ROUTES:
                    routes.clear()
                routes[key] = partition
        tp = (topic, partition)
        pend = self._open.get(tp)
        if pend is not None and pend.batch is not None and pend.taken():
            pend = None  # the sender has it; its answer comes through its future
        if (
            pend is None
            or pend.builder.append(timestamp=None, key=key, value=value, headers=headers) is None
        ):
            # None open, or the open one is full (it goes as it is): a new batch takes
            # this message (the first message of a batch always fits: its size was
            # checked in ``send``), handed over after any batch opened before it.
            pend = self._open[tp] = _Pending(self._producer.create_batch(), topic, partition)
            pend.builder.append(timestamp=None, key=key, value=value, headers=headers)
            self._ready.append(pend)
        pend.acks.append((token, on_ack))
        pend.nbytes += size
        self._inflight += 1
        self._bytes += size
        self._done.clear()
        self._kick_submitter()

    def _kick_submitter(self) -> None:
        if self._submitted.is_set():
            self._submitted.clear()
            self._kick.set()
            if self._submitter is None:
                task = self._tasks.spawn(self._submit_loop(), "weir-sink-submitter")
                task.add_done_callback(self._on_submitter_end)
                self._submitter = task

    def _on_submitter_end(self, task: asyncio.Task[None]) -> None:
        """The submitter died (the supervisor stops the service): answer every message
        it would have handed over with the cause, so no send or flush waits for ever."""
        if task.cancelled():
            return
        exc = task.exception()
        self._dead = TaskDied(f"the Kafka sink's submitter died: {exc!r}", task.get_name())
        self._dead.__cause__ = exc
        pending = list(self._ready)  # the handed-over ones are answered by the producer
        self._ready.clear()
        self._open = {}
        for pend in pending:
            self._answer(pend, self._dead)
        self._submitted.set()
        self._room.set()

    async def _partitions(self, topic: str) -> list[int]:
        try:
            found = await self._producer.partitions_for(topic)
        except KafkaError as exc:
            raise ServiceError(f"no partitions for decision topic {topic!r}: {exc}") from exc
        parts = sorted(found)
        if not parts:
            raise ServiceError(f"decision topic {topic!r} has no partitions")
        self._parts[topic] = parts
        self._routes[topic] = {}
        return parts

    async def _submit_loop(self) -> None:
        ready = self._ready
        while True:
            await self._kick.wait()
            self._kick.clear()
            while ready:  # in the order they were opened; ``send_batch`` waits while the
                await self._submit(ready[0])  # partition's batch before is not taken yet
                ready.popleft()
            self._submitted.set()

    async def _submit(self, pend: _Pending) -> None:
        try:
            fut = await self._producer.send_batch(
                pend.builder, pend.topic, partition=pend.partition
            )
        except Exception as exc:  # noqa: BLE001 - every message gets its answer
            self._close(pend)
            self._answer(pend, exc)
            return
        tp = (pend.topic, pend.partition)
        if self._open.get(tp) is pend:  # still open: it stays open in the producer's hands
            queued = self._batches.get(TopicPartition(*tp)) if self._batches is not None else None
            held = queued[-1] if queued else None
            # aiokafka's own batch of this builder, with the flag its sender sets on taking
            # it; anything else (another producer, other internals): closed at hand-over.
            if getattr(held, "_builder", None) is pend.builder and hasattr(held, "_drain_waiter"):
                pend.batch = held
            else:
                self._close(pend)
        fut.add_done_callback(functools.partial(self._on_done, pend))

    def _close(self, pend: _Pending) -> None:
        """Nothing more joins ``pend``."""
        if self._open.get((pend.topic, pend.partition)) is pend:
            del self._open[pend.topic, pend.partition]

    def _on_done(self, pend: _Pending, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self._answer(pend, asyncio.CancelledError("produce cancelled"))
        else:
            self._answer(pend, fut.exception())

    def _answer(self, pend: _Pending, error: BaseException | None) -> None:
        self._inflight -= len(pend.acks)
        self._bytes -= pend.nbytes
        if self._inflight == 0:
            self._done.set()
        self._room.set()  # waiting sends check again whether theirs fits
        for token, on_ack in pend.acks:
            on_ack(token, error)

    async def flush(self) -> None:
        """Hand every open batch to the producer and wait until each message has its answer."""
        if not self._submitted.is_set():
            self._kick.set()
            await self._submitted.wait()
        await self._producer.flush()
        await self._done.wait()

    async def close(self) -> None:
        """Stop the submitter (call after ``flush``; open batches are dropped unanswered)."""
        task, self._submitter = self._submitter, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # a death was reported through ``tasks`` already
