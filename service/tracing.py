"""W3C Trace Context carried from an input record to its decision (and its dead letter).

An input record may carry a ``traceparent`` header (W3C Trace Context,
``00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>``) and a ``tracestate``. The
pipeline hands the headers of each record that has any to :meth:`TraceCarry.read`, which
finds and validates them; the headers to forward are kept in the event's slot
(:attr:`TraceCarry.slot`) until its decision is published, and put on the decision record
beside weir's own headers. A record without headers costs one truthiness test at ingest and
one list read at publish; nothing is parsed.

With OpenTelemetry off (``[tracing] enabled = false``, the default) weir forwards
``traceparent`` and ``tracestate`` unchanged, as the spec asks of an intermediary that does
not take part in the trace. With it on, a ``service.base.BatchTracer``
(``service.otel.OtelBatchTracer``) replaces the slot's headers of each inferred event by
those of weir's own span before the batch's decisions go out.

A malformed ``traceparent`` (or more than one) is not forwarded, nor is the ``tracestate``
beside it (the spec: a vendor that cannot parse ``traceparent`` must not use
``tracestate``); the event is decided as usual and ``Counters.trace_malformed`` counts it
(``weir_trace_context_malformed_total``). Several ``tracestate`` headers are joined with
commas, as the spec joins repeated HTTP headers.

:func:`load_batch_tracer` builds the OpenTelemetry tracer when ``[tracing]`` enables it:
the ``otel`` extra is imported only then, and its absence is a ``ConfigError`` naming it.

Owned by the event loop (not thread-safe).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.base import TraceHeaders
from service.errors import ConfigError

if TYPE_CHECKING:
    from service.base import BatchTracer
    from service.counters import Counters
    from service.settings import TracingSettings

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "TraceCarry",
    "TraceHeaders",
    "load_batch_tracer",
    "valid_traceparent",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_V00_LEN = 55


def valid_traceparent(value: object) -> bool:
    """Whether ``value`` is a ``traceparent`` the W3C spec lets a receiver use.

    Version ``00`` is exactly 55 characters; a later version (not ``ff``) may go on after
    a ``-``, which is kept when forwarding. Lower-case hex only; an all-zero trace-id or
    parent-id is invalid.
    """
    if type(value) is not bytes:
        return False
    m = _TRACEPARENT.match(value)
    if m is None:
        return False
    version, trace_id, parent_id = m.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return False
    if len(value) == _V00_LEN:
        return True
    return version != b"00" and value[_V00_LEN : _V00_LEN + 1] == b"-"


class TraceCarry:
    """The trace headers of each queued event, by slot (see the module docstring)."""

    __slots__ = ("_counters", "held", "slot")

    def __init__(self, rows: int, counters: Counters) -> None:
        self.slot: list[TraceHeaders | None] = [None] * rows
        """The headers to forward with the decision of the event in each slot."""
        self.held = 0
        """Slots holding headers: 0 means no queued event is traced (nothing to look at)."""
        self._counters = counters

    def read(self, headers: Sequence[tuple[str, bytes]]) -> TraceHeaders | None:
        """The trace headers to forward from a record's ``headers``; None when it has no
        ``traceparent``, or only a malformed one (counted)."""
        parent: bytes | None = None
        states: list[bytes] = []
        seen = 0
        for name, value in headers:
            if name == TRACEPARENT:
                parent = value
                seen += 1
            elif name == TRACESTATE and type(value) is bytes:
                states.append(value)
        if not seen:
            return None
        if seen > 1 or not valid_traceparent(parent):
            self._counters.trace_malformed += 1
            return None
        assert parent is not None
        if not states:
            return ((TRACEPARENT, parent),)
        return ((TRACEPARENT, parent), (TRACESTATE, b",".join(states)))

    def put(self, slot: int, headers: TraceHeaders) -> None:
        """Keep ``headers`` for the decision of the event in ``slot``."""
        if self.slot[slot] is None:
            self.held += 1
        self.slot[slot] = headers

    def take(self, slot: int) -> TraceHeaders | None:
        """The headers kept for ``slot`` (None: none), forgotten: its decision goes out."""
        headers = self.slot[slot]
        if headers is not None:
            self.slot[slot] = None
            self.held -= 1
        return headers


OTEL_MODULE = "service.otel"
"""The module that needs the ``otel`` extra; imported only when tracing is enabled."""


def load_batch_tracer(settings: TracingSettings) -> BatchTracer | None:
    """The batch tracer ``[tracing]`` asks for: None when disabled; a ``ConfigError``
    naming the ``otel`` extra when OpenTelemetry is not installed."""
    if not settings.enabled:
        return None
    try:
        otel = importlib.import_module(OTEL_MODULE)
    except ImportError as exc:
        raise ConfigError(
            "[tracing] enabled = true needs OpenTelemetry, which is not installed "
            f"({exc}): install weir's otel extra (pip install 'weir[otel]') or set "
            "[tracing] enabled = false (WEIR_TRACING__ENABLED=false)"
        ) from exc
    tracer: BatchTracer = otel.OtelBatchTracer.from_environment(settings)
    return tracer
