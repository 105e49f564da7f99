"""bench.tail's variants and the figures it takes from a run's two JSON files."""

from __future__ import annotations

import pytest

from bench.tail import figures, line, parse_variant


def test_a_variant_holds_environment_and_demo_arguments() -> None:
    """Items with ``=`` are environment variables, items starting with ``--`` demo
    arguments; ``name=`` alone changes nothing."""
    assert parse_variant("on=") == ("on", {}, [])
    assert parse_variant("p=A=1,--broker-jvm-option=-Xmn1m,B=x=y") == (
        "p",
        {"A": "1", "B": "x=y"},
        ["--broker-jvm-option=-Xmn1m"],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=A=1", "variant '=A=1' has no name (expected name=VAR=value,...)"),
        ("x=A", "variant 'x=A': 'A' is not VAR=value"),
    ],
)
def test_a_malformed_variant_is_refused(text: str, message: str) -> None:
    """A variant without a name, or an item that is neither VAR=value nor --arg, is an
    error naming it."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_variant(text)


def test_figures_prefer_the_service_collections_of_the_measured_run() -> None:
    """The e2e percentiles come from results.json; the service's GC figures are those of
    the measured run where the diagnosis has them; the line prints every figure."""
    result = {"latency": {"e2e": {"percentiles": {"50": 5.0, "99": 20.0, "99.9": 30.0}}}}
    gens = {"0": {"count": 50, "max_ms": 9.0}, "2": {"count": 1, "max_ms": 40.0}}
    diagnosis = {
        "service": {
            "gc": {"generations": gens},
            "loop_lag": {"p99_ms": 3.0, "max_ms": 8.0},
            "commit": {"p99_ms": 12.0},
        },
        "service_run_gc": {
            "0": {"count": 7, "total_ms": 2.0, "max_ms_if_over_1": 1.5},
            "2": {"count": 0, "total_ms": 0.0, "max_ms_if_over_1": None},
        },
        "harness": {"gc": {"generations": gens}, "loop_lag": None},
        "broker_gc": {"count": 2, "max_ms": 18.0},
        "windows": [{"e2e_p99_ms": 19.0}, {"e2e_p99_ms": None}],
    }
    f = figures(result, diagnosis)
    assert (f["p50"], f["p99"], f["p999"]) == (5.0, 20.0, 30.0)
    assert f["service_gc"] == (7, 1.5) and f["harness_gc"] == (51, 40.0)
    assert f["broker_gc"] == (2, 18.0) and f["commit_p99"] == 12.0
    assert line("on", f) == (
        "  on   e2e p50 5.0 p99 20.0 p99.9 30.0 ms | window p99 19.0/- | gc svc 7x max 1.5 "
        "harness 51x max 40.0 ms | loop lag p99/max svc 3.0/8.0 harness -/- ms | commit p99 "
        "12.0 ms | broker gc 2x max 18.0 ms"
    )
