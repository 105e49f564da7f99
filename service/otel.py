"""OpenTelemetry spans of the pipeline's batches (the ``otel`` extra; ``[tracing] enabled``).

Imported only when tracing is enabled (``service.tracing.load_batch_tracer``). For each
engine batch :class:`OtelBatchTracer` makes one span, ``weir.batch`` (kind ``CONSUMER``, a
root: a batch mixes events of many traces), from dispatch to its last decision handed to
the sink, with

- attributes ``messaging.batch.message_count`` (rows), ``weir.batch.bucket``,
  ``weir.model.version``, ``weir.batch.traced`` (rows with a trace context),
  ``weir.queue_wait.max_ns`` (dispatch minus the oldest row's ingest),
  ``weir.inference_ns`` (the engine call) and ``weir.publish_ns`` (inference done to the
  last decision handed to the sink); status ``ERROR`` when the engine failed;
- a link to each traced event's incoming context.

A span belongs to one trace, so the decision of a traced event cannot name the batch span
as its parent and keep the input's trace-id. Each traced event gets a span of its own,
``weir.event``: a child of the incoming context (same trace-id, weir's new span id), from
the event's ingest to the batch's end, linked to the batch span. Its context (and the
incoming ``tracestate``) is what the decision's ``traceparent``/``tracestate`` carry.
Events without a trace context cost the batch nothing more than the batch span. With
``[tracing] event_spans = false`` there are no event spans: the batch span still links
every traced event, and decisions forward their input's context unchanged (a traced event
then costs a ``Link``, not a span). The incoming context is read from the headers
``service.tracing`` validated (no second parse), and the outgoing one written in the W3C
form, as ``TraceContextTextMapPropagator`` would.

The tracer provider is the process's (``opentelemetry.trace.get_tracer_provider()``, e.g.
configured by ``opentelemetry-instrument``); when nothing configured one, weir builds its
own SDK ``TracerProvider`` from the ``OTEL_*`` environment variables (service name,
resource, sampler, span limits, batch processor) with a ``BatchSpanProcessor`` per exporter
named in ``OTEL_TRACES_EXPORTER`` (entry points ``opentelemetry_traces_exporter``: ``otlp``
needs ``opentelemetry-exporter-otlp``; unset or ``none``: no exporter), and never sets it
as the global provider. ``close`` shuts that one down (exporting what is pending).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from service.base import TraceHeaders
from service.errors import ConfigError
from service.tracing import TRACEPARENT, TRACESTATE

if TYPE_CHECKING:
    from service.base import TraceSlots
    from service.scheduler.base import Item
    from service.settings import TracingSettings

__all__ = ["OtelBatchTracer", "provider_from_environment"]

TRACER_NAME = "weir"
EXPORTER_GROUP = "opentelemetry_traces_exporter"
_ROOT = Context()


def _exporter(name: str) -> SpanExporter:
    found = entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=EXPORTER_GROUP))
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides "
            f"(installed: {', '.join(known) or 'none'}; otlp comes with "
            "opentelemetry-exporter-otlp)"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


def provider_from_environment() -> TracerProvider:
    """An SDK tracer provider from the ``OTEL_*`` variables (see the module docstring);
    an exporter name that no installed package provides is a ``ConfigError``."""
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    exporters = [] if names.lower() in ("", "none") else names.split(",")
    processors = [BatchSpanProcessor(_exporter(name.strip())) for name in exporters]
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


_STATES_KEPT = 256
"""Parsed ``tracestate`` values kept (a value repeats across the events of one upstream)."""


def _incoming(headers: TraceHeaders, states: dict[bytes, TraceState]) -> SpanContext:
    """The remote span context of a validated ``traceparent`` (its first 55 characters,
    as the spec reads a later version) and ``tracestate`` (parsed once per value, kept in
    ``states``)."""
    tp = headers[0][1]
    state = None
    if len(headers) > 1:
        raw = headers[1][1]
        state = states.get(raw)
        if state is None:
            if len(states) >= _STATES_KEPT:
                states.clear()
            # latin-1 never fails; a value the spec does not allow parses as an empty state
            state = states[raw] = TraceState.from_header([raw.decode("latin-1")])
    return SpanContext(
        int(tp[3:35], 16),
        int(tp[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(tp[53:55], 16)),
        trace_state=state,
    )


def _outgoing(sc: SpanContext, parent: SpanContext, incoming: TraceHeaders | None) -> TraceHeaders:
    """The headers of span context ``sc``: the incoming ``tracestate`` as it came when the
    span kept its parent's (the SDK's samplers do), else the span's own."""
    tp = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}".encode()
    if sc.trace_state is parent.trace_state and incoming is not None and len(incoming) > 1:
        return ((TRACEPARENT, tp), incoming[1])
    state = sc.trace_state.to_header()
    return ((TRACEPARENT, tp), (TRACESTATE, state.encode())) if state else ((TRACEPARENT, tp),)


