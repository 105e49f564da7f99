"""In-memory fakes of the runtime's Kafka clients: a broker, its consumer and producer.

:class:`MemoryKafka` is a ``Clients`` factory (``service.base``) over in-memory partition
logs, so ``Runtime(settings, clients=MemoryKafka())`` runs the real loop (fetch, ingest,
backpressure, commits, transactions, rebalance callbacks) without a broker. What tests
steer is plain state on the fakes: ``MemoryProducer.hold`` keeps every produce answer back
until ``release``; ``fail_commit`` on either client makes the next commit raise it;
``MemoryConsumer.rebalance`` revokes and reassigns everything on the next fetch; ``ended``
on either client reports a dead background task to ``watch``.

Simplifications, stated: one consumer per group (it is assigned every partition of its
topics); transactional messages become visible when their transaction commits (aborted
ones never do, whatever the isolation level); timestamps are the broker's wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from service.kafka import LOST_GENERATION
from service.memory import MemoryRecord
from service.settings import KafkaSettings

__all__ = ["MemoryBatch", "MemoryConsumer", "MemoryKafka", "MemoryProducer"]

WallClock = Callable[[], int]


class MemoryKafka:
    """Partition logs, group commits and the clients made over them (see the module)."""

    def __init__(self, *, wall: WallClock = time.time_ns, batch_bytes: int = 16_384) -> None:
        self._wall = wall
        self.batch_bytes = batch_bytes
        """Payload bytes a ``MemoryBatch`` takes before it is full."""
        self.logs: dict[str, list[list[MemoryRecord]]] = {}
        self.commits: dict[tuple[str, TopicPartition], int] = {}
        """Committed offsets by (group, partition)."""
        self.producers: list[MemoryProducer] = []
        self.consumers: list[MemoryConsumer] = []
        self._changed = asyncio.Event()

    # -- the Clients seam -------------------------------------------------------------------

    def producer(self, k: KafkaSettings, *, transactional_id: str | None) -> MemoryProducer:
        """A producer over these logs (transactional when ``transactional_id`` is set)."""
        p = MemoryProducer(self, transactional_id)
        self.producers.append(p)
        return p

    def consumer(self, k: KafkaSettings, *, isolation_level: str) -> MemoryConsumer:
        """A consumer of group ``k.group_id`` over these logs."""
        c = MemoryConsumer(self, k.group_id, earliest=k.auto_offset_reset == "earliest")
        self.consumers.append(c)
        return c

    def admin(self, k: KafkaSettings) -> MemoryKafkaAdmin:
        """A topic admin over these logs (every partition always has a leader)."""
        return MemoryKafkaAdmin(self)

    def metadata_refresher(self, consumer: Any) -> Callable[[], object]:
        """Nothing to refresh: a ``MemoryConsumer`` reads the logs' topics directly."""
        return _no_refresh

    def watch(self, consumer: MemoryConsumer, producer: MemoryProducer) -> Callable[[], str | None]:
        """What a test ended: ``MemoryConsumer.ended`` or ``MemoryProducer.ended``."""

        def check() -> str | None:
            return consumer.ended or producer.ended

        return check

    # -- what tests use ---------------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Add ``topic`` with ``partitions`` empty logs."""
        self.logs[topic] = [[] for _ in range(partitions)]

    def append(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> int:
        """Append one record (as a producer would); returns its offset."""
        log = self.logs[topic][partition]
        off = len(log)
        ts = self._wall() // 10**6
        log.append(
            MemoryRecord(topic, partition, off, value, key=key, timestamp=ts, headers=headers)
        )
        self.changed()
        return off

    def records(self, topic: str) -> list[MemoryRecord]:
        """Every visible record of ``topic``, partition by partition, in offset order."""
        return [r for log in self.logs.get(topic, []) for r in log]

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The offset ``group`` committed for the partition, or None."""
        return self.commits.get((group, TopicPartition(topic, partition)))

    def changed(self) -> None:
        """Wake every ``wait_until`` (called on each append and commit)."""
        self._changed.set()

    async def wait_until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Return once ``cond()`` holds, re-checking on every change; ``TimeoutError`` after
        ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not cond():
                self._changed.clear()
                await self._changed.wait()


def _no_refresh() -> None:
    return None


class MemoryKafkaAdmin:
    """``TopicAdmin`` over a ``MemoryKafka``'s logs."""

    def __init__(self, kafka: MemoryKafka) -> None:
        self._kafka = kafka

    async def start(self) -> None:
        """Nothing to connect to."""

    async def topics(self) -> set[str]:
        """The topics that have logs."""
        return set(self._kafka.logs)

    async def create(self, topic: str, partitions: int, replication_factor: int) -> bool:
        """Add ``topic`` with ``partitions`` logs; False when it already existed."""
        if topic in self._kafka.logs:
            return False
        self._kafka.create_topic(topic, partitions)
        return True

    async def has_leaders(self, topic: str) -> bool:
        """Every existing topic has its leaders."""
        return topic in self._kafka.logs

    async def close(self) -> None:
        """Nothing to disconnect."""


class MemoryBatch:
    """A record batch being filled (aiokafka's ``BatchBuilder``): full past ``limit``
    payload bytes, though its first message always fits."""

    __slots__ = ("limit", "messages", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.messages: list[tuple[bytes | None, bytes | None, Any]] = []

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Any = (),
    ) -> object | None:
        """Add a message, or ``None`` when it would overflow a non-empty batch."""
        n = len(key or b"") + len(value or b"")
        if self.messages and self.size + n > self.limit:
            return None
        self.messages.append((key, value, headers))
        self.size += n
        return self


class MemoryProducer:
    """A ``Producer`` over a :class:`MemoryKafka` (see the module docstring)."""

    def __init__(self, kafka: MemoryKafka, transactional_id: str | None) -> None:
        self._kafka = kafka
        self.transactional_id = transactional_id
        self.hold = False
        """Keep every answer back until ``release`` (a slow or partitioned broker)."""
        self.fail_commit: BaseException | None = None
        """Raised, once, by the next ``commit_transaction``."""
        self.commit_gate: asyncio.Event | None = None
        """When set to an Event, each ``commit_transaction`` waits for it first."""
        self.on_send_offsets: Callable[[], None] | None = None
        """Called by each ``send_offsets_to_transaction`` (a test's stall in its round trip)."""
        self.committing = False
        """A ``commit_transaction`` is in flight (a second one raises, as aiokafka's does)."""
        self.ended: str | None = None
        """Set by a test: a background task of the real client ended (``MemoryKafka.watch``)."""
        self.started = False
        self.unanswered = 0
        """Messages sent and not yet answered."""
        self.max_unanswered = 0
        self.aborts = 0
        self.commits = 0
        self._held: list[
            tuple[asyncio.Future[Any], list[MemoryRecord], list[MemoryRecord] | None]
        ] = []
        self._txn: list[MemoryRecord] | None = None
        self._txn_offsets: dict[TopicPartition, int] = {}
        self._txn_group = ""

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def flush(self) -> None:
        """Nothing is buffered here (held answers stay held)."""

    def create_batch(self) -> MemoryBatch:
        return MemoryBatch(self._kafka.batch_bytes)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(len(self._kafka.logs.get(topic, []))))

    async def send_batch(
        self, batch: MemoryBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        """Queue the batch's messages; the future answers now, or at ``release``."""
        if topic not in self._kafka.logs:
            raise KafkaError(f"unknown topic {topic}")
        if self.transactional_id is not None and self._txn is None:
            raise KafkaError("send outside a transaction")
        records = [
            MemoryRecord(topic, partition, -1, value, key=key, headers=headers)
            for key, value, headers in batch.messages
        ]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.unanswered += len(records)
        self.max_unanswered = max(self.max_unanswered, self.unanswered)
        if self.hold:
            self._held.append((fut, records, self._txn))
        else:
            self._land(fut, records, self._txn)
        self._kafka.changed()
        return fut

    def release(self) -> None:
        """Answer every held batch, in order, and stop holding (a batch sent in a
        transaction lands in it: where that one was aborted, nowhere visible)."""
        self.hold = False
        held, self._held = self._held, []
        for fut, records, txn in held:
            self._land(fut, records, txn)

    def _land(
        self, fut: asyncio.Future[Any], records: list[MemoryRecord], txn: list[MemoryRecord] | None
    ) -> None:
        if txn is not None:
            txn.extend(records)
        else:
            for r in records:
                self._kafka.append(r.topic, r.partition, r.value, key=r.key, headers=r.headers)
        self.unanswered -= len(records)
        fut.set_result(None)
        self._kafka.changed()

    @property
    def in_transaction(self) -> int:
        """Messages acknowledged into the open transaction (not visible yet)."""
        return len(self._txn) if self._txn is not None else 0

    async def begin_transaction(self) -> None:
        self._txn = []
        self._txn_offsets = {}

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        if self.on_send_offsets is not None:
            self.on_send_offsets()
        self._txn_offsets = dict(offsets)
        self._txn_group = group_id

    async def commit_transaction(self) -> None:
        """Make the transaction's messages visible and its offsets committed, or raise
        ``fail_commit`` (once); after ``commit_gate``, if set. A second call while one is in
        flight raises ``AssertionError`` (aiokafka's transaction state machine does)."""
        if self.committing:
            raise AssertionError("a transaction commit is already in flight")
        if self.commit_gate is not None:
            self.committing = True
            self._kafka.changed()
            try:
                await self.commit_gate.wait()
            finally:
                self.committing = False
        if self.fail_commit is not None:
            exc, self.fail_commit = self.fail_commit, None
            self._kafka.changed()
            raise exc
        txn, self._txn = self._txn or [], None
        for r in txn:
            self._kafka.append(r.topic, r.partition, r.value, key=r.key, headers=r.headers)
        for tp, off in self._txn_offsets.items():
            self._kafka.commits[(self._txn_group, tp)] = off
        self.commits += 1
        self._kafka.changed()

    async def abort_transaction(self) -> None:
        self._txn = None
        self._txn_offsets = {}
        self.aborts += 1
        self._kafka.changed()


class MemoryConsumer:
    """A ``Consumer`` of one group over a :class:`MemoryKafka` (see the module docstring)."""

    def __init__(self, kafka: MemoryKafka, group: str, *, earliest: bool = True) -> None:
        self._kafka = kafka
        self.group = group
        self._earliest = earliest
        self._topics: list[str] = []
        self._listener: Any = None
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._assigned = False
        self.fail_commit: BaseException | None = None
        """Raised, once, by the next ``commit``."""
        self.commit_gate: asyncio.Event | None = None
        """When set to an Event, each ``commit`` waits for it first (a slow coordinator)."""
        self.commits_waiting = 0
        """Commits waiting on ``commit_gate`` now."""
        self.ended: str | None = None
        """Set by a test: a background task of the real client ended (``MemoryKafka.watch``)."""
        self.started = False
        self._coordinator = SimpleNamespace(generation=1)
        """aiokafka's group coordinator, as far as ``membership_lost`` reads it."""

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._topics = list(topics)
        self._listener = listener

    def rebalance(self) -> None:
        """On the next ``getmany``: revoke every partition, then assign them again."""
        self._assigned = False

    async def lose(self, partitions: list[TopicPartition]) -> None:
        """``hand_on``, as when the group no longer knows this member (its session expired):
        aiokafka resets its coordinator's generation (``service.kafka.membership_lost``)
        before it calls the listener, and a later join gives it a new generation."""
        self._coordinator.generation = LOST_GENERATION
        try:
            await self.hand_on(partitions)
        finally:
            self._coordinator.generation = 1

    async def hand_on(self, partitions: list[TopicPartition]) -> None:
        """Revoke ``partitions`` now, as aiokafka's coordinator task does while the fetch
        loop is busy with records it fetched: the listener's ``on_partitions_revoked``, then
        they leave this consumer's assignment (the group gave them to another member)."""
        if self._listener is not None:
            await self._listener.on_partitions_revoked(list(partitions))
        for tp in partitions:
            self._positions.pop(tp, None)
            self._paused.discard(tp)
        self._kafka.changed()

    async def _assign(self) -> None:
        if self._positions and self._listener is not None:
            await self._listener.on_partitions_revoked(list(self._positions))
        self._positions = {}
        self._paused = set()
        tps = [
            TopicPartition(t, p)
            for t in self._topics
            for p in range(len(self._kafka.logs.get(t, [])))
        ]
        for tp in tps:
            committed = self._kafka.commits.get((self.group, tp))
            end = len(self._kafka.logs[tp.topic][tp.partition])
            self._positions[tp] = (
                committed if committed is not None else (0 if self._earliest else end)
            )
        self._assigned = True
        if self._listener is not None:
            await self._listener.on_partitions_assigned(tps)

    async def getmany(
        self, *, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        """Records from each unpaused partition's position on (up to ``max_records`` in
        all), waiting up to ``timeout_ms`` for one to arrive when there is none."""
        if not self._assigned:
            await self._assign()
        out = self._take(max_records)
        if not out and timeout_ms > 0:
            with_timeout = self._kafka.wait_until(
                lambda: bool(self._available()), timeout_ms / 1000
            )
            try:
                await with_timeout
            except TimeoutError:
                return {}
            out = self._take(max_records)
        return out

    def _available(self) -> list[TopicPartition]:
        logs = self._kafka.logs
        return [
            tp
            for tp, pos in self._positions.items()
            if tp not in self._paused and pos < len(logs[tp.topic][tp.partition])
        ]

    def _take(self, max_records: int | None) -> dict[TopicPartition, list[Any]]:
        left = max_records if max_records is not None else 1 << 62
        out: dict[TopicPartition, list[Any]] = {}
        for tp in self._available():
            if left <= 0:
                break
            pos = self._positions[tp]
            got = self._kafka.logs[tp.topic][tp.partition][pos : pos + left]
            out[tp] = got
            self._positions[tp] = pos + len(got)
            left -= len(got)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)
        self._kafka.changed()

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)
        self._kafka.changed()

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self._kafka.logs[partition.topic][partition.partition])

    async def position(self, partition: TopicPartition) -> int:
        return self._positions[partition]

    async def committed(self, partition: TopicPartition) -> int | None:
        return self._kafka.commits.get((self.group, partition))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Store ``offsets`` for the group (after ``commit_gate``), or raise ``fail_commit``
        (once)."""
        if self.commit_gate is not None:
            self.commits_waiting += 1
            self._kafka.changed()
            await self.commit_gate.wait()
            self.commits_waiting -= 1
        if self.fail_commit is not None:
            exc, self.fail_commit = self.fail_commit, None
            self._kafka.changed()
            raise exc
        for tp, off in offsets.items():
            self._kafka.commits[(self.group, tp)] = off
        self._kafka.changed()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._positions[partition] = offset

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The partitions of ``topic`` in the logs, None when it has none."""
        logs = self._kafka.logs.get(topic)
        return set(range(len(logs))) if logs is not None else None

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._positions[tp] = 0
