"""Metrics: names, types, labels, sub-millisecond buckets, per-batch observation, lag, readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bench.peers.opsprobe import parse_page
from engines.fake import FakeEngine
from engines.head import Head
from schemas.features import FeatureSpec, Task
from service.collector import METRIC_NAMES
from service.histogram import LATENCY_BUCKETS_S, LoopHistogram
from service.memory import MemoryRecord
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import Settings, load_settings
from service.view import InMemoryView
from tests.pipeline_io import TOPIC, quote_record, run_pipeline

WINDOW = 4  # the window of the conftest fixtures

EXPECTED_TYPES = {
    "weir_assigned_partitions": ("gauge", set()),
    "weir_batch_size_rows": ("histogram", set()),
    "weir_commit_seconds": ("histogram", set()),
    "weir_commits": ("counter", set()),
    "weir_consumer_lag_records": ("gauge", {"topic", "partition"}),
    "weir_consumer_lag_seconds": ("gauge", {"topic", "partition"}),
    "weir_dead_letters": ("counter", {"reason"}),
    "weir_deadline_misses": ("counter", {"outcome"}),
    "weir_decisions": ("counter", {"status"}),
    "weir_end_to_end_seconds": ("histogram", {"since"}),
    "weir_engine_errors": ("counter", set()),
    "weir_engine_profile_samples": ("gauge", {"bucket"}),
    "weir_engine_profile_seconds": ("gauge", {"bucket", "quantile"}),
    "weir_event_loop_lag_seconds": ("histogram", set()),
    "weir_events": ("counter", {"topic", "kind"}),
    "weir_gc_pause_seconds": ("histogram", {"generation"}),
    "weir_inference_seconds": ("histogram", set()),
    "weir_info": ("gauge", {"model_version", "engine", "device", "precision", "worker"}),
    "weir_model_loads": ("counter", {"result"}),
    "weir_paused_partitions": ("gauge", set()),
    "weir_produce_errors": ("counter", set()),
    "weir_publish_seconds": ("histogram", set()),
    "weir_queue_wait_seconds": ("histogram", set()),
    "weir_queued_events": ("gauge", set()),
    "weir_ready": ("gauge", set()),
    "weir_rebalances": ("counter", set()),
    "weir_shadow_batches": ("counter", {"result"}),
    "weir_task_deaths": ("counter", {"task"}),
    "weir_trace_context_malformed": ("counter", set()),
    "weir_superseded_records": ("counter", set()),
}


def _settings(**env: str) -> Settings:
    return load_settings(env={"WEIR_SCHEDULER__BUDGET_MS": "50", **env})


def _record(i: int, key: str = "K0", partition: int = 0, ts_ms: int | None = None) -> MemoryRecord:
    ts = ts_ms if ts_ms is not None else time.time_ns() // 1_000_000
    return quote_record(i, key=key, partition=partition, timestamp=ts)


MakeServed = Callable[..., tuple[Pipeline, Metrics, InMemoryView]]


def _families(metrics: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def _value(fams: dict[str, Any], sample: str, **labels: str) -> float:
    family = next(f for f in fams.values() if any(s.name == sample for s in f.samples))
    got = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(got) == 1, (sample, labels, family.samples)
    return float(got[0])


async def test_every_metric_is_exported_with_its_type_and_labels(make_served: MakeServed) -> None:
    """After a run, the scrape holds exactly METRIC_NAMES, each with its type and label names."""
    pipe, metrics, _ = make_served()
    await run_pipeline(pipe, [_record(i, key=f"K{i % 3}") for i in range(60)], chunk=5, close=False)
    fams = _families(metrics)
    assert sorted(fams) == sorted(METRIC_NAMES) == sorted(EXPECTED_TYPES)
    for name, (kind, labels) in EXPECTED_TYPES.items():
        fam = fams[name]
        assert fam.type == kind, name
        assert fam.documentation, name
        for s in fam.samples:
            assert set(s.labels) - {"le"} == labels, (name, s)
    await pipe.close()


async def test_counters_follow_the_pipeline_and_kind_labels(make_served: MakeServed) -> None:
    """weir_events_total counts by topic and event kind (dead letters as "invalid") and the
    decision, dead-letter and miss counters equal the pipeline's own counters."""
    pipe, metrics, _ = make_served()
    records = [_record(i, key=f"K{i % 3}") for i in range(60)]
    records.append(MemoryRecord(TOPIC, 0, 60, b"{not json"))
    records.append(MemoryRecord("other.topic", 0, 0, None))
    await run_pipeline(pipe, records, chunk=5, close=False)
    fams = _families(metrics)
    assert _value(fams, "weir_events_total", topic=TOPIC, kind="quote") == 60
    assert _value(fams, "weir_events_total", topic=TOPIC, kind="invalid") == 1
    assert _value(fams, "weir_events_total", topic="other.topic", kind="invalid") == 1
    total = sum(s.value for s in fams["weir_events"].samples)
    assert total == pipe.counters.events_in == 62
    for status, n in pipe.counters.decisions.items():
        assert _value(fams, "weir_decisions_total", status=status.value) == n
    for reason, n in pipe.counters.dead.items():
        assert _value(fams, "weir_dead_letters_total", reason=reason) == n
    assert _value(fams, "weir_deadline_misses_total", outcome="expired") == 0
    await pipe.close()


