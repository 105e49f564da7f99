"""Prometheus metrics of one worker, kept off the hot path.

Each ``Runtime`` owns one :class:`Metrics` with its own ``CollectorRegistry`` (never the
process-global one, so two workers in one process, or a test, never share series).

Cost model
----------
- Counters (events in, decisions, dead letters, misses) are the pipeline's plain ints
  (``Pipeline.counters``), read by a custom ``Collector`` at scrape time: zero hot-path cost.
- Gauges (queue depth, lag, paused partitions, ready, engine profile) are read at scrape
  time too; consumer lag is refreshed once a second by :meth:`Metrics.tick`.
- Histograms are :class:`LoopHistogram`: owned by the event loop, no lock, an observation
  is one ``bisect`` and two additions. The pipeline calls the observer twice per *batch*
  (:meth:`Metrics.on_batch`, :meth:`Metrics.on_published`); the per-event stage latencies
  of that batch are observed there in one loop. Scrapes run on the same loop (the
  ``service.http`` server), so a scrape never sees a half-made observation.

Every latency histogram uses :data:`LATENCY_BUCKETS_S` (10 µs … 10 s, 1-2.5-5 steps): the
client library's defaults start at 5 ms, coarser than the work measured here.

Exported metrics (all prefixed ``weir_``; see :data:`METRIC_NAMES`)::

    events_total{topic,kind}            counter  records in (kind "invalid": dead-lettered)
    decisions_total{status}             counter  decisions out
    dead_letters_total{reason}          counter  dead-letter records
    deadline_misses_total{outcome}      counter  expired + shed + late (the SLO misses)
    engine_errors_total                 counter
    produce_errors_total                counter
    rebalances_total                    counter
    task_deaths_total{task}             counter  background tasks that died (each stops
                                                 the worker)
    commits_total                       counter
    consumer_lag_records{topic,partition}  gauge  highwater - position
    consumer_lag_seconds{topic,partition}  gauge  now - last consumed record's timestamp
    queued_events                       gauge    events in the deadline queue
    paused_partitions                   gauge
    assigned_partitions                 gauge
    ready                               gauge    1 when /readyz answers 200
    engine_profile_seconds{bucket,quantile}  gauge  the scheduler's latency profile
    engine_profile_samples{bucket}      gauge
    info{model_version,engine,device,precision,worker}  gauge (always 1)
    batch_size_rows                     histogram  rows per engine batch
    queue_wait_seconds                  histogram  dispatch - ingest, per event
    inference_seconds                   histogram  engine call, per batch (per bucket:
                                                   the engine_profile gauges)
    publish_seconds                     histogram  inference done -> last decision handed
                                                   to the producer, per batch
    end_to_end_seconds{since}           histogram  decision handed to the producer - the
                                                   event's source ("source") or Kafka record
                                                   ("kafka") timestamp, per inferred event
    commit_seconds                      histogram  offset commit (or transaction commit)
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from engines.errors import EngineError

if TYPE_CHECKING:
    from engines.base import Engine
    from service.pipeline import Pipeline
    from service.scheduler.base import Item
    from service.settings import Settings

Clock = Callable[[], int]
TP = tuple[str, int]

LATENCY_BUCKETS_S: tuple[float, ...] = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds of every latency histogram, in seconds."""

PROFILE_QUANTILES: tuple[tuple[str, str], ...] = (
    ("0.5", "p50_ns"),
    ("0.99", "p99_ns"),
    ("0.999", "p999_ns"),
)

METRIC_NAMES: tuple[str, ...] = (
    "weir_assigned_partitions",
    "weir_batch_size_rows",
    "weir_commit_seconds",
    "weir_commits",
    "weir_consumer_lag_records",
    "weir_consumer_lag_seconds",
    "weir_dead_letters",
    "weir_deadline_misses",
    "weir_decisions",
    "weir_end_to_end_seconds",
    "weir_engine_errors",
    "weir_engine_profile_samples",
    "weir_engine_profile_seconds",
    "weir_events",
    "weir_inference_seconds",
    "weir_info",
    "weir_paused_partitions",
    "weir_produce_errors",
    "weir_publish_seconds",
    "weir_queue_wait_seconds",
    "weir_queued_events",
    "weir_ready",
    "weir_rebalances",
    "weir_task_deaths",
)
"""Family names as the client library knows them (counters without ``_total``)."""

