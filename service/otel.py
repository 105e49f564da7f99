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
incoming ``tracestate``) is what the decision's ``traceparent``/``tracestate`` carry
(``TraceContextTextMapPropagator``). Events without a trace context cost the batch
nothing more than the batch span.

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
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.errors import ConfigError

if TYPE_CHECKING:
    from service.base import TraceSlots
    from service.scheduler.base import Item

__all__ = ["OtelBatchTracer", "provider_from_environment"]

TRACER_NAME = "weir"
EXPORTER_GROUP = "opentelemetry_traces_exporter"
_ROOT = Context()
_PROPAGATOR = TraceContextTextMapPropagator()


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


class OtelBatchTracer:
    """``service.base.BatchTracer`` over an OpenTelemetry tracer (module docstring)."""

    def __init__(self, tracer: trace.Tracer, *, owned: TracerProvider | None = None) -> None:
        self._tracer = tracer
        self._owned = owned
        self._batch: Span | None = None
        self._events: list[Span] = []
        self._done_ns = 0
        self._m2w = 0

    @classmethod
    def from_environment(cls) -> OtelBatchTracer:
        """Over the process's tracer provider, else one of weir's own from ``OTEL_*``."""
        provider = trace.get_tracer_provider()
        owned = None
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            provider = owned = provider_from_environment()
        return cls(provider.get_tracer(TRACER_NAME), owned=owned)

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
        """Start the batch's span and a child span of each traced event's context."""
        tracer = self._tracer
        links: list[Link] = []
        traced: list[tuple[int, Context]] = []
        oldest = dispatch_ns
        contexts = carry.slot
        held = carry.held
        for item in items:
            slot = item.payload
            oldest = min(oldest, ingest_ns[slot])
            headers = contexts[slot] if held else None
            if headers is None:
                continue
            incoming = _PROPAGATOR.extract({k: v.decode("ascii") for k, v in headers})
            parent = trace.get_current_span(incoming).get_span_context()
            if parent.is_valid:
                links.append(Link(parent))
                traced.append((slot, incoming))
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
        to_batch = [Link(batch.get_span_context())]
        events = []
        for slot, incoming in traced:
            span = tracer.start_span(
                "weir.event",
                context=incoming,
                links=to_batch,
                start_time=ingest_ns[slot] + mono_to_wall_ns,
            )
            out: dict[str, str] = {}
            _PROPAGATOR.inject(out, context=trace.set_span_in_context(span, incoming))
            contexts[slot] = tuple((k, v.encode("ascii")) for k, v in out.items())
            events.append(span)
        self._batch = batch
        self._events = events
        self._done_ns = done_ns
        self._m2w = mono_to_wall_ns

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