async def test_malformed_traceparents_are_counted(make_served: MakeServed) -> None:
    """weir_trace_context_malformed_total counts input records whose traceparent was
    malformed (decoded or dead-lettered), not the valid ones."""
    pipe, metrics, _ = make_served()
    good = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    bad = [("traceparent", b"00-zz-01")]
    records = [_record(i) for i in range(6)]
    for i, headers in ((1, bad), (2, good), (4, bad)):
        r = records[i]
        records[i] = MemoryRecord(TOPIC, 0, i, r.value, timestamp=r.timestamp, headers=headers)
    records.append(MemoryRecord(TOPIC, 0, 6, b"{not json", headers=bad))
    await run_pipeline(pipe, records, chunk=5, close=False)
    assert _value(_families(metrics), "weir_trace_context_malformed_total") == 3
    await pipe.close()


async def test_stage_histograms_count_each_inferred_event_once(make_served: MakeServed) -> None:
    """Queue wait and end-to-end (Kafka) count every ok decision once; batch and inference
    histograms count each batch once; batch rows sum to the ok decisions."""
    pipe, metrics, _ = make_served()
    await run_pipeline(pipe, [_record(i, key=f"K{i % 3}") for i in range(90)], chunk=5, close=False)
    fams = _families(metrics)
    ok = pipe.counters.decisions[next(s for s in pipe.counters.decisions if s.value == "ok")]
    assert ok > 0
    assert _value(fams, "weir_queue_wait_seconds_count") == ok
    assert _value(fams, "weir_end_to_end_seconds_count", since="kafka") == ok
    assert _value(fams, "weir_end_to_end_seconds_count", since="source") == 0  # quotes: none
    assert _value(fams, "weir_batch_size_rows_count") == pipe.counters.batches
    assert _value(fams, "weir_batch_size_rows_sum") == ok
    # What the peer benchmark's probe reads of the same page: (batches, rows).
    assert parse_page(metrics.render().decode()).batches == (pipe.counters.batches, ok)
    assert _value(fams, "weir_inference_seconds_count") == pipe.counters.batches
    assert _value(fams, "weir_publish_seconds_count") == pipe.counters.batches
    assert _value(fams, "weir_queue_wait_seconds_bucket", le="+Inf") == ok
    assert 0 < _value(fams, "weir_inference_seconds_sum") < 1.0
    await pipe.close()


async def test_failed_batches_are_observed_too(make_served: MakeServed) -> None:
    """A batch whose engine call fails still counts its rows, inference and publish time."""
    pipe, metrics, _ = make_served(fail_every=2)
    await run_pipeline(pipe, [_record(i, key=f"K{i % 3}") for i in range(200)], chunk=1)
    assert pipe.counters.engine_errors > 0
    fams = _families(metrics)
    assert _value(fams, "weir_engine_errors_total") == pipe.counters.engine_errors
    assert _value(fams, "weir_publish_seconds_count") == pipe.counters.batches
    await pipe.close()


def test_latency_buckets_resolve_sub_millisecond_work() -> None:
    """Latency buckets start at 10 µs, hold six bounds under 1 ms, rise, and reach 10 s."""
    assert LATENCY_BUCKETS_S[0] <= 25e-6
    assert sum(b < 1e-3 for b in LATENCY_BUCKETS_S) >= 5
    assert list(LATENCY_BUCKETS_S) == sorted(set(LATENCY_BUCKETS_S))
    assert LATENCY_BUCKETS_S[-1] >= 1.0