LIVE_SERIES: tuple[str, ...] = (
    "t",
    "events_per_s",
    "decisions_per_s",
    "misses_per_s",
    "dead_per_s",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "e2e_p999_ms",
    "e2e_source_p99_ms",
    "queue_wait_p99_ms",
    "inference_p99_ms",
    "batch_mean",
    "batch_p99",
    "lag_records",
    "lag_seconds",
    "queued",
)
"""The per-second series ``/live`` serves, in order."""


class LoopHistogram:
    """A histogram owned by one event loop: no lock; ``observe`` is a bisect and two adds.

    Values are integers in the unit of ``bounds`` (ns for latencies, rows for batch sizes);
    ``scale`` turns them into the exported unit (1e-9: ns to seconds).
    """

    __slots__ = ("bounds", "counts", "les", "scale", "sum")

    def __init__(self, bounds: Sequence[int], scale: float = 1.0) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0
        self.scale = scale
        self.les = [repr(round(b * scale, 12)) for b in self.bounds]

    @classmethod
    def seconds(cls, bounds_s: Sequence[float] = LATENCY_BUCKETS_S) -> LoopHistogram:
        """A latency histogram observed in ns and exported in seconds."""
        return cls([round(b * 1e9) for b in bounds_s], 1e-9)

    def observe(self, value: int) -> None:
        """Count one value (negative values count as 0)."""
        if value < 0:
            value = 0
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs in exposition form, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        acc = 0
        for le, c in zip(self.les, self.counts, strict=False):
            acc += c
            out.append((le, acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out

    def quantile(self, q: float, since: Sequence[int] | None = None) -> float | None:
        """The ``q`` quantile in exported units over the observations made after ``since``
        (a copy of ``counts`` taken earlier; all when ``None``); ``None`` without any."""
        counts = self.counts
        if since is not None:
            counts = [a - b for a, b in zip(counts, since, strict=True)]
        return _quantile(self.bounds, self.scale, counts, q)


def _quantile(bounds: Sequence[int], scale: float, counts: Sequence[int], q: float) -> float | None:
    """Interpolate the ``q`` quantile inside its bucket, as PromQL ``histogram_quantile``."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    acc = 0
    for i, c in enumerate(counts):
        if c and acc + c >= rank:
            if i == len(bounds):  # the +Inf bucket: the highest finite bound
                return bounds[-1] * scale
            lo = bounds[i - 1] if i > 0 else 0
            return (lo + (bounds[i] - lo) * (rank - acc) / c) * scale
        acc += c
    return bounds[-1] * scale  # pragma: no cover - rank <= total


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
    """What the metrics read from an ``AIOKafkaConsumer``."""

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
        ...


class RuntimeView(Protocol):
    """The parts of a worker the metrics, ``/readyz`` and ``/status`` read (``Runtime`` has them)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def pipeline(self) -> Pipeline | None: ...

    @property
    def consumer(self) -> Any: ...

    @property
    def ready(self) -> bool: ...

    @property
    def rebalances(self) -> int: ...

    @property
    def commits(self) -> int: ...

    @property
    def model_version(self) -> str: ...

    @property
    def worker_index(self) -> int: ...


class InMemoryView:
    """A ``RuntimeView`` over a pipeline served without Kafka (replay in process, tests)."""

    def __init__(
        self, settings: Settings, engine: Engine, pipeline: Pipeline | None, model_version: str
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.pipeline = pipeline
        self.consumer: Any = None
        self.ready = True
        self.rebalances = 0
        self.commits = 0
        self.model_version = model_version
        self.worker_index = 0


class ConsumerLag:
    """Per-partition consumer lag, in records and in seconds.

    Records: ``highwater - position`` (both "next offset"). Seconds: when behind, now
    minus the Kafka timestamp of the last record consumed from the partition (the age of
    the newest record already taken: a lower bound of the oldest waiting one's); 0 when
    caught up. ``seen`` is called once per fetched partition batch; ``refresh`` once a
    second, off the hot path.
    """

    def __init__(self, wall: Clock = time.time_ns) -> None:
        self._wall = wall
        self._last_ts_ms: dict[TP, int] = {}
        self.lag: dict[TP, tuple[int, float]] = {}

    def seen(self, tp: Any, records: Sequence[Any]) -> None:
        """Note the last record of a fetched batch of partition ``tp``."""
        if records:
            self._last_ts_ms[(tp.topic, tp.partition)] = records[-1].timestamp

    async def refresh(self, consumer: ConsumerLike | None) -> None:
        """Recompute the lag of every assigned partition (bounded wait on positions)."""
        if consumer is None:
            self.lag = {}
            return
        now_ms = self._wall() / 1e6
        lag: dict[TP, tuple[int, float]] = {}
        assigned = list(consumer.assignment())
        for tp in assigned:
            key = (tp.topic, tp.partition)
            try:
                high = consumer.highwater(tp)
                pos = await asyncio.wait_for(consumer.position(tp), 0.2)
            except (AssertionError, KafkaError, TimeoutError):
                continue  # revoked meanwhile, or no position yet
            if high is None:
                continue  # nothing fetched from it yet
            behind = max(0, high - pos)
            ts = self._last_ts_ms.get(key, -1)
            secs = max(0.0, (now_ms - ts) / 1e3) if behind and ts >= 0 else 0.0
            lag[key] = (behind, secs)
        keep = {(tp.topic, tp.partition) for tp in assigned}
        self._last_ts_ms = {k: t for k, t in self._last_ts_ms.items() if k in keep}
        self.lag = lag


class _Live:
    """Per-second figures for ``/live``: a ring of the last ``points`` seconds."""

    def __init__(self, points: int) -> None:
        self.rows: deque[tuple[float | None, ...]] = deque(maxlen=points)
        self.prev: dict[str, Any] = {}

    def series(self) -> dict[str, list[float | None]]:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(LIVE_SERIES)
        return {name: list(col) for name, col in zip(LIVE_SERIES, cols, strict=True)}


class Metrics:
    """One worker's metrics: registry, loop-owned histograms, lag, live series.

    Also the pipeline's batch observer (``on_batch`` / ``on_published``). Everything runs
    on the worker's event loop; nothing here is thread-safe.
    """

    def __init__(
        self,
        view: RuntimeView,
        *,
        wall: Clock = time.time_ns,
        live_points: int = 300,
    ) -> None:
        self.view = view
        self._wall = wall
        self.registry = CollectorRegistry(auto_describe=False)
        self.queue_wait = LoopHistogram.seconds()
        self.inference = LoopHistogram.seconds()
        self.publish = LoopHistogram.seconds()
        self.e2e_source = LoopHistogram.seconds()
        self.e2e_kafka = LoopHistogram.seconds()
        self.commit = LoopHistogram.seconds()
        self.batch_rows = LoopHistogram(view.engine.buckets)
        self.lag = ConsumerLag(wall)
        self._live = _Live(live_points)
        self._stash_kafka: list[int | None] = []
        self._stash_source: list[int | None] = []
        self._done_ns = 0
        self._interval_s = 1.0
        self._collector = _Collector(self)
        self.registry.register(self._collector)

    # -- the pipeline's observer (once per batch each) ------------------------------------

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
        """A batch ran: observe its queue waits, size and inference time; keep its
        events' timestamps for :meth:`on_published` (slots are reused after publishing)."""
        qw = self.queue_wait
        bounds = qw.bounds
        counts = qw.counts
        total = 0
        ks = self._stash_kafka
        ss = self._stash_source
        ks.clear()
        ss.clear()
        for item in items:
            slot = item.payload
            w = dispatch_ns - ingest_ns[slot]
            counts[bisect_left(bounds, w)] += 1
            total += w
            ks.append(kafka_ts_ns[slot])
            ss.append(source_ts_ns[slot])
        qw.sum += total
        self.batch_rows.observe(len(items))
        self.inference.observe(done_ns - dispatch_ns)
        self._done_ns = done_ns

    def on_published(self, end_ns: int, mono_to_wall_ns: int) -> None:
        """The batch's decisions were handed to the producer at monotonic ``end_ns``."""
        self.publish.observe(end_ns - self._done_ns)
        end_wall = end_ns + mono_to_wall_ns
        for stash, h in (
            (self._stash_kafka, self.e2e_kafka),
            (self._stash_source, self.e2e_source),
        ):
            bounds = h.bounds
            counts = h.counts
            total = 0
            for ts in stash:
                if ts is not None:
                    v = end_wall - ts
                    if v < 0:
                        v = 0
                    counts[bisect_left(bounds, v)] += 1
                    total += v
            h.sum += total

    def observe_commit(self, ns: int) -> None:
        """One successful offset (or transaction) commit took ``ns``."""
        self.commit.observe(ns)

    # -- scrape-time reads ------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """``render``, one metric family at a time with a loop turn between families, so a
        scrape stalls the hot path for one family's formatting, not the whole page's."""
        parts = []
        for family in self._collector.collect():
            parts.append(generate_latest(_One(family)))
            await asyncio.sleep(0)
        return b"".join(parts)

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker is ready (engine warm, partitions assigned) and why not."""
        v = self.view
        pipe = v.pipeline
        try:
            v.engine.profile  # noqa: B018 - raises until warmed up
        except EngineError:
            return False, "engine not warmed up"
        if pipe is None:
            return False, "not started: connecting to Kafka"
        if pipe.failed is not None:
            return False, str(pipe.failed)
        if not v.ready:
            return False, "rebalancing: no partitions assigned yet"
        consumer = v.consumer
        if consumer is not None and not consumer.assignment():
            return False, "no partitions assigned (more consumers than partitions?)"
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is not None and getattr(coordinator, "coordinator_id", 0) is None:
            # aiokafka drops the coordinator when the broker goes away; it is found again
            # once the broker answers (there is no public accessor for this).
            return False, "broker unreachable: no group coordinator"
        return True, "ready"

    def misses(self) -> dict[str, int]:
        """Deadline misses so far by outcome: expired, shed, late."""
        pipe = self.view.pipeline
        if pipe is None:
            return {"expired": 0, "shed": 0, "late": 0}
        c = pipe.counters
        d = {s.value: n for s, n in c.decisions.items()}
        return {"expired": d.get("expired", 0), "shed": d.get("shed", 0), "late": c.late}

    def status(self) -> dict[str, Any]:
        """The ``/status`` document: settings (redacted), engine, assignment, figures."""
        v = self.view
        ok, reason = self.readiness()
        engine: dict[str, Any] = msgspec.to_builtins(v.engine.describe())
        try:
            profile = [msgspec.to_builtins(s) for s in v.engine.profile.stats()]
        except EngineError:
            profile = []
        pipe = v.pipeline
        counters: dict[str, Any] = {}
        if pipe is not None:
            c = pipe.counters
            counters = {
                "events_in": c.events_in,
                "decisions": {s.value: n for s, n in c.decisions.items()},
                "dead_letters": dict(c.dead),
                "batches": c.batches,
                "batch_rows": c.batch_rows,
                "engine_errors": c.engine_errors,
                "produce_errors": c.produce_errors,
                "late": c.late,
                "queued": pipe.queued,
            }
        consumer = v.consumer
        paused = {(tp.topic, tp.partition) for tp in consumer.paused()} if consumer else set()
        assigned = (
            sorted((tp.topic, tp.partition) for tp in consumer.assignment()) if consumer else []
        )
        assignment = [
            {
                "topic": t,
                "partition": p,
                "paused": (t, p) in paused,
                "lag_records": self.lag.lag.get((t, p), (None, None))[0],
                "lag_seconds": self.lag.lag.get((t, p), (None, None))[1],
            }
            for t, p in assigned
        ]
        live = self._live.series()
        recent = {k: col[-10:] for k, col in live.items()}
        return {
            "worker": v.worker_index,
            "model_version": v.model_version,
            "ready": {"ok": ok, "reason": reason},
            "rebalances": v.rebalances,
            "commits": v.commits,
            "engine": engine,
            "profile": profile,
            "assignment": assignment,
            "counters": counters,
            "misses": self.misses(),
            "recent": recent,
            "settings": v.settings.redacted(),
        }

    def live(self) -> dict[str, Any]:
        """The ``/live`` document: per-second series, oldest first."""
        return {"interval_s": self._interval_s, "series": self._live.series()}

    # -- once a second -------------------------------------------------------------------------

    async def tick(self) -> None:
        """Refresh consumer lag and append one point to the live series."""
        await self.lag.refresh(self.view.consumer)
        self._sample()

    async def run_sampler(self, interval_s: float = 1.0) -> None:
        """Call :meth:`tick` every ``interval_s`` until cancelled."""
        self._interval_s = interval_s
        while True:
            await asyncio.sleep(interval_s)
            await self.tick()

    def _sample(self) -> None:
        pipe = self.view.pipeline
        now = self._wall() / 1e9
        c = pipe.counters if pipe is not None else None
        cur: dict[str, Any] = {
            "t": now,
            "events": c.events_in if c else 0,
            "decisions": sum(c.decisions.values()) if c else 0,
            "misses": sum(self.misses().values()),
            "dead": sum(c.dead.values()) if c else 0,
            "e2e": list(self.e2e_kafka.counts),
            "e2e_source": list(self.e2e_source.counts),
            "queue_wait": list(self.queue_wait.counts),
            "inference": list(self.inference.counts),
            "batch": list(self.batch_rows.counts),
            "batch_sum": self.batch_rows.sum,
        }
        prev = self._live.prev
        self._live.prev = cur
        if not prev:
            return
        dt = max(now - float(prev["t"]), 1e-3)

        def rate(k: str) -> float:
            return round(float(cur[k] - prev[k]) / dt, 3)

        def ms(k: str, q: float) -> float | None:
            delta = [a - b for a, b in zip(cur[k], prev[k], strict=True)]
            got = _quantile(self.queue_wait.bounds, 1e-9, delta, q)
            return None if got is None else round(got * 1e3, 4)

        batches = sum(cur["batch"]) - sum(prev["batch"])
        lags = self.lag.lag.values()
        self._live.rows.append(
            (
                round(now, 3),
                rate("events"),
                rate("decisions"),
                rate("misses"),
                rate("dead"),
                ms("e2e", 0.5),
                ms("e2e", 0.99),
                ms("e2e", 0.999),
                ms("e2e_source", 0.99),
                ms("queue_wait", 0.99),
                ms("inference", 0.99),
                round((cur["batch_sum"] - prev["batch_sum"]) / batches, 2) if batches else None,
                self.batch_rows.quantile(0.99, prev["batch"]),
                float(sum(r for r, _ in lags)),
                round(max((s for _, s in lags), default=0.0), 3),
                float(pipe.queued) if pipe is not None else 0.0,
            )
        )


def _histogram(
    name: str, doc: str, h: LoopHistogram, labels: Mapping[str, str] | None = None
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=list(labels or {}))
    fam.add_metric(list((labels or {}).values()), h.buckets(), h.sum * h.scale)
    return fam


class _One:
    """A registry stand-in holding one family (what ``generate_latest`` needs)."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


class _Collector(Collector):
    """Reads everything at scrape time (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        m = self._m
        v = m.view
        yield from self._counters(m, v)
        yield from self._gauges(m, v)
        yield _histogram("weir_batch_size_rows", "Rows per engine batch.", m.batch_rows)
        yield _histogram(
            "weir_queue_wait_seconds", "Per event: dispatch minus ingest.", m.queue_wait
        )
        yield _histogram("weir_inference_seconds", "Per batch: engine call time.", m.inference)
        yield _histogram(
            "weir_publish_seconds",
            "Per batch: inference done to the last decision handed to the producer.",
            m.publish,
        )
        e2e = HistogramMetricFamily(
            "weir_end_to_end_seconds",
            "Per inferred event: decision handed to the producer minus the event's source "
            "(since=source) or Kafka record (since=kafka) timestamp.",
            labels=["since"],
        )
        for since, h in (("source", m.e2e_source), ("kafka", m.e2e_kafka)):
            e2e.add_metric([since], h.buckets(), h.sum * h.scale)
        yield e2e
        yield _histogram("weir_commit_seconds", "Offset or transaction commit time.", m.commit)

    @staticmethod
    def _counters(m: Metrics, v: RuntimeView) -> Iterable[Metric]:
        pipe = v.pipeline
        events = CounterMetricFamily(
            "weir_events", "Records consumed, by topic and event kind.", labels=["topic", "kind"]
        )
        decisions = CounterMetricFamily(
            "weir_decisions", "Decisions published, by status.", labels=["status"]
        )
        dead = CounterMetricFamily(
            "weir_dead_letters", "Records sent to the dead-letter topic.", labels=["reason"]
        )
        engine_errors = CounterMetricFamily("weir_engine_errors", "Engine calls that failed.")
        produce_errors = CounterMetricFamily("weir_produce_errors", "Produce requests that failed.")
        if pipe is not None:
            c = pipe.counters
            for (topic, kind), n in sorted(c.kinds.items(), key=_kind_key):
                events.add_metric([topic, _kind_name(kind)], n)
            for status, n in c.decisions.items():
                decisions.add_metric([status.value], n)
            for reason, n in sorted(c.dead.items()):
                dead.add_metric([reason], n)
            engine_errors.add_metric([], c.engine_errors)
            produce_errors.add_metric([], c.produce_errors)
        misses = CounterMetricFamily(
            "weir_deadline_misses",
            "SLO misses: expired, shed, or inferred past the deadline (late).",
            labels=["outcome"],
        )
        for outcome, n in m.misses().items():
            misses.add_metric([outcome], n)
        yield from (events, decisions, dead, misses, engine_errors, produce_errors)
        yield CounterMetricFamily("weir_rebalances", "Partition revocations.", value=v.rebalances)
        yield CounterMetricFamily("weir_commits", "Successful commits.", value=v.commits)
        yield _task_deaths(pipe)

    @staticmethod
    def _gauges(m: Metrics, v: RuntimeView) -> Iterable[Metric]:
        pipe = v.pipeline
        consumer = v.consumer
        lag_r = GaugeMetricFamily(
            "weir_consumer_lag_records",
            "Highwater minus position, per partition.",
            labels=["topic", "partition"],
        )
        lag_s = GaugeMetricFamily(
            "weir_consumer_lag_seconds",
            "Now minus the last consumed record's timestamp, while behind (0 when caught up).",
            labels=["topic", "partition"],
        )
        for (topic, part), (recs, secs) in sorted(m.lag.lag.items()):
            lag_r.add_metric([topic, str(part)], recs)
            lag_s.add_metric([topic, str(part)], secs)
        yield lag_r
        yield lag_s
        yield GaugeMetricFamily(
            "weir_queued_events",
            "Events waiting in the deadline queue.",
            value=pipe.queued if pipe is not None else 0,
        )
        yield GaugeMetricFamily(
            "weir_paused_partitions",
            "Partitions paused by backpressure.",
            value=len(consumer.paused()) if consumer is not None else 0,
        )
        yield GaugeMetricFamily(
            "weir_assigned_partitions",
            "Partitions assigned to this worker.",
            value=len(consumer.assignment()) if consumer is not None else 0,
        )
        yield GaugeMetricFamily(
            "weir_ready", "1 when /readyz answers 200.", value=1 if m.readiness()[0] else 0
        )
        prof = GaugeMetricFamily(
            "weir_engine_profile_seconds",
            "The engine latency profile the scheduler plans with, per batch bucket.",
            labels=["bucket", "quantile"],
        )
        samples = GaugeMetricFamily(
            "weir_engine_profile_samples",
            "Samples behind each bucket's profile.",
            labels=["bucket"],
        )
        try:
            stats = v.engine.profile.stats()
        except EngineError:
            stats = []
        for s in stats:
            for q, attr in PROFILE_QUANTILES:
                prof.add_metric([str(s.bucket), q], getattr(s, attr) / 1e9)
            samples.add_metric([str(s.bucket)], s.samples)
        yield prof
        yield samples
        info = v.engine.describe()
        fam = GaugeMetricFamily(
            "weir_info",
            "What this worker runs (value 1).",
            labels=["model_version", "engine", "device", "precision", "worker"],
        )
        fam.add_metric(
            [v.model_version, info.kind, info.device, info.precision, str(v.worker_index)], 1
        )
        yield fam


def _task_deaths(pipe: Pipeline | None) -> Metric:
    fam = CounterMetricFamily(
        "weir_task_deaths", "Background tasks that died (each stops the worker).", labels=["task"]
    )
    for task, n in sorted(pipe.tasks.deaths.items()) if pipe is not None else ():
        fam.add_metric([task], n)
    return fam


def _kind_name(kind: Any) -> str:
    if kind is None:
        return "invalid"
    tag = getattr(getattr(kind, "__struct_config__", None), "tag", None)
    return str(tag) if tag is not None else str(kind)


def _kind_key(item: tuple[tuple[str, Any], int]) -> tuple[str, str]:
    (topic, kind), _ = item
    return topic, _kind_name(kind)
