"""OpenTelemetry batch spans (``[tracing] enabled``): links, parentage, what decisions carry."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from schemas.codec import decision_codec, event_codec
from schemas.decision import Decision, Status
from schemas.events import Quote
from service import otel
from service.errors import ConfigError
from service.memory import MemoryRecord, MemorySink
from service.otel import OtelBatchTracer
from service.pipeline import Pipeline
from service.settings import TracingSettings
from service.tracing import load_batch_tracer
from tests.pipeline_io import TOPIC, quote_record, run_pipeline

WINDOW = 4  # the window of the conftest fixtures
STATE = b"congo=t61rcWkgMzE"


def _trace_id(i: int) -> str:
    return f"{i + 1:032x}"


def _parent_id(i: int) -> str:
    return f"{0xABC000 + i:016x}"


def _record(i: int, *, traced: bool, flags: str = "01", key: str = "K") -> MemoryRecord:
    headers = (
        [
            ("traceparent", f"00-{_trace_id(i)}-{_parent_id(i)}-{flags}".encode()),
            ("tracestate", STATE),
        ]
        if traced
        else []
    )
    return quote_record(i, key=key, headers=headers)


def _traced_pipeline(
    make_pipeline: Any, *, event_spans: bool = True, **kw: Any
) -> tuple[Pipeline, MemorySink, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelBatchTracer(provider.get_tracer("test"), event_spans=event_spans)
    pipe, sink, _ = make_pipeline(**kw)
    pipe.tracer = tracer
    return pipe, sink, exporter


def _decisions(sink: MemorySink) -> list[tuple[Decision, dict[str, bytes]]]:
    codec = decision_codec()
    return [(codec.decode(m.value), dict(m.headers)) for m in sink.on("weir.decisions")]


def _by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_batch_spans_link_inputs_and_decisions_continue_their_traces(
    make_pipeline: Any,
) -> None:
    """Each batch has a root span linked to its traced events' contexts; a traced ok
    decision's traceparent keeps the input's trace-id with weir's event span (a child of
    the input's parent, linked to the batch span) as parent; untraced ones carry none."""
    pipe, sink, exporter = _traced_pipeline(make_pipeline)
    records = [_record(i, traced=i >= WINDOW - 1 and i % 2 == 1) for i in range(20)]
    await run_pipeline(pipe, records, chunk=3)
    batches = _by_name(exporter, "weir.batch")
    events = {s.context.span_id: s for s in _by_name(exporter, "weir.event")}
    ok = [(d, h) for d, h in _decisions(sink) if d.status is Status.OK]
    assert len(ok) == 20 - (WINDOW - 1)
    assert sum(s.attributes["messaging.batch.message_count"] for s in batches) == len(ok)
    batch_ids = {s.context.span_id: s for s in batches}
    for b in batches:
        assert b.parent is None
        assert b.kind is SpanKind.CONSUMER
        assert b.attributes["weir.model.version"] == "test-1"
        assert b.attributes["weir.batch.bucket"] >= b.attributes["messaging.batch.message_count"]
        assert b.attributes["weir.batch.traced"] == len(b.links)
        for key in ("weir.queue_wait.max_ns", "weir.inference_ns", "weir.publish_ns"):
            assert b.attributes[key] >= 0
    for d, headers in ok:
        if d.offset % 2 == 0:
            assert "traceparent" not in headers and "tracestate" not in headers
            continue
        version, trace_id, parent_id, flags = headers["traceparent"].decode().split("-")
        assert (version, trace_id, flags) == ("00", _trace_id(d.offset), "01")
        assert parent_id != _parent_id(d.offset)
        assert headers["tracestate"] == STATE
        span = events[int(parent_id, 16)]
        assert span.context.trace_id == int(_trace_id(d.offset), 16)
        assert span.parent is not None and span.parent.span_id == int(_parent_id(d.offset), 16)
        (link,) = span.links
        batch = batch_ids[link.context.span_id]
        assert int(_parent_id(d.offset), 16) in {lk.context.span_id for lk in batch.links}
    assert len(events) == sum(1 for d, _ in ok if d.offset % 2 == 1)


