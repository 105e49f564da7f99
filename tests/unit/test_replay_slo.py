"""SLO files: parsing, exact errors for bad files, and verdicts."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from replay.measure import summarize
from replay.results import Completeness, LatencySummary, SenderStats
from replay.slo import Slo, SloError, evaluate, load_slo, parse_percentile_key, parse_slo

GOOD = """
budget_ms = 5
min_attainment = 0.99
max_lost = 0
max_duplicates = 2
max_sender_lag_ms = 20
[percentiles]
p50 = 1.5
p99 = 5
"p99.9" = 10
p99_99 = 40
"""


def _completeness(*, lost: int = 0, dup: int = 0, attainment: float | None = 1.0) -> Completeness:
    return Completeness(
        inputs=100,
        decided=100 - lost,
        lost=lost,
        duplicated=dup,
        duplicated_inputs=dup,
        dead_lettered=0,
        unmatched=0,
        undecodable=0,
        by_status={"ok": 100 - lost},
        late=0,
        over_budget=0,
        misses=lost,
        budget_ms=5.0,
        attainment=attainment,
        attainment_definition="",
    )


def _sender(max_lag_ms: float = 1.0) -> SenderStats:
    lag = summarize(np.array([int(max_lag_ms * 1e6)], dtype=np.int64))
    return SenderStats(
        lag=lag,
        threshold_ms=50,
        behind=False,
        sent=100,
        send_failed=0,
        achieved_rate=100.0,
        intended_rate=100.0,
    )


def _latency(ms: list[float]) -> dict[str, LatencySummary]:
    values = np.array([int(x * 1e6) for x in ms], dtype=np.int64)
    return {"e2e": summarize(values), "raw": summarize(values), "source": summarize(values[:0])}


def test_good_file_parses(tmp_path: Path) -> None:
    """Every key of a full SLO file is read, percentiles sorted, both spellings of p99.9."""
    path = tmp_path / "slo.toml"
    path.write_text(GOOD)
    slo = load_slo(path)
    assert slo.budget_ms == 5.0
    assert slo.percentiles == ((50.0, 1.5), (99.0, 5.0), (99.9, 10.0), (99.99, 40.0))
    assert (slo.min_attainment, slo.max_lost, slo.max_duplicates) == (0.99, 0, 2)
    assert slo.max_sender_lag_ms == 20.0
    assert slo.source == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("budget_ms = ", "SLO file s.toml is not valid TOML: Invalid value (at end of document)"),
        (
            "min_attainment = 0.9",
            "SLO file s.toml: budget_ms is required (the end-to-end budget of one decision, in ms)",
        ),
        ("budget_ms = 5\np99 = 5", "SLO file s.toml: p99 belongs in the [percentiles] table"),
        (
            "budget_ms = 5\nbudget = 3",
            "SLO file s.toml: unknown key 'budget' (known: budget_ms, "
            "latency, max_duplicates, max_lost, max_sender_lag_ms, min_attainment, percentiles)",
        ),
        ('budget_ms = "5ms"', "SLO file s.toml: budget_ms must be a number of ms > 0, got '5ms'"),
        ("budget_ms = 0", "SLO file s.toml: budget_ms must be a number of ms > 0, got 0"),
        (
            "budget_ms = 5\nmin_attainment = 99",
            "SLO file s.toml: min_attainment must be a fraction in [0, 1], got 99",
        ),
        (
            "budget_ms = 5\nmax_lost = -1",
            "SLO file s.toml: max_lost must be an integer >= 0, got -1",
        ),
        (
            "budget_ms = 5\nmax_duplicates = true",
            "SLO file s.toml: max_duplicates must be an integer >= 0, got True",
        ),
        (
            "budget_ms = 5\n[percentiles]\np100 = 5",
            "SLO file s.toml: percentile key 'p100' is "
            'not pN with 0 < N < 100 (write p99, p99_9 or "p99.9")',
        ),
        (
            "budget_ms = 5\n[percentiles]\n99 = 5",
            "SLO file s.toml: percentile key '99' is not "
            'pN with 0 < N < 100 (write p99, p99_9 or "p99.9")',
        ),
        (
            "budget_ms = 5\n[percentiles]\np99 = -2",
            "SLO file s.toml: percentiles.p99 must be a number of ms > 0, got -2",
        ),
        (
            "budget_ms = 5\npercentiles = 3",
            "SLO file s.toml: percentiles must be a table of pN = ms, got 3",
        ),
        (
            'budget_ms = 5\nlatency = "p99"',
            "SLO file s.toml: latency must be one of e2e, raw, source, got 'p99'",
        ),
    ],
)
def test_bad_file_messages(text: str, message: str) -> None:
    """Each mistake in an SLO file gives one message naming the file, the key and the value."""
    with pytest.raises(SloError) as info:
        parse_slo(text, "s.toml")
    assert str(info.value) == message


def test_missing_file_message(tmp_path: Path) -> None:
    """A missing SLO file is named with the OS's reason."""
    with pytest.raises(SloError) as info:
        load_slo(tmp_path / "nope.toml")
    assert (
        str(info.value)
        == f"cannot read SLO file {tmp_path / 'nope.toml'}: No such file or directory"
    )


