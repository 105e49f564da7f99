"""Open-loop replay of a feed file into the service, measuring every decision that comes back.

Event ``i`` of the feed is due at ``start + (recv_i - recv_0) / speed`` (or
``start + i / rate``). The sender sends whatever is due, in bursts, and never waits for a
decision: it waits only for the clock, or when the transport pushes back (a full producer
buffer), and that wait shows as sender lag and, because latency counts from the *intended*
send time, in the latency (coordinated-omission correct, see ``replay.measure``). A
concurrent reader matches every decision (and dead letter) to its input by
``(topic, partition, offset)``. The run ends when every input has an outcome or nothing
arrived for ``quiet_s`` after the last send.

Transports (the seam, :class:`Transport`):

- :class:`KafkaTransport`: an aiokafka producer keyed by the event key (the default
  murmur2 partitioner, as Java clients do) sends to the input topic; the producer's
  delivery future gives each event's partition and offset. A group-less consumer, assigned
  every partition of the decision and dead-letter topics and positioned at their ends
  *before* the first send, reads the outcomes.
- :class:`InProcessTransport`: a ``service.pipeline.Pipeline`` on this event loop with a
  ``MemorySink``: no broker, so the figures are the service's own overhead.

Source times: the feed's ``source_ts_ns`` are from the day it was recorded. With
``source_ts="shift"`` (default) each payload's ``source_ts_ns`` is rewritten to
``intended_i - (d_i - min d)`` where ``d_i = recv_i - source_ts_i`` is the recorded transit
(including the capture host's clock offset): the event keeps its recorded excess transit
and the clock offset drops out. ``keep`` sends payloads unchanged.

    weir replay run FEED [--bootstrap HOST:PORT] [--speed X|max] [--rate N] [--slo slo.toml]
                    [--out results.json] [--html report.html] [--in-process]
                    [--seconds S | --limit N] [--config weir.toml] ...

exits 0 when the run meets its SLO, 1 when it does not (the verdict table says which check
failed), 2 on an error (bad SLO file, broker unreachable, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, Protocol

import msgspec
import numpy as np
import numpy.typing as npt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from engines.base import Engine
from engines.head import Head
from engines.registry import load_model
from replay.errors import ReplayError
from replay.measure import DEFAULT_LAG_THRESHOLD_MS, Recorder
from replay.report import format_summary, format_verdict, write_html
from replay.results import RunConfig, RunResult, write_result
from replay.slo import Slo, evaluate, load_slo
from schemas.codec import Encoding, dead_letter_codec, decision_codec, event_codec
from schemas.errors import DecodeError
from schemas.events import Event
from schemas.features import FeatureSpec
from schemas.feed import FeedReader
from service.kafka import make_consumer, make_producer
from service.memory import MemoryRecord, MemorySink, SentMessage
from service.pipeline import Pipeline
from service.settings import KafkaSettings, Settings, load_settings

Clock = Callable[[], int]
I64 = npt.NDArray[np.int64]

SOURCE_TS_MODES: Final = ("shift", "keep")
DEFAULT_QUIET_S: Final = 10.0
_LEAD_NS: Final = 50_000_000
_BURST: Final = 512


# -- pacing -------------------------------------------------------------------------------


class Pacing(msgspec.Struct, frozen=True, kw_only=True):
    """Recorded pace times ``speed``, as fast as possible (``speed=None``), or ``rate``/s."""

    speed: float | None = 1.0
    rate: float | None = None

    @classmethod
    def parse(cls, speed: str = "1", rate: float | None = None) -> Pacing:
        """From ``--speed`` (a number > 0 or ``max``) and ``--rate`` (events/s)."""
        if rate is not None:
            if not (math.isfinite(rate) and rate > 0):
                raise ReplayError(f"--rate must be a number of events/s > 0, got {rate!r}")
            return cls(speed=None, rate=rate)
        if speed == "max":
            return cls(speed=None)
        try:
            value = float(speed)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise ReplayError(f"--speed must be a number > 0 or 'max', got {speed!r}")
        return cls(speed=value)

    @property
    def paced(self) -> bool:
        """False at ``max``: no schedule, so latency counts from the actual send."""
        return self.speed is not None or self.rate is not None

    def label(self) -> str:
        """``"10"``, ``"max"`` or ``"rate"``."""
        if self.rate is not None:
            return "rate"
        return "max" if self.speed is None else f"{self.speed:g}"

    def offsets(self, recv_rel_ns: I64) -> I64 | None:
        """Each event's due time after the start, ns; None at ``max``."""
        if self.rate is not None:
            return (np.arange(recv_rel_ns.size, dtype=np.float64) * (1e9 / self.rate)).astype(
                np.int64
            )
        if self.speed is None:
            return None
        return (recv_rel_ns.astype(np.float64) / self.speed).astype(np.int64)