async def test_without_event_spans_decisions_forward_and_the_batch_links(
    make_pipeline: Any,
) -> None:
    """With ``event_spans`` off there are batch spans only, linked to every traced event,
    and each decision carries its input's traceparent and tracestate unchanged."""
    pipe, sink, exporter = _traced_pipeline(make_pipeline, event_spans=False)
    await run_pipeline(pipe, [_record(i, traced=True) for i in range(WINDOW + 5)], chunk=3)
    assert _by_name(exporter, "weir.event") == []
    batches = _by_name(exporter, "weir.batch")
    linked = {lk.context.span_id for b in batches for lk in b.links}
    got = _decisions(sink)
    ok = [d.offset for d, _ in got if d.status is Status.OK]
    assert linked == {int(_parent_id(i), 16) for i in ok}
    for d, headers in got:
        assert (
            headers["traceparent"] == f"00-{_trace_id(d.offset)}-{_parent_id(d.offset)}-01".encode()
        )
        assert headers["tracestate"] == STATE


async def test_a_later_version_traceparent_continues_as_version_00(make_pipeline: Any) -> None:
    """A valid later-version traceparent is read by its first 55 characters; weir's
    decision carries a version-00 traceparent of the same trace."""
    pipe, sink, _ = _traced_pipeline(make_pipeline)
    later = f"cc-{_trace_id(7)}-{_parent_id(7)}-01-more".encode()
    records = [_record(i, traced=False) for i in range(WINDOW - 1)]
    q = Quote(symbol="K", bid_px=100.0, bid_qty=1.0, ask_px=100.5, ask_qty=2.0)
    records.append(
        MemoryRecord(
            TOPIC, 0, WINDOW - 1, event_codec().encode(q), headers=[("traceparent", later)]
        )
    )
    await run_pipeline(pipe, records, chunk=3)
    headers = next(h for d, h in _decisions(sink) if d.status is Status.OK)
    version, trace_id, parent_id, flags = headers["traceparent"].decode().split("-")
    assert (version, trace_id, flags) == ("00", _trace_id(7), "01")
    assert parent_id != _parent_id(7)
    assert "tracestate" not in headers


async def test_decisions_decided_outside_a_batch_forward_the_context(make_pipeline: Any) -> None:
    """Warming decisions (no batch span) forward the input's traceparent unchanged."""
    pipe, sink, exporter = _traced_pipeline(make_pipeline)
    await run_pipeline(pipe, [_record(i, traced=True) for i in range(WINDOW - 1)], chunk=3)
    got = _decisions(sink)
    assert [d.status for d, _ in got] == [Status.WARMING] * (WINDOW - 1)
    for d, headers in got:
        assert (
            headers["traceparent"] == f"00-{_trace_id(d.offset)}-{_parent_id(d.offset)}-01".encode()
        )
    assert exporter.get_finished_spans() == ()


async def test_unsampled_input_gets_a_new_parent_and_no_exported_event_span(
    make_pipeline: Any,
) -> None:
    """An input not sampled (flags 00) keeps that flag and its trace-id; weir's event span
    is not recorded (parent-based sampling) but still gives the decision a new parent-id."""
    pipe, sink, exporter = _traced_pipeline(make_pipeline)
    await run_pipeline(pipe, [_record(i, traced=True, flags="00") for i in range(WINDOW)], chunk=3)
    (d, headers) = next((d, h) for d, h in _decisions(sink) if d.status is Status.OK)
    _, trace_id, parent_id, flags = headers["traceparent"].decode().split("-")
    assert (trace_id, flags) == (_trace_id(d.offset), "00")
    assert parent_id not in (_parent_id(d.offset), "0" * 16)
    assert _by_name(exporter, "weir.event") == []
    assert len(_by_name(exporter, "weir.batch")) == 1


