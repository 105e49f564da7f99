"""The Prometheus collector of one worker: every ``weir_`` family, read at scrape time.

Nothing here is on the hot path. Counters are the pipeline's plain ints
(``Pipeline.counters``), gauges are read from the worker (``service.view.RuntimeView``)
and the consumer lag, histograms are the loop-owned stage histograms
(``service.stages.StageHistograms``); the scrape runs on the same event loop as the
pipeline, so it never sees a half-made observation.

Exported metrics (all prefixed ``weir_``; see :data:`METRIC_NAMES`)::

    events_total{topic,kind}            counter  records in (kind "invalid": dead-lettered)
    decisions_total{status}             counter  decisions out
    dead_letters_total{reason}          counter  dead-letter records
    deadline_misses_total{outcome}      counter  expired + shed + late (the SLO misses)
    engine_errors_total                 counter
    produce_errors_total                counter
    trace_context_malformed_total       counter  input records whose traceparent was
                                                 malformed (not forwarded)
    model_loads_total{result}           counter  model versions "loaded" (swapped in) or
                                                 "refused" (service.models)
    shadow_batches_total{result}        counter  shadow batches "run", "dropped" (behind),
                                                 "failed" (service.shadow)
    rebalances_total                    counter
    superseded_records_total            counter  records left undecided because their
                                                 partition was revoked (or rewound) while
                                                 their fetch was ingested: another member
                                                 (or the next fetch) decides them
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
    gc_pause_seconds{generation}        histogram  each garbage collection of the process
                                                   (service.pauses)
    event_loop_lag_seconds              histogram  how late the loop woke a 10 ms sleep
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from engines.errors import EngineError
from service.histogram import LoopHistogram
from service.lag import ConsumerLag
from service.pauses import GcPauses, LoopLag
from service.stages import StageHistograms
from service.status import misses, readiness
from service.view import RuntimeView

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
    "weir_event_loop_lag_seconds",
    "weir_events",
    "weir_gc_pause_seconds",
    "weir_inference_seconds",
    "weir_info",
    "weir_model_loads",
    "weir_paused_partitions",
    "weir_produce_errors",
    "weir_publish_seconds",
    "weir_queue_wait_seconds",
    "weir_queued_events",
    "weir_ready",
    "weir_rebalances",
    "weir_shadow_batches",
    "weir_superseded_records",
    "weir_task_deaths",
    "weir_trace_context_malformed",
)
"""Family names as the client library knows them (counters without ``_total``)."""


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


async def render_async(collector: Collector) -> bytes:
    """``generate_latest`` of ``collector``, one metric family at a time with a loop turn
    between families, so a scrape stalls the hot path for one family's formatting, not the
    whole page's."""
    parts = []
    for family in collector.collect():
        parts.append(generate_latest(_One(family)))
        await asyncio.sleep(0)
    return b"".join(parts)


class WeirCollector(Collector):
    """Reads every family of one worker at scrape time (see the module docstring)."""

    def __init__(
        self,
        view: RuntimeView,
        stages: StageHistograms,
        lag: ConsumerLag,
        *,
        gc: GcPauses | None = None,
        loop_lag: LoopLag | None = None,
    ) -> None:
        self._view = view
        self._stages = stages
        self._lag = lag
        self._gc = gc
        self._loop_lag = loop_lag

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        st = self._stages
        v = self._view
        yield from self._counters(v)
        yield from self._gauges(v, self._lag)
        yield _histogram("weir_batch_size_rows", "Rows per engine batch.", st.batch_rows)
        yield _histogram(
            "weir_queue_wait_seconds", "Per event: dispatch minus ingest.", st.queue_wait
        )
        yield _histogram("weir_inference_seconds", "Per batch: engine call time.", st.inference)
        yield _histogram(
            "weir_publish_seconds",
            "Per batch: inference done to the last decision handed to the producer.",
            st.publish,
        )
        e2e = HistogramMetricFamily(
            "weir_end_to_end_seconds",
            "Per inferred event: decision handed to the producer minus the event's source "
            "(since=source) or Kafka record (since=kafka) timestamp.",
            labels=["since"],
        )
        for since, h in (("source", st.e2e_source), ("kafka", st.e2e_kafka)):
            e2e.add_metric([since], h.buckets(), h.sum * h.scale)
        yield e2e
        yield _histogram("weir_commit_seconds", "Offset or transaction commit time.", st.commit)
        if self._gc is not None:
            pauses = HistogramMetricFamily(
                "weir_gc_pause_seconds",
                "Each garbage collection of the process, by generation.",
                labels=["generation"],
            )
            for gen, p in self._gc.by_generation.items():
                pauses.add_metric([str(gen)], p.hist.buckets(), p.hist.sum * p.hist.scale)
            yield pauses
        if self._loop_lag is not None:
            yield _histogram(
                "weir_event_loop_lag_seconds",
                "How late the event loop woke the lag probe's sleep.",
                self._loop_lag.lag.hist,
            )

    @staticmethod
    def _counters(v: RuntimeView) -> Iterable[Metric]:
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
        loads = CounterMetricFamily(
            "weir_model_loads", "Model versions swapped in or refused.", labels=["result"]
        )
        shadow = CounterMetricFamily(
            "weir_shadow_batches",
            "Batches of the shadow candidate: run, dropped (it was behind) or failed.",
            labels=["result"],
        )
        produce_errors = CounterMetricFamily("weir_produce_errors", "Produce requests that failed.")
        superseded = CounterMetricFamily(
            "weir_superseded_records",
            "Records left undecided: their partition was revoked or rewound mid-fetch.",
        )
        malformed = CounterMetricFamily(
            "weir_trace_context_malformed",
            "Input records whose traceparent header was malformed (not forwarded).",
        )
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
            malformed.add_metric([], c.trace_malformed)
            superseded.add_metric([], c.superseded)
            for result, n in c.model_loads.items():
                loads.add_metric([result], n)
            for result, n in c.shadow.items():
                shadow.add_metric([result], n)
        missed = CounterMetricFamily(
            "weir_deadline_misses",
            "SLO misses: expired, shed, or inferred past the deadline (late).",
            labels=["outcome"],
        )
        for outcome, n in misses(v).items():
            missed.add_metric([outcome], n)
        yield from (events, decisions, dead, missed, engine_errors, produce_errors)
        yield from (loads, shadow, malformed, superseded)
        yield CounterMetricFamily("weir_rebalances", "Partition revocations.", value=v.rebalances)
        yield CounterMetricFamily("weir_commits", "Successful commits.", value=v.commits)
        yield _task_deaths(v)

    @staticmethod
    def _gauges(v: RuntimeView, lag: ConsumerLag) -> Iterable[Metric]:
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
        for (topic, part), (recs, secs) in sorted(lag.lag.items()):
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
            "weir_ready", "1 when /readyz answers 200.", value=1 if readiness(v)[0] else 0
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


def _task_deaths(v: RuntimeView) -> Metric:
    fam = CounterMetricFamily(
        "weir_task_deaths", "Background tasks that died (each stops the worker).", labels=["task"]
    )
    pipe = v.pipeline
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
