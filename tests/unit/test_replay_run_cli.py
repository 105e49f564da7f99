"""`weir replay run --in-process`: verdict table, files written, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.fake import write_tiny_trading_bundle
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