async def test_engine_error_marks_the_batch_span(make_pipeline: Any) -> None:
    """A batch whose engine call failed has an ERROR span; its decisions still continue
    their traces."""
    pipe, sink, exporter = _traced_pipeline(make_pipeline, fail_every=1)
    await run_pipeline(pipe, [_record(i, traced=True) for i in range(WINDOW)], chunk=3)
    (batch,) = _by_name(exporter, "weir.batch")
    assert batch.status.status_code is StatusCode.ERROR
    (d, headers) = next((d, h) for d, h in _decisions(sink) if d.status is Status.ERROR)
    assert headers["traceparent"].decode().split("-")[1] == _trace_id(d.offset)
    (event,) = _by_name(exporter, "weir.event")
    assert headers["traceparent"].decode().split("-")[2] == f"{event.context.span_id:016x}"


def test_enabled_tracing_uses_the_process_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracer provider the process configured (e.g. opentelemetry-instrument) is used as
    it is, and ``close`` leaves it running."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(otel.trace, "get_tracer_provider", lambda: provider)
    tracer = load_batch_tracer(TracingSettings(enabled=True))
    assert isinstance(tracer, OtelBatchTracer)
    tracer.close()
    with provider.get_tracer("t").start_as_current_span("after-close"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["after-close"]


def test_without_a_process_provider_one_is_built_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With nothing configured, weir builds a provider of its own with the exporter that
    OTEL_TRACES_EXPORTER names, and never makes it the global one."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    before = otel.trace.get_tracer_provider()
    assert isinstance(before, otel.trace.ProxyTracerProvider)
    exported: list[str] = []

    def export(self: ConsoleSpanExporter, spans: Any) -> SpanExportResult:
        exported.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS

    monkeypatch.setattr(ConsoleSpanExporter, "export", export)
    built = otel.provider_from_environment()
    with built.get_tracer("t").start_as_current_span("to-the-console"):
        pass
    built.shutdown()  # the batch processor exports what it holds
    assert exported == ["to-the-console"]
    tracer = load_batch_tracer(TracingSettings(enabled=True))
    assert isinstance(tracer, OtelBatchTracer)
    tracer.close()
    assert otel.trace.get_tracer_provider() is before


def test_an_exporter_no_package_provides_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_TRACES_EXPORTER naming an exporter nobody installed stops the start, naming it."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    with pytest.raises(ConfigError) as err:
        load_batch_tracer(TracingSettings(enabled=True))
    assert str(err.value) == (
        "OTEL_TRACES_EXPORTER names 'otlp', which no installed package provides "
        "(installed: console; otlp comes with opentelemetry-exporter-otlp)"
    )


def test_parsed_tracestates_are_kept_within_their_bound() -> None:
    """Each tracestate value is parsed into the right span context, and the values kept
    for reuse never exceed their bound."""
    states: dict[bytes, Any] = {}
    for i in range(otel._STATES_KEPT * 2 + 3):
        tp = f"00-{_trace_id(i)}-{_parent_id(i)}-01".encode()
        sc = otel._incoming((("traceparent", tp), ("tracestate", f"k=v{i}".encode())), states)
        assert (sc.trace_id, sc.span_id, sc.is_remote) == (i + 1, 0xABC000 + i, True)
        assert sc.trace_state.to_header() == f"k=v{i}"
        assert len(states) <= otel._STATES_KEPT
    assert otel._incoming((("traceparent", tp),), states).trace_state.to_header() == ""


async def test_a_tracestate_that_is_not_text_is_forwarded_as_it_came(make_pipeline: Any) -> None:
    """A tracestate of bytes that are not UTF-8 neither stops the batch nor is rewritten:
    the decision continues the trace and carries the tracestate unchanged."""
    pipe, sink, _ = _traced_pipeline(make_pipeline)
    odd = b"k=\xff\xfe"
    q = Quote(symbol="K", bid_px=100.0, bid_qty=1.0, ask_px=100.5, ask_qty=2.0)
    tp = f"00-{_trace_id(1)}-{_parent_id(1)}-01".encode()
    records = [
        MemoryRecord(
            TOPIC, 0, i, event_codec().encode(q), headers=[("traceparent", tp), ("tracestate", odd)]
        )
        for i in range(WINDOW)
    ]
    await run_pipeline(pipe, records, chunk=3)
    headers = next(h for d, h in _decisions(sink) if d.status is Status.OK)
    assert headers["traceparent"].split(b"-")[1] == _trace_id(1).encode()
    assert headers["traceparent"] != tp
    assert headers["tracestate"] == odd