# -- the prepared feed ----------------------------------------------------------------------


class Plan:
    """The events of a feed (or its prefix), ready to send: keys, payloads, pace offsets."""

    def __init__(
        self,
        *,
        path: Path,
        feed_rows: int,
        keys: list[bytes],
        events: list[Event],
        recv_rel: I64,
        excess: I64,
        encoding: Encoding,
        source_ts: str,
    ) -> None:
        self.path = path
        self.feed_rows = feed_rows
        self.keys = keys
        self.events = events
        self.recv_rel = recv_rel
        self.excess = excess
        """Recorded transit above the feed's minimum, ns; -1 where there is no source time."""
        self.encoding = encoding
        self.source_ts = source_ts
        self._encode = event_codec(encoding).encode
        self._fixed: list[bytes] | None = None
        if source_ts == "keep" or not bool(np.any(excess >= 0)):
            self._fixed = [self._encode(e) for e in events]

    @property
    def n(self) -> int:
        """Events to send."""
        return len(self.keys)

    @property
    def span_s(self) -> float:
        """Recorded span of the events to send, s."""
        return float(self.recv_rel[-1]) / 1e9 if self.n else 0.0

    def payload(self, i: int, intended_ns: int) -> bytes:
        """Event ``i`` encoded for the input topic, its source time shifted if asked."""
        if self._fixed is not None:
            return self._fixed[i]
        ex = int(self.excess[i])
        event = self.events[i]
        if ex < 0:
            return self._encode(event)
        return self._encode(msgspec.structs.replace(event, source_ts_ns=intended_ns - ex))


def load_plan(
    path: str | Path,
    *,
    encoding: Encoding | str = Encoding.JSON,
    limit: int | None = None,
    seconds: float | None = None,
    source_ts: str = "shift",
) -> Plan:
    """Read a feed into memory for replay: the first ``limit`` rows / ``seconds`` of it."""
    if source_ts not in SOURCE_TS_MODES:
        raise ReplayError(
            f"source_ts must be one of {', '.join(SOURCE_TS_MODES)}, got {source_ts!r}"
        )
    if limit is not None and limit < 1:
        raise ReplayError(f"--limit must be >= 1, got {limit}")
    if seconds is not None and not seconds > 0:
        raise ReplayError(f"--seconds must be > 0, got {seconds}")
    reader = FeedReader(path)
    decode = reader.codec.decode
    keys: list[bytes] = []
    events: list[Event] = []
    recv: list[int] = []
    src: list[int] = []
    first: int | None = None
    cutoff = None if seconds is None else int(seconds * 1e9)
    done = False
    for batch in reader.batches(columns=["recv_ns", "source_ts_ns", "payload"]):
        cols = batch.to_pydict()
        for r, s, payload in zip(
            cols["recv_ns"], cols["source_ts_ns"], cols["payload"], strict=True
        ):
            if first is None:
                first = r
            if cutoff is not None and r - first >= cutoff:
                done = True
                break
            event = decode(payload)
            keys.append(event.key.encode())
            events.append(event)
            recv.append(r)
            src.append(-1 if s is None else s)
            if limit is not None and len(keys) >= limit:
                done = True
                break
        if done:
            break
    if not keys:
        raise ReplayError(f"feed {path} has no events to replay")
    recv_arr = np.asarray(recv, dtype=np.int64)
    # Replays pace on receive order; a backward step in the capture is sent at once.
    recv_rel = np.maximum.accumulate(recv_arr - recv_arr[0])
    src_arr = np.asarray(src, dtype=np.int64)
    has = src_arr >= 0
    excess = np.full(src_arr.size, -1, np.int64)
    if has.any():
        transit = recv_arr[has] - src_arr[has]
        excess[has] = transit - transit.min()
    return Plan(
        path=Path(path),
        feed_rows=reader.num_rows,
        keys=keys,
        events=events,
        recv_rel=recv_rel,
        excess=excess,
        encoding=Encoding(encoding),
        source_ts=source_ts,
    )


# -- transports ------------------------------------------------------------------------------


