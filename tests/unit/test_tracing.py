"""W3C trace context from input records to decisions and dead letters (OpenTelemetry off)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.decision import Status
from service.counters import Counters
from service.errors import ConfigError
from service.memory import MemoryRecord, SentMessage
from service.settings import TracingSettings, load_settings
from service.tracing import TraceCarry, load_batch_tracer, valid_traceparent
from tests.pipeline_io import TOPIC, quote_record, run_pipeline

WINDOW = 4  # the window of the conftest fixtures
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
STATE = b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def _record(i: int, headers: list[tuple[str, Any]] | None = None, key: str = "K") -> MemoryRecord:
    return quote_record(i, key=key, timestamp=1_700_000_000_000 + i, headers=headers or ())


def _trace_headers(m: SentMessage) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in m.headers if k in ("traceparent", "tracestate")]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (PARENT, True),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-00".encode(), True),
        (f"cc-{TRACE_ID}-00f067aa0ba902b7-01-what-comes-later".encode(), True),
        (f"cc-{TRACE_ID}-00f067aa0ba902b7-01".encode(), True),
        (f"cc-{TRACE_ID}-00f067aa0ba902b7-01x".encode(), False),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-01-later".encode(), False),
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01".encode(), False),
        (f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01".encode(), False),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01".encode(), False),
        (f"00-{TRACE_ID}-{'0' * 16}-01".encode(), False),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-0".encode(), False),
        (f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01".encode(), False),
        (f"00_{TRACE_ID}-00f067aa0ba902b7-01".encode(), False),
        (b"", False),
        (None, False),
        (PARENT.decode(), False),
    ],
)
def test_traceparent_validation_follows_the_w3c_rules(value: object, valid: bool) -> None:
    """Version 00 is exactly 55 lower-case hex characters with non-zero ids; ff is invalid;
    a later version may go on after a dash; anything but bytes is invalid."""
    assert valid_traceparent(value) is valid


def test_read_keeps_traceparent_and_joins_tracestates() -> None:
    """A valid traceparent comes back with the tracestate headers joined by commas; other
    headers are left out."""
    carry = TraceCarry(2, Counters())
    got = carry.read(
        [("x", b"1"), ("tracestate", b"a=1"), ("traceparent", PARENT), ("tracestate", b"b=2")]
    )
    assert got == (("traceparent", PARENT), ("tracestate", b"a=1,b=2"))
    assert carry.read([("x", b"1")]) is None


@pytest.mark.parametrize(
    "headers",
    [
        [("traceparent", b"00-nope"), ("tracestate", STATE)],
        [("traceparent", PARENT), ("traceparent", PARENT)],
        [("traceparent", None)],
    ],
)
def test_read_counts_a_malformed_traceparent_and_drops_its_tracestate(
    headers: list[tuple[str, Any]],
) -> None:
    """A malformed or repeated traceparent gives nothing to forward and is counted."""
    counters = Counters()
    carry = TraceCarry(2, counters)
    assert carry.read(headers) is None
    assert counters.trace_malformed == 1


async def test_decisions_forward_trace_context_unchanged(make_pipeline: Any) -> None:
    """With tracing off, every decision (warming and ok) of a traced record carries its
    traceparent and tracestate unchanged; untraced records' decisions carry none."""
    pipe, sink, _ = make_pipeline()
    records = [
        _record(i, [("traceparent", PARENT), ("tracestate", STATE)] if i % 2 else None)
        for i in range(12)
    ]
    await run_pipeline(pipe, records, chunk=5)
    sent = sink.on("weir.decisions")
    assert len(sent) == 12
    statuses = {m.header("weir-status") for m in sent}
    assert statuses == {b"warming", b"ok"}
    for m in sent:
        offset = int(m.value.split(b'"offset":')[1].split(b",")[0])
        want = [("traceparent", PARENT), ("tracestate", STATE)] if offset % 2 else []
        assert _trace_headers(m) == want, offset
    assert pipe.trace.held == 0
    assert pipe.counters.trace_malformed == 0