async def test_exported_bucket_bounds_are_the_sub_millisecond_ones(
    make_served: MakeServed,
) -> None:
    """Every latency histogram in the scrape carries the le bounds of LATENCY_BUCKETS_S."""
    pipe, metrics, _ = make_served()
    fams = _families(metrics)
    for name in (
        "weir_queue_wait_seconds",
        "weir_inference_seconds",
        "weir_publish_seconds",
        "weir_end_to_end_seconds",
        "weir_commit_seconds",
    ):
        les = [s.labels["le"] for s in fams[name].samples if s.name.endswith("_bucket")]
        bounds = sorted({float(le) for le in les if le != "+Inf"})
        assert bounds == pytest.approx(list(LATENCY_BUCKETS_S)), name
    batch = [s.labels["le"] for s in fams["weir_batch_size_rows"].samples if "le" in s.labels]
    assert batch == ["1.0", "2.0", "4.0", "8.0", "+Inf"]
    await pipe.close()


def test_loop_histogram_counts_and_quantiles_like_promql() -> None:
    """observe puts a value in the first bucket whose bound holds it; quantile interpolates
    within the bucket as histogram_quantile does, and over a window given by a snapshot."""
    h = LoopHistogram([10, 20, 40])
    for v in (5, 10, 11, 20, 39, 100, -3):
        h.observe(v)
    assert h.counts == [3, 2, 1, 1]
    assert h.sum == 185
    assert h.buckets() == [("10.0", 3), ("20.0", 5), ("40.0", 6), ("+Inf", 7)]
    assert h.quantile(0.5) == pytest.approx(10 + 10 * (3.5 - 3) / 2)
    assert h.quantile(1.0) == 40.0
    snap = list(h.counts)
    assert h.quantile(0.5, snap) is None
    h.observe(30)
    assert h.quantile(0.5, snap) == pytest.approx(20 + 20 * 0.5)


def test_registries_are_per_worker_not_global(make_engine: Callable[..., FakeEngine]) -> None:
    """Two Metrics have separate registries and nothing weir_ lands in the global one."""
    settings = _settings()
    engine = make_engine()
    a = Metrics(InMemoryView(settings, engine, None, "a"))
    b = Metrics(InMemoryView(settings, engine, None, "b"))
    assert a.registry is not b.registry
    assert b'model_version="a"' in a.render() and b'model_version="a"' not in b.render()
    assert not [m for m in REGISTRY.collect() if m.name.startswith("weir_")]


async def test_render_async_gives_the_same_page(make_served: MakeServed) -> None:
    """The family-at-a-time render equals generate_latest of the registry."""
    pipe, metrics, _ = make_served()
    await run_pipeline(pipe, [_record(i) for i in range(30)], chunk=5, close=False)
    assert await metrics.render_async() == metrics.render()
    await pipe.close()


class _TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition

    def __hash__(self) -> int:
        return hash((self.topic, self.partition))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TP) and (self.topic, self.partition) == (
            other.topic,
            other.partition,
        )


class _FakeConsumer:
    """Highwater, position, assignment and pause state of a consumer, set by hand."""

    def __init__(self) -> None:
        self.high: dict[_TP, int | None] = {}
        self.pos: dict[_TP, int] = {}
        self.paused_set: set[_TP] = set()

    def assignment(self) -> set[_TP]:
        return set(self.pos)

    def paused(self) -> set[_TP]:
        return set(self.paused_set)

    def highwater(self, tp: _TP) -> int | None:
        return self.high[tp]

    async def position(self, tp: _TP) -> int:
        return self.pos[tp]


