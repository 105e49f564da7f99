"""``python -m bench.trace`` runs every mode and prints figures (nothing about speed is
asserted: a benchmark measures, it does not gate)."""

from __future__ import annotations

import pytest

from bench import trace


def test_every_mode_runs_and_traced_modes_carry_context(capsys: pytest.CaptureFixture[str]) -> None:
    """A short run prints a row per mode; traced modes' decisions all carry a traceparent,
    untraced ones none, and only OpenTelemetry modes export spans."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
    trace.main(["--events", "160", "--rounds", "3", "--keys", "4"])
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert list(rows) == list(trace.MODES)
    carried = {mode: int(row[-2]) for mode, row in rows.items()}
    spans = {mode: int(row[-1]) for mode, row in rows.items()}
    assert carried == {
        "none": 0,
        "forward": 160,
        "otel-untraced": 0,
        "otel-links": 160,
        "otel": 160,
    }
    assert spans["none"] == spans["forward"] == 0
    assert spans["otel-untraced"] > 0  # batch spans (their count depends on timing)
    assert 0 < spans["otel-links"] < spans["otel"]  # plus an event span per traced event


def test_fewer_than_three_rounds_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A spread needs at least three rounds."""
    with pytest.raises(SystemExit) as info:
        trace.main(["--rounds", "2"])
    assert info.value.code == 2
    assert "--rounds must be at least 3 (the spread needs them)" in capsys.readouterr().err