def test_percentile_keys() -> None:
    """p99, p99.9 and p99_9 are percentiles; p0, p100 and junk are not."""
    assert parse_percentile_key("p99") == 99.0
    assert parse_percentile_key("p99.9") == parse_percentile_key("p99_9") == 99.9
    assert parse_percentile_key("p99.999") == 99.999
    assert parse_percentile_key("p0") is None
    assert parse_percentile_key("p100") is None
    assert parse_percentile_key("q99") is None


def test_verdict_passes_and_fails_per_check() -> None:
    """Each objective is its own check; the run passes only when all do."""
    slo = parse_slo(GOOD, "s.toml")
    ms = [1.0] * 990 + [4.0] * 9 + [30.0]
    ok = evaluate(slo, latency=_latency(ms), completeness=_completeness(), sender=_sender())
    assert ok.passed, ok.checks
    assert [c.name for c in ok.checks] == [
        "e2e p50",
        "e2e p99",
        "e2e p99.9",
        "e2e p99.99",
        "attainment",
        "lost",
        "duplicates",
        "sender lag max",
    ]
    bad = evaluate(
        slo,
        latency=_latency([6.0] * 100),
        completeness=_completeness(lost=1, dup=3, attainment=0.5),
        sender=_sender(25.0),
    )
    assert not bad.passed
    assert {c.name for c in bad.checks if not c.passed} == {
        "e2e p50",
        "e2e p99",
        "attainment",
        "lost",
        "duplicates",
        "sender lag max",
    }


def test_no_decisions_fails_percentile_checks() -> None:
    """With nothing measured, a percentile limit fails and says why."""
    slo = Slo(budget_ms=5, percentiles=((99.0, 5.0),))
    v = evaluate(slo, latency=_latency([]), completeness=_completeness(), sender=_sender())
    assert not v.passed
    assert v.checks[0].detail == "no decisions to measure"


def test_default_slo_checks_only_loss() -> None:
    """Without a file only max_lost = 0 is checked."""
    v = evaluate(
        Slo.default(5.0),
        latency=_latency([99.0]),
        completeness=_completeness(lost=1),
        sender=_sender(),
    )
    assert [(c.name, c.passed) for c in v.checks] == [("lost", False)]


def test_figures_past_the_histogram_range_never_pass() -> None:
    """A percentile or sender lag that fell past the histogram's range is only a lower bound:
    its check fails even where that bound is within the limit, and says so."""
    beyond = LatencySummary(
        count=10, max_ms=60_000.0, percentiles={"99": 60_029.0}, clamped_high=10
    )
    sender = msgspec.structs.replace(_sender(), lag=beyond)
    slo = Slo(budget_ms=5, percentiles=((99.0, 90_000.0),), max_sender_lag_ms=90_000.0)
    v = evaluate(slo, latency={"e2e": beyond}, completeness=_completeness(), sender=sender)
    assert [(c.name, c.passed, c.lower_bound) for c in v.checks] == [
        ("e2e p99", False, True),
        ("lost", True, False),
        ("sender lag max", False, True),
    ]
    assert v.checks[0].detail == "beyond the histogram's 60,000 ms range: at least this"