class Transport(Protocol):
    """Where events go and where their outcomes come back from.

    Call contract (all on the replay's event loop): ``open(recorder)`` connects and, before
    it returns, positions the outcome reader so that every outcome of a later send is seen;
    outcomes go to ``recorder.decided`` / ``dead_lettered`` / ``garbled`` as they arrive.
    ``send`` hands one event over and never waits for its decision (it may wait when the
    transport pushes back); ``recorder.bound(seq, ...)`` or ``send_failed`` follows, maybe
    later. ``end_burst`` follows each burst of sends. ``flush`` waits until every send is
    acknowledged or failed. ``close`` stops everything it started.
    """

    description: str

    async def open(self, recorder: Recorder) -> None: ...
    async def send(self, seq: int, key: bytes, value: bytes) -> None: ...
    async def end_burst(self) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


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
        spec: FeatureSpec,
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


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """A progress line on ``stream``: redrawn every ``interval`` s on a terminal, else a
    plain line every ``log_interval`` s (so CI logs show it without flooding)."""

    def __init__(
        self,
        total: int,
        planned_s: float | None,
        *,
        stream: IO[str] | None = None,
        interval: float = 0.25,
        log_interval: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if self.tty else log_interval
        self.total = total
        self.planned_s = planned_s
        self.enabled = enabled
        self._t0 = time.monotonic()
        self._last_t = self._t0
        self._last_decided = 0
        self.lines = 0

    def draw(self, rec: Recorder) -> None:
        """Write one progress line."""
        snap = rec.snapshot()
        now = time.monotonic()
        dt = now - self._last_t
        rate = (snap.decided - self._last_decided) / dt if dt > 0 else 0.0
        self._last_t, self._last_decided = now, snap.decided
        p99 = "-" if snap.p99_ms is None else f"{snap.p99_ms:,.2f} ms"
        planned = f"/{self.planned_s:,.0f}" if self.planned_s else ""
        line = (
            f"sent {snap.sent:,}/{self.total:,}  decided {snap.decided:,}  "
            f"{rate:,.0f}/s  p99 {p99}  sender lag max {snap.max_lag_ms:,.1f} ms  "
            f"{now - self._t0:,.0f}{planned} s"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.lines += 1

    async def run(self, rec: Recorder) -> None:
        """Draw until cancelled."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(self.interval)
            self.draw(rec)

    def done(self) -> None:
        """End the terminal line."""
        if self.enabled and self.tty and self.lines:
            self.stream.write("\n")
            self.stream.flush()


# -- the replay -------------------------------------------------------------------------------


class Timing(msgspec.Struct, kw_only=True):
    """When the replay began and ended (wall ns)."""

    started_wall_ns: int
    ended_wall_ns: int


async def replay(
    plan: Plan,
    transport: Transport,
    *,
    pacing: Pacing,
    recorder: Recorder | None = None,
    quiet_s: float = DEFAULT_QUIET_S,
    progress: Progress | None = None,
    clock: Clock = time.time_ns,
) -> tuple[Recorder, Timing]:
    """Send ``plan`` through ``transport`` on schedule and record every outcome."""
    rec = recorder or Recorder(plan.n, clock=clock)
    # The plan's events live for the whole run: keep the collector from rescanning them
    # (a full collection over ~100k objects is a sender stall of tens of ms).
    gc.collect()
    gc.freeze()
    started = clock()
    await transport.open(rec)
    ticker: asyncio.Task[None] | None = None
    try:
        if progress is not None:
            ticker = asyncio.get_running_loop().create_task(progress.run(rec))
        await _send_all(plan, transport, rec, pacing, clock)
        await transport.flush()
        sent_done = clock()
        quiet_ns = int(quiet_s * 1e9)
        while rec.outstanding > 0:
            if clock() - max(sent_done, rec.last_outcome_ns) > quiet_ns:
                break
            await asyncio.sleep(0.02)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if progress is not None:
                progress.draw(rec)
                progress.done()
        await transport.close()
        gc.unfreeze()
    return rec, Timing(started_wall_ns=started, ended_wall_ns=clock())


async def _send_all(
    plan: Plan, transport: Transport, rec: Recorder, pacing: Pacing, clock: Clock
) -> None:
    offsets = pacing.offsets(plan.recv_rel)
    start = clock() + _LEAD_NS
    due: list[int] | None = None if offsets is None else (offsets + start).tolist()
    keys = plan.keys
    payload = plan.payload
    send = transport.send
    sent = rec.sent
    n = plan.n
    i = 0
    while i < n:
        now = clock()
        if due is not None and due[i] > now:
            await asyncio.sleep((due[i] - now) / 1e9)
            continue
        stop = min(n, i + _BURST)
        while i < stop and (due is None or due[i] <= now):
            intended = clock() if due is None else due[i]
            await send(i, keys[i], payload(i, intended))
            # Stamped once the transport took it: a send held up by backpressure is late.
            sent(i, intended, clock())
            i += 1
        await transport.end_burst()
        await asyncio.sleep(0)


def environment() -> dict[str, str]:
    """Where the run happened (host load matters on a shared machine)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count() or 0),
        "loadavg_at_end": load,
    }


