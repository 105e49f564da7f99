"""`weir replay run --in-process`: verdict table, files written, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.fake import write_tiny_trading_bundle
from replay.commands import choose_slo
from replay.results import read_result
from replay.synthetic import synthesize_market
from service.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trading bundle, service settings that use it, and a 1 s synthetic feed."""
    root = tmp_path_factory.mktemp("replay-cli")
    write_tiny_trading_bundle(root / "bundle", window=4, model_version="cli-1")
    config = root / "weir.toml"
    config.write_text(
        f'[engine]\nbundle = "{root / "bundle"}"\nwarmup_iters = 10\n'
        "[scheduler]\nbudget_ms = 50.0\n"
    )
    feed = root / "feed.parquet"
    synthesize_market(feed, seconds=1.0, seed=3, rate=100.0)
    loose = root / "loose.toml"
    loose.write_text("budget_ms = 1000\nmin_attainment = 0.5\n[percentiles]\np99 = 1000\n")
    strict = root / "strict.toml"
    strict.write_text("budget_ms = 0.001\n[percentiles]\np50 = 0.0001\n")
    return {"root": root, "config": config, "feed": feed, "loose": loose, "strict": strict}


def _run(setup: dict[str, Path], *extra: str) -> int:
    return main(
        [
            "replay",
            "run",
            str(setup["feed"]),
            "--in-process",
            "--config",
            str(setup["config"]),
            "--speed",
            "4",
            "--quiet-s",
            "1",
            "--no-progress",
            *extra,
        ]
    )


def test_run_passes_and_writes_results(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run within its SLO exits 0, prints the verdict table, writes JSON and HTML."""
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    code = _run(setup, "--slo", str(setup["loose"]), "--out", str(out), "--html", str(page))
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"verdict: PASS (SLO: {setup['loose']})" in text
    assert "e2e p99" in text and "attainment" in text
    result = read_result(out)
    assert result.config.mode == "in-process"
    assert result.completeness.lost == 0
    assert result.completeness.inputs == result.config.rows_replayed
    assert page.read_text().count('<svg class="chart"') == 7


def test_run_fails_on_violation(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A run that misses its SLO exits 1 and shows the failing check."""
    code = _run(setup, "--slo", str(setup["strict"]))
    text = capsys.readouterr().out
    assert code == 1
    row = next(line for line in text.splitlines() if line.strip().startswith("e2e p50"))
    assert row.rstrip().endswith("FAIL")
    assert "verdict: FAIL" in text


def test_run_errors_exit_2_with_the_reason(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad SLO file or a bad speed stops the run before it starts: exit 2, one line."""
    bad = tmp_path / "bad.toml"
    bad.write_text("budget_ms = 5\nmax_lost = -3\n")
    assert _run(setup, "--slo", str(bad)) == 2
    assert capsys.readouterr().err.strip() == (
        f"weir: error: SLO file {bad}: max_lost must be an integer >= 0, got -3"
    )
    assert _run(setup, "--speed", "0") == 2
    assert capsys.readouterr().err.strip() == (
        "weir: error: --speed must be a number > 0 or 'max', got '0'"
    )


def test_budget_ms_is_judged_by_attainment(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--budget-ms without an SLO file is judged: attainment against 99 % by default, so a
    budget nothing meets fails the run (exit 1) and the verdict names the rule."""
    code = _run(setup, "--budget-ms", "0.001")
    text = capsys.readouterr().out
    assert code == 1, text
    assert "verdict: FAIL (SLO: --budget-ms 0.001, attainment >= 99.00%)" in text
    table = text.split("verdict:")[1].splitlines()
    row = next(line for line in table if line.strip().startswith("attainment"))
    assert row.split()[1:4] == [">=", "99.00%", "0.000%"] and row.rstrip().endswith("FAIL")
    assert "not judged" not in text


def test_min_attainment_sets_the_floor(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--min-attainment 0 lets the same budget pass; the verdict shows the floor it used."""
    code = _run(setup, "--budget-ms", "0.001", "--min-attainment", "0")
    text = capsys.readouterr().out
    assert code == 0, text
    assert "verdict: PASS (SLO: --budget-ms 0.001, attainment >= 0.00%)" in text


def test_without_a_budget_the_verdict_says_attainment_was_not_judged(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """With neither an SLO file nor --budget-ms, the verdict says attainment was not judged."""
    code = _run(setup)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "verdict: PASS (SLO: default (nothing lost))" in text
    assert "  attainment not judged: the SLO sets no min_attainment" in text


def test_bad_budget_and_attainment_values_exit_2(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget <= 0 or an attainment outside [0, 1] stops the run before it starts."""
    assert _run(setup, "--budget-ms", "50", "--min-attainment", "99") == 2
    assert capsys.readouterr().err.strip() == (
        "weir: error: --min-attainment must be a fraction in [0, 1], got 99.0"
    )
    assert _run(setup, "--budget-ms", "-1") == 2
    assert capsys.readouterr().err.strip() == (
        "weir: error: --budget-ms must be a number of ms > 0, got -1.0"
    )
    with pytest.raises(SystemExit) as info:
        _run(setup, "--budget-ms", "5", "--slo", str(setup["loose"]))
    assert info.value.code == 2
    assert "argument --slo: not allowed with argument --budget-ms" in capsys.readouterr().err


def test_min_attainment_replaces_the_slo_files(tmp_path: Path) -> None:
    """With an SLO file, --min-attainment replaces the file's floor and says so."""
    path = tmp_path / "slo.toml"
    path.write_text("budget_ms = 5\nmin_attainment = 0.5\n")
    slo, source = choose_slo(path, budget_ms=None, min_attainment=0.9, service_budget_ms=20.0)
    assert (slo.budget_ms, slo.min_attainment, source) == (5.0, 0.9, f"SLO {path}")
    assert slo.source == f"{path}, --min-attainment"
    slo, _ = choose_slo(path, budget_ms=None, min_attainment=None, service_budget_ms=20.0)
    assert slo.min_attainment == 0.5
    slo, source = choose_slo(None, budget_ms=None, min_attainment=0.9, service_budget_ms=20.0)
    assert (slo.budget_ms, slo.min_attainment) == (20.0, 0.9)
    assert source == "the service's scheduler.budget_ms (no SLO file)"