class OtelBatchTracer:
    """``service.base.BatchTracer`` over an OpenTelemetry tracer (module docstring)."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        owned: TracerProvider | None = None,
        event_spans: bool = True,
    ) -> None:
        self._tracer = tracer
        self._owned = owned
        self._event_spans = event_spans
        self._states: dict[bytes, TraceState] = {}
        self._batch: Span | None = None
        self._events: list[Span] = []
        self._done_ns = 0
        self._m2w = 0

    @classmethod
    def from_environment(cls, settings: TracingSettings) -> OtelBatchTracer:
        """Over the process's tracer provider, else one of weir's own from ``OTEL_*``."""
        provider = trace.get_tracer_provider()
        owned = None
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            provider = owned = provider_from_environment()
        return cls(provider.get_tracer(TRACER_NAME), owned=owned, event_spans=settings.event_spans)

    def begin(
        self,
        bucket: int,
        items: Sequence[Item[int]],
        carry: TraceSlots,
        ingest_ns: Sequence[int],
        dispatch_ns: int,
        done_ns: int,
        model_version: str,
        error: str | None,
        mono_to_wall_ns: int,
    ) -> None:
        """Start the batch's span and (``event_spans``) a child span of each traced event's
        context, whose headers replace the event's in ``carry``."""
        tracer = self._tracer
        links: list[Link] = []
        traced: list[tuple[int, SpanContext]] = []
        oldest = dispatch_ns
        contexts = carry.slot
        held = carry.held
        for item in items:
            slot = item.payload
            oldest = min(oldest, ingest_ns[slot])
            headers = contexts[slot] if held else None
            if headers is not None:
                parent = _incoming(headers, self._states)
                links.append(Link(parent))
                traced.append((slot, parent))
        batch = tracer.start_span(
            "weir.batch",
            context=_ROOT,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.batch.message_count": len(items),
                "weir.batch.bucket": bucket,
                "weir.batch.traced": len(traced),
                "weir.model.version": model_version,
                "weir.queue_wait.max_ns": dispatch_ns - oldest,
                "weir.inference_ns": done_ns - dispatch_ns,
            },
            links=links,
            start_time=dispatch_ns + mono_to_wall_ns,
        )
        if error is not None:
            batch.set_status(Status(StatusCode.ERROR, error))
        self._batch = batch
        self._done_ns = done_ns
        self._m2w = mono_to_wall_ns
        if not self._event_spans:
            return
        to_batch = [Link(batch.get_span_context())]
        events = self._events
        for slot, parent in traced:
            span = tracer.start_span(
                "weir.event",
                context=trace.set_span_in_context(NonRecordingSpan(parent)),
                links=to_batch,
                start_time=ingest_ns[slot] + mono_to_wall_ns,
            )
            contexts[slot] = _outgoing(span.get_span_context(), parent, contexts[slot])
            events.append(span)

    def end(self, end_ns: int) -> None:
        """End the spans ``begin`` started, at ``end_ns``."""
        batch = self._batch
        if batch is None:
            return
        at = end_ns + self._m2w
        for span in self._events:
            span.end(end_time=at)
        batch.set_attribute("weir.publish_ns", end_ns - self._done_ns)
        batch.end(end_time=at)
        self._batch = None
        self._events = []

    def close(self) -> None:
        """Shut down the provider weir built itself (its exporters flush); else nothing."""
        if self._owned is not None:
            self._owned.shutdown()
            self._owned = None
