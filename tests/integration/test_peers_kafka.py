"""The side-by-side through a real broker: a tiny run of three contenders loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.peers.harness import Bench
from bench.peers.session import Options
from replay.synthetic import synthesize_market


@pytest.mark.slow
async def test_tiny_side_by_side_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    """After a half-second broker warm-up through the echo (not recorded), weir, the naive
    loop and the echo, each warmed up and replayed for a moment at a low
    rate (1x, 10x, then one 200/s step of the interleaved curve), decide every input
    exactly once. Sizes: a few hundred events per load (1x and the step last 1.5 s and
    1 s; 10x sends ~1,250 in 0.6 s; the warm-up takes 0.2 s) - the process starts are the
    rest of the time."""
    feed = tmp_path / "feed.parquet"
    synthesize_market(feed, seconds=20.0, rate=100.0, seed=3)
    opts = Options(
        out=tmp_path / "out",
        feed=feed,
        contenders=("weir", "naive", "echo"),
        repeats=1,
        budget_ms=1000.0,
        seconds_1x=1.5,
        seconds_10x=6.0,
        step_s=1.0,
        ramp_start=200.0,
        ramp_max=200.0,
        refine=0,
        warmup_events=200,
        warmup_rate=1000.0,
        broker_warmup_s=0.5,
        broker_warmup_rate=400.0,
        bootstrap=kafka_bootstrap,
        profile=(),
        settle_s=0.2,
        quiet_s=5.0,
        startup_timeout_s=90.0,
        scenarios=(),
        inproc_events=0,
    )
    bench = Bench(opts)
    bench.bootstrap = kafka_bootstrap
    result = await bench.run()
    assert [r.contender for r in result.runs] == ["weir", "naive", "echo"]
    assert "broker warm-up: 200 events at 400/s through the echo" in result.notes[1]
    assert result.notes[1].endswith("(200 decided)")
    for run in result.runs:
        assert run.error is None, run.error
        steps = [t for t in result.curve if t.contender == run.contender]
        trials = [*run.trials, *steps]
        assert [t.load for t in trials] == ["1x", "10x", "rate"]
        for t in trials:
            assert t.events > 100, (run.contender, t.load, t.events)
            assert (t.lost, t.duplicated, t.unmatched) == (0, 0, 0), (run.contender, t.load)
            assert t.cpu_s is not None and t.cpu_s > 0
            # weir's own process is read through its ops endpoint around each trial; the
            # peers have none.
            read = (t.loop_held_ms, t.gc_pause_ms)
            if run.contender == "weir":
                assert None not in read and min(read) >= 0, read  # type: ignore[operator]
            else:
                assert read == (None, None)
        assert run.peak_rss_mib is not None and run.peak_rss_mib > 20
    assert (opts.out / "peers.json").exists()
