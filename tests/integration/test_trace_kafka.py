"""Trace context through a real broker: `weir serve` decisions carry their input's trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from engines.fake import write_tiny_trading_bundle
from schemas.codec import decision_codec, event_codec
from schemas.events import Quote
from service.settings import load_settings
from tests.kafka_io import read_records, service_env, serving

WINDOW = 4


def _traceparent(i: int) -> bytes:
    return f"00-{i + 1:032x}-{0xABC000 + i:016x}-01".encode()


async def _produce(bootstrap: str, topic: str, n: int) -> None:
    """``n`` quotes of one key, the odd ones traced; then an undecodable traced record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        codec = event_codec()
        for i in range(n):
            q = Quote(symbol="BTC", bid_px=100.0 + i % 5, bid_qty=1.0, ask_px=100.5, ask_qty=1.0)
            headers = [("traceparent", _traceparent(i)), ("tracestate", b"k=v")] if i % 2 else []
            await producer.send_and_wait(topic, codec.encode(q), key=b"BTC", headers=headers)
        await producer.send_and_wait(
            topic, b"{nope", key=b"BTC", headers=[("traceparent", _traceparent(n))]
        )
    finally:
        await producer.stop()


@pytest.mark.parametrize("otel", [False, True], ids=["forwarded", "otel"])
async def test_decisions_and_dead_letters_carry_trace_context(
    kafka_bootstrap: str,
    topic_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    otel: bool,
) -> None:
    """Each traced input's decision comes back from the broker with its trace-id (tracing
    off: its traceparent and tracestate unchanged; on: weir's event span as parent), the
    traced dead letter with its traceparent, and untraced inputs' decisions with none."""
    spans: Any = None
    if otel:
        pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from service import otel as otel_mod

        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        monkeypatch.setattr(otel_mod.trace, "get_tracer_provider", lambda: provider)
    write_tiny_trading_bundle(tmp_path / "b", window=WINDOW, model_version="it-1")
    inp, out, dlq = await topic_factory(1), await topic_factory(1), await topic_factory(1)
    settings = load_settings(
        env={
            **service_env(kafka_bootstrap, inp=inp, out=out, dlq=dlq, bundle=tmp_path / "b"),
            "WEIR_KAFKA__FETCH_MAX_WAIT_MS": "5",
            "WEIR_ENGINE__WARMUP_ITERS": "20",
            "WEIR_SCHEDULER__BUDGET_MS": "200",
            "WEIR_TRACING__ENABLED": "true" if otel else "false",
            "WEIR_TRACING__EVENT_SPANS": "true" if otel else "false",
        }
    )
    n = 12
    async with serving(settings):
        await _produce(kafka_bootstrap, inp, n)
        decided = await read_records(kafka_bootstrap, out, n, fetch_max_wait_ms=50)
        (dead,) = await read_records(kafka_bootstrap, dlq, 1, fetch_max_wait_ms=50)
    codec = decision_codec()
    event_ids = set() if spans is None else {s.context.span_id for s in spans.get_finished_spans()}
    assert len(decided) == n
    continued = 0
    for rec in decided:
        d = codec.decode(rec.value)
        headers = dict(rec.headers)
        if d.offset % 2 == 0:
            assert "traceparent" not in headers and "tracestate" not in headers
            continue
        assert headers["tracestate"] == b"k=v"
        sent = _traceparent(d.offset)
        if not otel or d.status.value == "warming":
            assert headers["traceparent"] == sent
            continue
        version, trace_id, parent_id, flags = headers["traceparent"].split(b"-")
        assert (version, trace_id, flags) == (b"00", sent.split(b"-")[1], b"01")
        assert int(parent_id, 16) in event_ids
        continued += 1
    assert continued == (len(range(WINDOW - 1, n, 2)) if otel else 0)
    assert dict(dead.headers)["traceparent"] == _traceparent(n)
