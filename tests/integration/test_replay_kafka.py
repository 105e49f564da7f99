"""Replay through a real broker: the service and the echo decide every input, record captures."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from engines.fake import write_tiny_trading_bundle
from replay.demo import run_demo
from replay.diagnose import Diagnosis
from replay.echo import Echo
from replay.errors import ReplayError
from replay.importers.binance import import_binance
from replay.kafka import KafkaTransport
from replay.pacing import Pacing
from replay.plan import load_plan
from replay.record import record_topics
from replay.results import RunConfig
from replay.runner import run_feed
from replay.slo import Slo
from schemas.codec import event_codec
from schemas.events import Quote
from schemas.feed import FeedReader
from service.broker import ApacheKafka, KFake, Tansu
from service.broker.gobuild import cached_binary, find_go
from service.broker.kfake import BINARY
from service.broker.tansu import find_tansu
from service.errors import BrokerError
from service.runtime import Runtime
from service.settings import Settings, load_settings
from tests.kafka_io import service_env

FEEDS = Path(
    os.environ.get("WEIR_FEEDS_DIR")
    or Path(__file__).resolve().parents[2] / ".." / "shared" / "feeds"
)
BTCUSDT = FEEDS / "binance" / "btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trading model as a bundle."""
    path = tmp_path_factory.mktemp("bundle") / "b"
    write_tiny_trading_bundle(path, window=8, model_version="replay-it-1")
    return path