def build_result(
    rec: Recorder,
    timing: Timing,
    *,
    config: RunConfig,
    slo: Slo,
    pacing: Pacing,
    lag_threshold_ms: float = DEFAULT_LAG_THRESHOLD_MS,
) -> RunResult:
    """All figures of a finished replay, with the verdict against ``slo``."""
    m = rec.finish(budget_ms=slo.budget_ms, lag_threshold_ms=lag_threshold_ms, paced=pacing.paced)
    verdict = evaluate(slo, latency=m.latency, completeness=m.completeness, sender=m.sender)
    notes = list(config.notes)
    if m.sender.behind:
        notes.append(
            f"the sender fell behind its schedule by up to {m.sender.lag.max_ms or 0:,.1f} ms "
            f"(threshold {lag_threshold_ms:g} ms): the harness, not only the service, was slow"
        )
    if not pacing.paced:
        notes.append("speed max: no schedule, so e2e latency counts from the actual send")
    if m.completeness.unmatched:
        notes.append(
            f"{m.completeness.unmatched:,} decisions named no input of this run "
            "(another producer on the input topic, or a service replaying older records)"
        )
    config = msgspec.structs.replace(
        config, budget_ms=slo.budget_ms, co_corrected=pacing.paced, notes=notes
    )
    return RunResult(
        config=config,
        started_wall_ns=timing.started_wall_ns,
        ended_wall_ns=timing.ended_wall_ns,
        send_span_s=m.send_span_s,
        sender=m.sender,
        completeness=m.completeness,
        throughput=m.throughput,
        latency=m.latency,
        stages=m.stages,
        batch_sizes=m.batch_sizes,
        series=m.series,
        verdict=verdict,
        env=environment(),
    )


def config_for(
    plan: Plan,
    pacing: Pacing,
    settings: Settings,
    transport: KafkaTransport | InProcessTransport | Transport,
    *,
    budget_source: str,
    quiet_s: float,
    prefix_s: float | None = None,
    limit: int | None = None,
    service: str = "",
) -> RunConfig:
    """The ``RunConfig`` of a replay of ``plan`` through ``transport``."""
    k = settings.kafka
    kafka = isinstance(transport, KafkaTransport)
    return RunConfig(
        feed=str(plan.path),
        feed_rows=plan.feed_rows,
        rows_replayed=plan.n,
        feed_span_s=plan.span_s,
        mode="kafka" if kafka else "in-process",
        service=service or transport.description,
        speed=pacing.label(),
        rate=pacing.rate,
        co_corrected=pacing.paced,
        bootstrap=k.bootstrap_servers if kafka else "",
        input_topic=getattr(transport, "topic", k.input_topics[0]),
        decision_topic=k.decision_topic,
        dlq_topic=k.dlq_topic,
        partitions=int(getattr(transport, "partitions", 0)),
        encoding=plan.encoding.value,
        decision_encoding=k.output_encoding,
        fetch_max_wait_ms=transport.fetch_max_wait_ms
        if isinstance(transport, KafkaTransport)
        else 0,
        source_ts=plan.source_ts,
        prefix_s=prefix_s,
        limit=limit,
        budget_source=budget_source,
        quiet_s=quiet_s,
    )


async def run_feed(
    plan: Plan,
    transport: Transport,
    *,
    pacing: Pacing,
    slo: Slo,
    config: RunConfig,
    quiet_s: float = DEFAULT_QUIET_S,
    lag_threshold_ms: float = DEFAULT_LAG_THRESHOLD_MS,
    progress: Progress | None = None,
) -> RunResult:
    """Replay ``plan`` through ``transport`` and return every figure with the verdict."""
    rec, timing = await replay(plan, transport, pacing=pacing, quiet_s=quiet_s, progress=progress)
    return build_result(
        rec, timing, config=config, slo=slo, pacing=pacing, lag_threshold_ms=lag_threshold_ms
    )


# -- CLI --------------------------------------------------------------------------------------


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


