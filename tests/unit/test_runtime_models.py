"""The runtime over in-memory Kafka swaps in the package that appears in ``[model]
watch_dir``: later decisions name it, nothing is lost, the swap is counted. (The watch task's
first look is an interval after the start, ten minutes here: the test makes it itself.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from engines.fake import FakeEngine, write_tiny_trading_bundle
from engines.head import Head
from schemas.codec import decision_codec, event_codec
from schemas.decision import Decision
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.memory_kafka import MemoryKafka
from service.runtime import Runtime
from service.settings import Settings, load_settings

IN, OUT, DLQ = "in", "out", "dlq"


def _feed(kafka: MemoryKafka, start: int, n: int) -> None:
    codec = event_codec()
    for i in range(start, start + n):
        q = Quote(symbol="BTC", bid_px=100.0 + i, bid_qty=1.0, ask_px=100.5 + i, ask_qty=2.0)
        kafka.append(IN, 0, codec.encode(q), key=b"BTC")


def _runtime(settings: Settings, *, topics: bool = True) -> tuple[Runtime, FakeEngine, MemoryKafka]:
    """A runtime serving model ``v1`` (a fake engine, window 2) over in-memory Kafka, whose
    topics ``IN``, ``OUT`` and ``DLQ`` exist (one partition each) unless ``topics`` is off."""
    spec = FeatureSpec(task=Task.TRADING, window=2)
    engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4)
    engine.warm_up(2)
    kafka = MemoryKafka()
    if topics:
        for topic in (IN, OUT, DLQ):
            kafka.create_topic(topic, 1)
    rt = Runtime(
        settings,
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=spec,
        model_version="v1",
        clients=kafka,
    )
    return rt, engine, kafka


def _decisions(kafka: MemoryKafka) -> list[Decision]:
    codec = decision_codec()
    return [codec.decode(r.value or b"") for r in kafka.records(OUT)]


async def test_a_package_dropped_in_the_watch_dir_is_swapped_in(tmp_path: Path) -> None:
    """Decisions before the package appears name the starting version, after it the new
    one; every input is decided once; weir_model_loads_total{result="loaded"} is 1."""
    watch = tmp_path / "models"
    watch.mkdir()
    settings = load_settings(
        env={
            "WEIR_KAFKA__INPUT_TOPICS": '["in"]',
            "WEIR_KAFKA__DECISION_TOPIC": OUT,
            "WEIR_KAFKA__DLQ_TOPIC": DLQ,
            "WEIR_HTTP__ENABLED": "false",
            "WEIR_SCHEDULER__BUDGET_MS": "10000",
            "WEIR_ENGINE__KIND": "fake",
            "WEIR_ENGINE__MAX_BATCH": "4",
            "WEIR_ENGINE__WARMUP_ITERS": "2",
            "WEIR_MODEL__WATCH_DIR": str(watch),
            "WEIR_MODEL__WATCH_INTERVAL_MS": "600000",
        }
    )
    rt, engine, kafka = _runtime(settings)
    _feed(kafka, 0, 10)
    task = asyncio.get_running_loop().create_task(rt.run(install_signals=False))
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 10)
    write_tiny_trading_bundle(watch / "v2", window=2, model_version="v2")
    assert rt.models is not None
    polled = await rt.models.poll()  # the watch's next look, without waiting for it
    assert polled is not None and rt.model_version == "v2"
    assert rt.engine is not engine and rt.pipeline is not None
    assert rt.pipeline.engine is rt.engine
    _feed(kafka, 10, 10)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 20)
    scrape = rt.metrics.render()
    rt.stop()
    assert await task == 0
    got = _decisions(kafka)
    assert [d.offset for d in got] == list(range(20))
    assert [d.model_version for d in got] == ["v1"] * 10 + ["v2"] * 10
    fams = {f.name: f for f in text_string_to_metric_families(scrape.decode())}
    loads = {s.labels["result"]: s.value for s in fams["weir_model_loads"].samples}
    assert loads == {"loaded": 1.0, "refused": 0.0}


async def test_the_admin_endpoint_answers_503_before_serving() -> None:
    """Before the pipeline runs there is no model to replace: 503 with the reason."""
    rt, _, _ = _runtime(load_settings(env={"WEIR_HTTP__ENABLED": "false"}), topics=False)
    assert await rt.admin(b'{"path": "/m/v2"}') == (
        503,
        b'{"error":"not serving yet: no model to replace"}',
    )


async def test_post_admin_model_swaps_the_running_runtime(tmp_path: Path) -> None:
    """With [model] admin on, POST /admin/model on the worker's HTTP port swaps it: 200 with
    the version, and the next decisions name it."""
    settings = load_settings(
        env={
            "WEIR_KAFKA__INPUT_TOPICS": '["in"]',
            "WEIR_KAFKA__DECISION_TOPIC": OUT,
            "WEIR_KAFKA__DLQ_TOPIC": DLQ,
            "WEIR_HTTP__PORT": "0",
            "WEIR_SCHEDULER__BUDGET_MS": "10000",
            "WEIR_ENGINE__KIND": "fake",
            "WEIR_ENGINE__MAX_BATCH": "4",
            "WEIR_ENGINE__WARMUP_ITERS": "2",
            "WEIR_MODEL__ADMIN": "true",
        }
    )
    rt, _, kafka = _runtime(settings)
    write_tiny_trading_bundle(tmp_path / "v2", window=2, model_version="v2")
    _feed(kafka, 0, 5)
    with capture_logs() as logs:
        task = asyncio.get_running_loop().create_task(rt.run(install_signals=False))
        await kafka.wait_until(lambda: len(kafka.records(OUT)) == 5)
    url = next(e["url"] for e in logs if e["event"] == "http_listening")
    host, port = url.removeprefix("http://").split(":")
    body = msgspec.json.encode({"path": str(tmp_path / "v2")})
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /admin/model HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b'{"version":"v2","path":"' + str(tmp_path / "v2").encode() + b'"}')
    _feed(kafka, 5, 5)
    await kafka.wait_until(lambda: len(kafka.records(OUT)) == 10)
    rt.stop()
    assert await task == 0
    assert [d.model_version for d in _decisions(kafka)] == ["v1"] * 5 + ["v2"] * 5