@pytest.fixture(scope="module")
def btcusdt_feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded Binance BTCUSDT spot capture, imported as a feed."""
    if not BTCUSDT.exists():
        pytest.skip(f"recorded feed {BTCUSDT} is not here (set WEIR_FEEDS_DIR)")
    out = tmp_path_factory.mktemp("feeds") / "btcusdt.parquet"
    import_binance([BTCUSDT], out)
    return out


@pytest.fixture
async def settings(kafka_bootstrap: str, topic_factory: Any, bundle_dir: Path) -> Settings:
    """Service settings on fresh topics of the session broker."""
    inp = await topic_factory(1, prefix="replay-in")
    out = await topic_factory(1, prefix="replay-out")
    dlq = await topic_factory(1, prefix="replay-dlq")
    return load_settings(
        env={
            **service_env(kafka_bootstrap, inp=inp, out=out, dlq=dlq, bundle=bundle_dir),
            "WEIR_KAFKA__FETCH_MAX_WAIT_MS": "5",
            "WEIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "WEIR_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "WEIR_ENGINE__WARMUP_ITERS": "20",
            "WEIR_SCHEDULER__BUDGET_MS": "50",
        }
    )


@contextlib.asynccontextmanager
async def serving(svc: Any) -> AsyncIterator[Any]:
    """Runs a service object (``Runtime`` or ``Echo``) on this loop until the block ends."""
    task = asyncio.get_running_loop().create_task(svc.run(install_signals=False))
    try:
        async with asyncio.timeout(60):
            while not svc.ready:
                assert not task.done(), task
                await asyncio.sleep(0.05)
        yield svc
    finally:
        svc.stop()
        await asyncio.wait_for(task, 30)


def _config(settings: Settings, feed: Path, n: int) -> RunConfig:
    return RunConfig(feed=str(feed), feed_rows=n, rows_replayed=n, feed_span_s=0.0, mode="kafka")


@pytest.mark.slow
async def test_btcusdt_at_10x_through_the_service_loses_nothing(
    settings: Settings, btcusdt_feed: Path
) -> None:
    """The 346 s BTCUSDT capture replayed at 10x through the service: every input decided
    once, nothing lost, nothing unmatched."""
    plan = load_plan(btcusdt_feed, encoding=settings.kafka.input_encoding)
    async with serving(Runtime(settings)):
        result = await run_feed(
            plan,
            KafkaTransport(settings.kafka),
            pacing=Pacing(speed=10.0),
            slo=Slo(budget_ms=50.0, max_duplicates=0),
            config=_config(settings, btcusdt_feed, plan.n),
            quiet_s=15.0,
        )
    c = result.completeness
    assert plan.n == 41_249
    assert (c.inputs, c.decided, c.lost, c.duplicated, c.unmatched) == (plan.n, plan.n, 0, 0, 0)
    assert c.dead_lettered == 0 and c.undecodable == 0
    assert result.verdict is not None and result.verdict.passed
    assert result.stages["inference"].count > 0


async def test_echo_answers_every_input(settings: Settings, btcusdt_feed: Path) -> None:
    """The echo pass-through, replayed at max speed, decides each of 3000 events once."""
    plan = load_plan(btcusdt_feed, encoding=settings.kafka.input_encoding, limit=3000)
    async with serving(Echo(settings)):
        result = await run_feed(
            plan,
            KafkaTransport(settings.kafka),
            pacing=Pacing.parse("max"),
            slo=Slo(budget_ms=1000.0, max_duplicates=0),
            config=_config(settings, btcusdt_feed, plan.n),
            quiet_s=10.0,
        )
    c = result.completeness
    assert (c.inputs, c.decided, c.lost, c.duplicated) == (3000, 3000, 0, 0)
    assert result.stages["broker_out"].count == 3000


async def test_record_captures_a_topic(settings: Settings, tmp_path: Path) -> None:
    """record writes every produced record with its coordinates and receive time."""
    topic = settings.kafka.input_topics[0]
    out = tmp_path / "rec.parquet"
    ready = asyncio.Event()
    task = asyncio.create_task(
        record_topics(settings.kafka, [topic], out, count=50, seconds=30.0, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 30)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    codec = event_codec("json")
    try:
        for i in range(50):
            q = Quote(
                symbol="BTCUSDT",
                bid_px=100.0 + i,
                bid_qty=1.0,
                ask_px=101.0 + i,
                ask_qty=1.0,
                source_ts_ns=1_700_000_000_000_000_000 + i,
            )
            await producer.send(topic, codec.encode(q), key=b"BTCUSDT")
        await producer.send_and_wait(topic, b"not json", key=b"X")
    finally:
        await producer.stop()
    report = await asyncio.wait_for(task, 30)
    assert report.records == 50
    rows = list(FeedReader(out).records())
    assert [r.offset for r in rows] == list(range(50))
    assert all(r.topic == topic and r.kafka_ts_ns for r in rows)
    assert rows[3].event.source_ts_ns == 1_700_000_000_000_000_003


@pytest.mark.slow
def test_demo_runs_exactly_once_on_kafka_and_stops_everything(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """The demo starts a fresh Apache Kafka and the transactional service, warms up, replays
    3 s of synthetic market data (1,397 events) with exactly one decision each, and leaves
    nothing running."""
    result = run_demo(
        out_dir=tmp_path,
        seconds=3.0,
        bundle=str(bundle_dir),
        progress=False,
        broker_kind="kafka",
        exactly_once=True,
        warmup_events=500,
    )
    c = result.completeness
    assert c.inputs > 1000 and (c.lost, c.duplicated, c.unmatched) == (0, 0, 0)
    assert "exactly-once" in result.config.service and "Apache Kafka" in result.config.service
    assert any(n.startswith("exactly-once: decisions become visible") for n in result.config.notes)
    assert not ApacheKafka(state_dir=tmp_path / "kafka").status().running


@pytest.mark.slow
def test_diagnosed_demo_reads_every_process(bundle_dir: Path, tmp_path: Path) -> None:
    """With a diagnosis the demo keeps the service's collections, loop lag and commits of
    the measured run, the harness's, the broker JVM's GC pauses and one window per 2 s."""
    diagnosis = Diagnosis(window_s=2.0)
    result = run_demo(
        out_dir=tmp_path,
        seconds=4.0,
        bundle=str(bundle_dir),
        progress=False,
        broker_kind="kafka",
        warmup_events=300,
        diagnosis=diagnosis,
    )
    doc = diagnosis.document()
    assert doc["service_error"] == "" and doc["service"]["loop_lag"]["count"] > 0
    assert doc["service"]["commit"]["count"] > 0 and doc["service"]["gc"]["frozen"] > 0
    assert set(doc["service_run_gc"]) == {"0", "1", "2"}
    assert doc["harness"]["loop_lag"]["count"] > 0
    assert doc["broker_gc"] is not None
    assert len(doc["windows"]) >= 2
    assert sum(w["events"] for w in doc["windows"]) == result.completeness.decided
    assert not ApacheKafka(state_dir=tmp_path / "kafka").status().running


@pytest.mark.slow
def test_demo_runs_exactly_once_on_kfake_and_stops_everything(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """On --broker kfake (built on first use) the demo runs the transactional service over 3 s of
    synthetic data with exactly one decision each, and leaves no broker or service running."""
    kfake = KFake(state_dir=tmp_path / "kfake")
    if not cached_binary(kfake.deploy, kfake.cache_dir, BINARY).is_file():
        try:
            find_go()
        except BrokerError as exc:
            pytest.skip(f"kfake is not built and cannot be: {exc}")
    result = run_demo(
        out_dir=tmp_path,
        seconds=3.0,
        bundle=str(bundle_dir),
        progress=False,
        broker_kind="kfake",
        exactly_once=True,
        warmup_events=500,
    )
    c = result.completeness
    assert c.inputs > 1000 and (c.lost, c.duplicated, c.unmatched) == (0, 0, 0)
    assert "exactly-once" in result.config.service and "kfake" in result.config.service
    assert not kfake.status().running


@pytest.mark.slow
def test_demo_runs_on_tansu_and_stops_everything(bundle_dir: Path, tmp_path: Path) -> None:
    """On --broker tansu the demo replays 3 s with nothing lost, notes Tansu's fetch floor,
    and leaves no broker or service running; exactly-once is refused there."""
    try:
        find_tansu()
    except BrokerError as exc:
        pytest.skip(str(exc))
    with pytest.raises(ReplayError, match=r"^--exactly-once needs Apache Kafka"):
        run_demo(out_dir=tmp_path, broker_kind="tansu", exactly_once=True)
    result = run_demo(
        out_dir=tmp_path, seconds=3.0, bundle=str(bundle_dir), progress=False, broker_kind="tansu"
    )
    c = result.completeness
    assert c.inputs > 1000 and (c.lost, c.duplicated, c.unmatched) == (0, 0, 0)
    assert result.config.notes and "fetch_max_wait_ms" in result.config.notes[0]
    assert not Tansu(state_dir=tmp_path / "tansu").status().running