async def test_lag_in_records_and_seconds_per_partition(make_served: MakeServed) -> None:
    """Lag is highwater - position per partition, and now - last record timestamp in seconds
    while behind (0 when caught up); paused and assigned partitions are gauges."""
    _, metrics, view = make_served()
    consumer = _FakeConsumer()
    p0, p1, p2 = _TP(TOPIC, 0), _TP(TOPIC, 1), _TP(TOPIC, 2)
    consumer.pos = {p0: 100, p1: 50, p2: 7}
    consumer.high = {p0: 130, p1: 50, p2: None}
    consumer.paused_set = {p0}
    view.consumer = consumer
    now_ms = time.time_ns() // 1_000_000
    metrics.lag.seen(p0, [_record(99, ts_ms=now_ms - 2_000)])
    metrics.lag.seen(p1, [_record(49, ts_ms=now_ms - 9_000)])
    await metrics.tick()
    fams = _families(metrics)
    assert _value(fams, "weir_consumer_lag_records", topic=TOPIC, partition="0") == 30
    assert _value(fams, "weir_consumer_lag_records", topic=TOPIC, partition="1") == 0
    assert 1.9 < _value(fams, "weir_consumer_lag_seconds", topic=TOPIC, partition="0") < 10
    assert _value(fams, "weir_consumer_lag_seconds", topic=TOPIC, partition="1") == 0
    assert not [
        s for s in fams["weir_consumer_lag_records"].samples if s.labels["partition"] == "2"
    ]
    assert _value(fams, "weir_paused_partitions") == 1
    assert _value(fams, "weir_assigned_partitions") == 3
    status = metrics.status()
    row = next(a for a in status["assignment"] if a["partition"] == 0)
    assert row["paused"] is True and row["lag_records"] == 30


async def test_readiness_names_what_is_missing(make_served: MakeServed) -> None:
    """Ready only with a warm engine, a started pipeline and assigned partitions; else a reason."""
    pipe, metrics, view = make_served()
    assert metrics.readiness() == (True, "ready")
    view.ready = False
    assert metrics.readiness() == (False, "rebalancing: no partitions assigned yet")
    view.ready = True
    view.consumer = _FakeConsumer()
    ok, reason = metrics.readiness()
    assert not ok and reason.startswith("no partitions assigned")
    view.pipeline = None
    assert metrics.readiness() == (False, "not started: connecting to Kafka")
    cold = FakeEngine(n_features=pipe.engine.n_features)
    assert Metrics(InMemoryView(view.settings, cold, None, "x")).readiness() == (
        False,
        "engine not warmed up",
    )
    assert _value(_families(metrics), "weir_ready") == 0


async def test_live_series_are_per_second_rates_and_quantiles(make_served: MakeServed) -> None:
    """Each tick adds one point per series: rates from counter deltas, latency quantiles in
    ms from histogram deltas, batch figures; series stay aligned."""
    pipe, metrics, _ = make_served()
    await metrics.tick()  # baseline
    await run_pipeline(pipe, [_record(i, key=f"K{i % 3}") for i in range(60)], chunk=5, close=False)
    await metrics.tick()
    await metrics.tick()
    live = metrics.live()["series"]
    assert len({len(v) for v in live.values()}) == 1 and len(live["t"]) == 2
    assert live["events_per_s"][0] > 0 and live["events_per_s"][1] == 0
    assert live["e2e_p99_ms"][0] is not None and live["e2e_p99_ms"][1] is None
    assert 0 < live["queue_wait_p99_ms"][0] < 1000
    assert 1 <= live["batch_mean"][0] <= 8
    msgspec.json.encode(metrics.live())  # JSON-able
    await pipe.close()


async def test_next_sample_is_done_by_the_next_tick_only(make_served: MakeServed) -> None:
    """next_sample() is done by the first tick after the call (the baseline counts), and a
    waiter made after that tick waits for the one after."""
    _, metrics, _ = make_served()
    first = metrics.next_sample()
    await metrics.tick()  # baseline: appends no point, still a sample
    second = asyncio.ensure_future(metrics.next_sample())
    assert await asyncio.wait_for(first, 1) is True
    await asyncio.sleep(0)  # one loop turn: the second waiter runs and blocks
    assert not second.done()
    await metrics.tick()
    assert await asyncio.wait_for(second, 1) is True
    assert len(metrics.live()["series"]["t"]) == 1


def test_runtime_owns_metrics_and_reports_not_started() -> None:
    """A Runtime builds its own Metrics at construction; before run it is not ready."""
    from service.runtime import Runtime

    settings = _settings()
    spec = FeatureSpec(task=Task.TRADING, window=WINDOW)
    engine = FakeEngine(n_features=spec.n_features)
    engine.warm_up(2)
    rt = Runtime(settings, engine=engine, head=Head("trading", ["S", "H", "B"]), spec=spec)
    assert rt.metrics.readiness() == (False, "not started: connecting to Kafka")
    text = rt.metrics.render().decode()
    assert "weir_ready 0.0" in text and "weir_rebalances_total 0.0" in text