async def test_malformed_traceparent_is_not_forwarded_and_is_counted(make_pipeline: Any) -> None:
    """A record with a malformed traceparent is decided as usual, without trace headers,
    and counted once."""
    pipe, sink, _ = make_pipeline()
    bad = [("traceparent", b"00-xyz-01"), ("tracestate", STATE)]
    await run_pipeline(
        pipe, [_record(i, bad if i == WINDOW else None) for i in range(WINDOW + 2)], chunk=5
    )
    sent = sink.on("weir.decisions")
    assert [m.header("weir-status") for m in sent].count(b"ok") == 3
    assert all(_trace_headers(m) == [] for m in sent)
    assert pipe.counters.trace_malformed == 1


async def test_shed_decision_from_the_scratch_slot_carries_trace_context(
    make_pipeline: Any,
) -> None:
    """An event decided at ingest (shed: no slot free) still forwards its traceparent."""
    settings = load_settings(
        env={"WEIR_SCHEDULER__BUDGET_MS": "50", "WEIR_SCHEDULER__MAX_QUEUE": "1"}
    )
    pipe, sink, _ = make_pipeline(settings=settings, max_batch=1)
    records = [_record(i, [("traceparent", PARENT)], key=f"K{i % 2}") for i in range(40)]
    await run_pipeline(pipe, records, chunk=40)
    sent = sink.on("weir.decisions")
    assert pipe.counters.decisions[Status.SHED] > 0
    assert len(sent) == 40
    assert all(_trace_headers(m) == [("traceparent", PARENT)] for m in sent)
    assert pipe.trace.held == 0


async def test_dead_letter_carries_trace_context(make_pipeline: Any) -> None:
    """An undecodable traced record's dead letter has its traceparent and tracestate as
    Kafka headers beside the reason."""
    pipe, sink, _ = make_pipeline()
    rec = MemoryRecord(
        TOPIC, 0, 0, b"{not json", headers=[("traceparent", PARENT), ("tracestate", STATE)]
    )
    await run_pipeline(pipe, [rec], chunk=5)
    (dead,) = sink.on("weir.dlq")
    assert dead.headers == [
        ("weir-reason", b"malformed"),
        ("traceparent", PARENT),
        ("tracestate", STATE),
    ]


def test_tracing_disabled_builds_no_tracer() -> None:
    """``[tracing] enabled = false`` (the default) imports nothing and gives no tracer."""
    assert load_batch_tracer(TracingSettings()) is None


def test_tracing_enabled_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enabled tracing without OpenTelemetry installed stops the start naming the extra."""
    import sys

    monkeypatch.delitem(sys.modules, "service.otel", raising=False)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigError) as err:
        load_batch_tracer(TracingSettings(enabled=True))
    assert str(err.value) == (
        "[tracing] enabled = true needs OpenTelemetry, which is not installed "
        "(import of opentelemetry halted; None in sys.modules): install weir's otel extra "
        "(pip install 'weir[otel]') or set [tracing] enabled = false "
        "(WEIR_TRACING__ENABLED=false)"
    )
    assert isinstance(err.value.__cause__, ImportError)


def test_tracing_setting_names_a_bad_value() -> None:
    """A value that is not a boolean is an error naming the field and its source."""
    with pytest.raises(ConfigError) as err:
        load_settings(env={"WEIR_TRACING__ENABLED": "maybe"})
    assert str(err.value) == (
        "bad settings from defaults + environment (WEIR_TRACING__ENABLED): "
        "Expected `bool`, got `str` - at `$.tracing.enabled`"
    )
    assert load_settings(env={"WEIR_TRACING__ENABLED": "true"}).tracing.enabled is True


def test_tracing_setting_rejects_an_unknown_key(tmp_path: Any) -> None:
    """An unknown key under [tracing] is an error naming it."""
    path = tmp_path / "weir.toml"
    path.write_text("[tracing]\nenabeld = true\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert str(err.value) == (
        f"bad settings from {path}: Object contains unknown field `enabeld` - at `$.tracing`"
    )