def _run_cli(args: argparse.Namespace) -> int:
    settings = settings_for(
        args.config,
        bootstrap=args.bootstrap,
        topic=args.topic,
        decision_topic=args.decision_topic,
        dlq_topic=args.dlq_topic,
        encoding=args.encoding,
    )
    pacing = Pacing.parse(args.speed, args.rate)
    if args.slo is not None:
        slo = load_slo(args.slo)
        budget_source = f"SLO {args.slo}"
    elif args.budget_ms is not None:
        slo = Slo.default(args.budget_ms)
        budget_source = "--budget-ms"
    else:
        slo = Slo.default(settings.scheduler.budget_ms)
        budget_source = "the service's scheduler.budget_ms (no SLO file)"
    plan = load_plan(
        args.feed,
        encoding=settings.kafka.input_encoding,
        limit=args.limit,
        seconds=args.seconds,
        source_ts=args.source_ts,
    )
    transport: KafkaTransport | InProcessTransport
    if args.in_process:
        bundle, engine, head, spec = load_model(settings)
        transport = InProcessTransport(
            settings,
            engine=engine,
            head=head,
            spec=spec,
            model_version=bundle.metadata.model_version,
            partitions=args.partitions,
        )
    else:
        transport = KafkaTransport(
            settings.kafka, partitions=args.partitions, fetch_max_wait_ms=args.fetch_max_wait_ms
        )
    config = config_for(
        plan,
        pacing,
        settings,
        transport,
        budget_source=budget_source,
        quiet_s=args.quiet_s,
        prefix_s=args.seconds,
        limit=args.limit,
    )
    planned = plan.span_s / pacing.speed if pacing.speed else None
    if pacing.rate:
        planned = plan.n / pacing.rate
    progress = Progress(plan.n, planned, enabled=not args.no_progress)
    result = asyncio.run(
        run_feed(
            plan,
            transport,
            pacing=pacing,
            slo=slo,
            config=config,
            quiet_s=args.quiet_s,
            lag_threshold_ms=args.max_sender_lag_ms,
            progress=progress,
        )
    )
    print(format_summary(result))
    assert result.verdict is not None
    print(format_verdict(result.verdict))
    if args.out is not None:
        print(f"results: {write_result(result, args.out)}")
    if args.html is not None:
        print(f"report: {write_html(result, args.html)}")
    return 0 if result.verdict.passed else 1


def register_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay run FEED ...``: replay a feed against the service, judge it by an SLO."""
    p = sub.add_parser(
        "run",
        help="replay a feed open-loop into the service and measure every decision",
        description="Replay FEED at its recorded pace x SPEED (or a fixed rate) into the "
        "service through Kafka (or in-process), match every decision to its input, and "
        "judge the run by an SLO file. Exits 1 when the SLO is violated.",
    )
    p.add_argument("feed", type=Path, metavar="FEED")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka (default: from settings)")
    p.add_argument(
        "--speed", default="1", metavar="X|max", help="recorded pace times X, or max (default 1)"
    )
    p.add_argument("--rate", type=float, metavar="N", help="a fixed rate of N events/s instead")
    p.add_argument("--slo", type=Path, metavar="slo.toml", help="SLO file (default: none lost)")
    p.add_argument("--out", type=Path, metavar="results.json", help="write the results here")
    p.add_argument("--html", type=Path, metavar="report.html", help="write the HTML report here")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="no broker: replay straight into the pipeline (the service's own overhead)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="weir.toml",
        help="service settings (topics, encodings, "
        "bundle for --in-process); WEIR_* variables apply too",
    )
    p.add_argument("--topic", help="input topic (default: the settings' first input topic)")
    p.add_argument("--decision-topic", help="decision topic (default: from settings)")
    p.add_argument("--dlq-topic", help="dead-letter topic (default: from settings)")
    p.add_argument(
        "--encoding",
        choices=[e.value for e in Encoding],
        help="payload encoding on the input topic (default: the settings' input_encoding)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=1,
        metavar="N",
        help="partitions of topics this creates (in-process: partitions emulated; default 1)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--seconds", type=float, metavar="S", help="replay the first S s only")
    size.add_argument("--limit", type=int, metavar="N", help="replay the first N events only")
    p.add_argument("--budget-ms", type=float, metavar="MS", help="e2e budget without an SLO file")
    p.add_argument(
        "--quiet-s",
        type=float,
        default=DEFAULT_QUIET_S,
        metavar="S",
        help=f"stop waiting after S s without a decision (default {DEFAULT_QUIET_S:g})",
    )
    p.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        metavar="MS",
        help="the harness's decision consumer (default: settings' kafka.fetch_max_wait_ms)",
    )
    p.add_argument(
        "--source-ts",
        choices=SOURCE_TS_MODES,
        default="shift",
        help="shift payload source times to now (default) or keep them",
    )
    p.add_argument(
        "--max-sender-lag-ms",
        type=float,
        default=DEFAULT_LAG_THRESHOLD_MS,
        metavar="MS",
        help=f"flag the run when the sender falls behind by more (default "
        f"{DEFAULT_LAG_THRESHOLD_MS:g})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run_cli)
