"""`weir serve` against a real broker, seen through its HTTP endpoints: ready, metrics, lag."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from engines.fake import write_tiny_trading_bundle
from schemas.codec import event_codec
from schemas.events import Quote
from service.settings import load_settings
from tests.kafka_io import serving

WINDOW = 4


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "b"
    write_tiny_trading_bundle(path, window=WINDOW, model_version="ops-1")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: weir\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


def _total(samples: dict[Any, float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def test_endpoints_follow_a_real_runtime(
    kafka_bootstrap: str, topic_factory: Any, bundle_dir: Path
) -> None:
    """With a Runtime on Kafka: /healthz answers, /readyz turns 200 once partitions are
    assigned, /metrics counts every event, commits with their latency, per-partition lag
    and assignment; /status lists the partitions; the port closes at shutdown."""
    inp = await topic_factory(2, prefix="in")
    out = await topic_factory(2, prefix="out")
    dlq = await topic_factory(1, prefix="dlq")
    port = _free_port()
    settings = load_settings(
        env={
            "WEIR_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "WEIR_KAFKA__INPUT_TOPICS": f'["{inp}"]',
            "WEIR_KAFKA__DECISION_TOPIC": out,
            "WEIR_KAFKA__DLQ_TOPIC": dlq,
            "WEIR_KAFKA__GROUP_ID": f"g-ops-{port}",
            "WEIR_KAFKA__FETCH_MAX_WAIT_MS": "5",
            "WEIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "WEIR_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "WEIR_ENGINE__BUNDLE": str(bundle_dir),
            "WEIR_ENGINE__MAX_BATCH": "16",
            "WEIR_ENGINE__WARMUP_ITERS": "20",
            "WEIR_SCHEDULER__BUDGET_MS": "200",
            "WEIR_DELIVERY__COMMIT_INTERVAL_MS": "50",
            "WEIR_HTTP__HOST": "127.0.0.1",
            "WEIR_HTTP__PORT": str(port),
            "WEIR_LOG__LEVEL": "warning",
        }
    )
    n = 120
    async with serving(settings) as (_rt, task):
        async with asyncio.timeout(30):
            while True:
                if task.done():
                    task.result()
                with contextlib.suppress(OSError):
                    status, body = await _get(port, "/readyz")
                    if status == 200:
                        break
                await asyncio.sleep(0.1)
        assert (await _get(port, "/healthz"))[0] == 200
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=2)
        await producer.start()
        try:
            codec = event_codec()
            for i in range(n):
                key = f"K{i % 4}"
                q = Quote(symbol=key, bid_px=100.0, bid_qty=1.0, ask_px=100.5, ask_qty=1.0)
                await producer.send(inp, value=codec.encode(q), key=key.encode())
            await producer.flush()
        finally:
            await producer.stop()
        samples: dict[Any, float] = {}
        async with asyncio.timeout(30):
            while True:
                _, body = await _get(port, "/metrics")
                samples = _samples(body)
                lag_seen = [k for k in samples if k[0] == "weir_consumer_lag_records"]
                if (
                    _total(samples, "weir_events_total") == n
                    and _total(samples, "weir_commits_total") > 0
                    and len(lag_seen) == 2
                    and _total(samples, "weir_consumer_lag_records") == 0
                ):
                    break
                await asyncio.sleep(0.2)
        assert samples[("weir_events_total", (("kind", "quote"), ("topic", inp)))] == n
        assert _total(samples, "weir_commit_seconds_count") > 0
        assert samples[("weir_assigned_partitions", ())] == 2
        assert samples[("weir_ready", ())] == 1
        assert _total(samples, "weir_end_to_end_seconds_count") > 0
        assert samples[("weir_paused_partitions", ())] == 0
        status, body = await _get(port, "/status")
        doc = msgspec.json.decode(body)
        assert sorted(a["partition"] for a in doc["assignment"]) == [0, 1]
        assert doc["settings"]["kafka"]["bootstrap_servers"] == kafka_bootstrap
    with pytest.raises(OSError):
        await _get(port, "/healthz")
