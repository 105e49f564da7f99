"""Load for chaos runs: topics, an open-loop producer, and a ledger of every outcome.

The producer sends event ``i`` at ``start + i / rate`` whatever happens downstream (open
loop: it never waits for a decision, only for the clock); each delivery report binds the
event to its ``(partition, offset)``. The :class:`Collector`, a group-less consumer assigned
every partition of the decision and dead-letter topics from their beginnings, counts each
input's outcomes. :meth:`Ledger.tally` then says what was lost (an acknowledged input with no
outcome), duplicated (more than one decision) and how the decisions split by status.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from schemas.codec import dead_letter_codec, decision_codec, event_codec
from schemas.errors import DecodeError
from schemas.events import Quote

__all__ = [
    "Collector",
    "Ledger",
    "Outcome",
    "Tally",
    "committed_offsets",
    "create_topics",
    "produce_open_loop",
    "quote",
    "recovery_s",
]

Payload = Callable[[int], tuple[bytes | None, bytes | None]]
"""``i -> (key, value)`` of the ``i``-th input."""

KEYS = tuple(f"SYM{i:02d}" for i in range(16))


def quote(i: int) -> tuple[bytes | None, bytes | None]:
    """The ``i``-th input of a plain feed: a quote of one of 16 keys, round robin."""
    key = KEYS[i % len(KEYS)]
    q = Quote(
        symbol=key,
        bid_px=100.0 + (i % 7) * 0.01,
        bid_qty=1.0 + i % 3,
        ask_px=100.05 + (i % 7) * 0.01,
        ask_qty=2.0,
        update_id=i,
        source_ts_ns=time.time_ns(),
    )
    return key.encode(), event_codec().encode(q)


async def create_topics(bootstrap: str, topics: Mapping[str, int], timeout_s: float = 30) -> None:
    """Create ``{name: partitions}`` and wait until every partition has a leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="weir-chaos")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
        async with asyncio.timeout(timeout_s):
            while True:
                described = await admin.describe_topics(list(topics))
                ok = all(
                    d["error_code"] == 0
                    and len(d["partitions"]) == topics[d["topic"]]
                    and all(p["leader"] >= 0 for p in d["partitions"])
                    for d in described
                )
                if ok:
                    return
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offset of each partition of ``topic`` (0 where none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [
            (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)
        ]
    finally:
        await consumer.stop()


@dataclass
class Outcome:
    """Everything seen for one input."""

    statuses: list[str] = field(default_factory=list)
    """Status of each decision, in arrival order."""
    publish_wall_ns: list[int] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    dead_crc: int | None = None
    """CRC-32 of the first dead letter's original value (-1: it had none)."""
    late_ms: float | None = None
    """First decision, when ``ok``: publish minus deadline in ms (> 0: it missed)."""
    anchor_ms: float | None = None
    """First decision, when ``ok``: publish minus its deadline's anchor, ms."""
    done_late_ms: float | None = None
    """First decision, when ``ok``: inference done minus deadline in ms."""
    batch_size: int = 0
    """First decision, when ``ok``: rows in its batch."""
    flagged_late: bool = False
    """First decision, when ``ok``: its ``late`` flag."""


@dataclass
class Tally:
    """Figures of one run."""

    events: int
    """Inputs the broker acknowledged."""
    send_failed: int
    lost: int
    duplicated: int
    """Decisions beyond the first, summed over inputs."""
    statuses: dict[str, int]
    """First decision of each input, by status (``dead`` for dead letters)."""
    dead_reasons: dict[str, int]
    lost_sample: list[tuple[int, int]]


class Ledger:
    """Inputs sent (by sequence number) and outcomes seen (by coordinates)."""

    def __init__(self) -> None:
        self.coords: dict[int, tuple[int, int]] = {}
        self.sent_wall_ns: dict[int, int] = {}
        self.failed: dict[int, str] = {}
        self.outcomes: dict[tuple[int, int], Outcome] = {}
        self.garbled = 0
        self.crcs: dict[int, int] = {}
        """CRC-32 of each input's value (-1: none)."""
        self.kinds: dict[int, str] = {}
        """Optional label of each input (the fuzz category of a poison record)."""

    def expected(self) -> set[tuple[int, int]]:
        """Coordinates of every acknowledged input."""
        return set(self.coords.values())

    def missing(self) -> set[tuple[int, int]]:
        """Acknowledged inputs without any outcome yet."""
        return {c for c in self.coords.values() if c not in self.outcomes}

    def tally(self) -> Tally:
        """Count lost, duplicated and outcomes by status."""
        statuses: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        dup = 0
        lost: list[tuple[int, int]] = []
        for c in sorted(self.expected()):
            o = self.outcomes.get(c)
            if o is None or not (o.statuses or o.dead_reasons):
                lost.append(c)
                continue
            if o.statuses:
                statuses[o.statuses[0]] += 1
                dup += len(o.statuses) - 1
            else:
                statuses["dead"] += 1
            reasons.update(o.dead_reasons[:1])
            dup += max(0, len(o.dead_reasons) - 1)
        return Tally(
            events=len(self.coords),
            send_failed=len(self.failed),
            lost=len(lost),
            duplicated=dup,
            statuses=dict(statuses),
            dead_reasons=dict(reasons),
            lost_sample=lost[:5],
        )

    def delays_ms(self) -> list[tuple[int, float]]:
        """``(sent_wall_ns, first decision publish - send, ms)`` of every decided input."""
        out: list[tuple[int, float]] = []
        for seq, c in self.coords.items():
            o = self.outcomes.get(c)
            if o is None or not o.publish_wall_ns:
                continue
            sent = self.sent_wall_ns[seq]
            out.append((sent, (o.publish_wall_ns[0] - sent) / 1e6))
        out.sort()
        return out


def recovery_s(
    ledger: Ledger,
    fault_wall_ns: int,
    *,
    window_start_ns: int | None = None,
    threshold_ms: float | None = None,
) -> float:
    """Seconds from ``fault_wall_ns`` until decisions are back to normal delay.

    Normal is the p99 delay (publish minus send) of the inputs sent before
    ``window_start_ns`` (default: the fault), doubled, and at least 250 ms (or
    ``threshold_ms``); the recovery ends at the last publication of an input sent from
    ``window_start_ns`` (default: 2 s before the fault) that was over it. 0 when none was.
    """
    delays = ledger.delays_ms()
    start = fault_wall_ns - 2_000_000_000 if window_start_ns is None else window_start_ns
    before = sorted(d for t, d in delays if t < min(start, fault_wall_ns))
    if threshold_ms is None:
        p99 = before[min(len(before) - 1, int(len(before) * 0.99))] if before else 0.0
        threshold_ms = max(250.0, 2 * p99)
    last_late = fault_wall_ns
    for sent, d in delays:
        if sent >= start and d > threshold_ms:
            last_late = max(last_late, sent + int(d * 1e6))
    # Inputs never decided count as never recovered.
    return max(0.0, (last_late - fault_wall_ns) / 1e9)


class Collector:
    """Reads decisions and dead letters into a :class:`Ledger` (module docstring)."""

    def __init__(
        self,
        bootstrap: str,
        decision_topic: str,
        dlq_topic: str,
        ledger: Ledger,
        *,
        committed_only: bool = False,
        partitions: Mapping[str, int] | None = None,
        anchor: str = "ingest",
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = (decision_topic, dlq_topic)
        self.ledger = ledger
        self.committed_only = committed_only
        self.anchor = anchor
        self._partitions = dict(partitions or {})
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.decisions = 0
        self.last_wall_ns = 0

    async def start(self) -> None:
        """Assign every partition from the beginning and start reading."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="weir-chaos-collector",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if self.committed_only else "read_uncommitted",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        tps: list[TopicPartition] = []
        for t in self.topics:
            n = self._partitions.get(t)
            parts = range(n) if n else sorted(self._consumer.partitions_for_topic(t) or {0})
            tps += [TopicPartition(t, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.get_running_loop().create_task(self._read(), name="chaos-collector")

    async def _read(self) -> None:
        assert self._consumer is not None
        dec = decision_codec()
        dead = dead_letter_codec()
        dlq = self.topics[1]
        outcomes = self.ledger.outcomes
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=100, max_records=20_000)
            except KafkaError:
                await asyncio.sleep(0.2)
                continue
            for tp, records in batches.items():
                for r in records:
                    try:
                        if tp.topic == dlq:
                            d = dead.decode(r.value)
                            o = outcomes.setdefault((d.partition, d.offset), Outcome())
                            if not o.dead_reasons:
                                o.dead_crc = -1 if d.value is None else zlib.crc32(d.value)
                            o.dead_reasons.append(d.reason)
                        else:
                            dd = dec.decode(r.value)
                            o = outcomes.setdefault((dd.partition, dd.offset), Outcome())
                            st = dd.stamps
                            publish = st.publish_wall_ns or 0
                            if not o.statuses and dd.status.value == "ok":
                                if st.deadline_wall_ns is not None:
                                    o.late_ms = (publish - st.deadline_wall_ns) / 1e6
                                    done = st.infer_done_wall_ns or publish
                                    o.done_late_ms = (done - st.deadline_wall_ns) / 1e6
                                anchor = st.kafka_ts_ns if self.anchor == "kafka" else None
                                anchor = anchor or st.ingest_wall_ns or publish
                                o.anchor_ms = (publish - anchor) / 1e6
                                o.batch_size = dd.batch_size
                                o.flagged_late = dd.late
                            o.statuses.append(dd.status.value)
                            o.publish_wall_ns.append(publish)
                            self.decisions += 1
                    except DecodeError:
                        self.ledger.garbled += 1
                    self.last_wall_ns = time.time_ns()

    async def wait_complete(self, timeout_s: float, *, settle_s: float = 1.0) -> bool:
        """Until every acknowledged input has an outcome (then ``settle_s`` more for
        duplicates still in flight); False when ``timeout_s`` ran out first."""
        deadline = time.monotonic() + timeout_s
        while self.ledger.missing():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        await asyncio.sleep(settle_s)
        return True

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._consumer.stop()


@dataclass
class SendStats:
    """How the open-loop sender kept up."""

    sent: int = 0
    max_lag_ms: float = 0.0
    """Largest delay of a send behind its intended time."""
    duration_s: float = 0.0


async def produce_open_loop(
    producer: AIOKafkaProducer,
    topic: str,
    ledger: Ledger,
    *,
    rate: float,
    count: int,
    payload: Payload = quote,
    first_seq: int = 0,
    stop: asyncio.Event | None = None,
    labels: Iterable[str] | None = None,
) -> SendStats:
    """Send ``count`` inputs at ``rate`` per second, open loop (module docstring)."""
    stats = SendStats()
    t0 = time.monotonic()
    label_iter = iter(labels) if labels is not None else None
    pending: set[asyncio.Future[Any]] = set()

    def bind(seq: int, fut: asyncio.Future[Any]) -> None:
        pending.discard(fut)
        if fut.cancelled():
            ledger.failed[seq] = "cancelled"
            return
        exc = fut.exception()
        if exc is not None:
            ledger.failed[seq] = f"{type(exc).__name__}: {exc}"
            return
        md = fut.result()
        ledger.coords[seq] = (md.partition, md.offset)

    i = 0
    while i < count:
        if stop is not None and stop.is_set():
            break
        now = time.monotonic()
        due = min(count, math.floor((now - t0) * rate) + 1)
        if due <= i:
            await asyncio.sleep(min(0.005, (i - (now - t0) * rate) / rate))
            continue
        stats.max_lag_ms = max(stats.max_lag_ms, (now - t0 - i / rate) * 1e3)
        for j in range(i, due):
            seq = first_seq + j
            key, value = payload(seq)
            if label_iter is not None:
                ledger.kinds[seq] = next(label_iter)
            ledger.crcs[seq] = -1 if value is None else zlib.crc32(value)
            ledger.sent_wall_ns[seq] = time.time_ns()
            try:
                fut = await producer.send(topic, value=value, key=key)
            except KafkaError as exc:
                ledger.failed[seq] = f"{type(exc).__name__}: {exc}"
                continue
            pending.add(fut)
            fut.add_done_callback(lambda f, s=seq: bind(s, f))
        stats.sent += due - i
        i = due
    with contextlib.suppress(KafkaError):
        await producer.flush()
    if pending:
        await asyncio.wait(list(pending), timeout=60)
    stats.duration_s = time.monotonic() - t0
    return stats
