"""Importing the recorded real feeds in ../shared/feeds gives the counts in their README.

The README's Binance "events" column counts every line of the capture, and each capture
holds exactly one REST depth snapshot line: events = stream messages + 1 snapshot
(btcusdt spot: 28,040 + 3,451 + 9,757 + 1 = 41,249). NAB "rows" are data rows without
the header.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest

from replay import anomaly_windows, import_binance, import_nab
from replay.importers import ImportLog, iter_binance
from schemas import BookDiff, BookSnapshot, FeedReader, Quote, SensorReading, Trade

FEEDS = Path(
    os.environ.get("WEIR_FEEDS_DIR")
    or Path(__file__).resolve().parents[2] / ".." / "shared" / "feeds"
)
BINANCE = FEEDS / "binance"
NAB = FEEDS / "nab" / "data" / "realKnownCause"

pytestmark = pytest.mark.skipif(
    not (BINANCE.is_dir() and NAB.is_dir()),
    reason=f"shared feeds not found at {FEEDS} (set WEIR_FEEDS_DIR)",
)


@pytest.mark.parametrize(
    ("name", "events", "span_s", "split"),
    [
        (
            "btcusdt_20240808.gz",
            41_249,
            346,
            {"quote": 28_040, "book_diff": 3_451, "trade": 9_757, "book_snapshot": 1},
        ),
        ("ethusdt_20240808.gz", 33_618, 346, None),
        ("btcusdt_usdm_20240808.gz", 93_954, 345, None),
    ],
)
def test_binance_capture_counts(
    tmp_path: Path, name: str, events: int, span_s: int, split: dict[str, int] | None
) -> None:
    """Each capture imports without a bad line into the README's event count (snapshot
    line included), per-kind split and span."""
    report = import_binance([BINANCE / name], tmp_path / "f.parquet")
    assert report.rows_written == events == report.lines_read
    assert report.bad_count == 0 and report.skipped == {}
    assert report.counts["book_snapshot"] == 1
    if split is not None:
        assert report.counts == split
    assert round(report.span_ns / 1e9) == span_s
    assert report.recv_backwards == 0
    assert FeedReader(tmp_path / "f.parquet").num_rows == events


def test_binance_prices_parse_like_float() -> None:
    """Every price and quantity of the first 3,000 spot lines equals float() of its string."""
    path = BINANCE / "btcusdt_20240808.gz"
    with gzip.open(path, "rt") as f:
        raw = [json.loads(next(f).split(" ", 1)[1]) for _ in range(3000)]
    events = [e for _, e in zip(range(3000), iter_binance(path, log=ImportLog()), strict=False)]
    for (_, ev), msg in zip(events, raw, strict=True):
        d = msg.get("data", msg)
        match ev:
            case Quote():
                assert (ev.bid_px, ev.bid_qty, ev.ask_px, ev.ask_qty) == tuple(
                    float(d[k]) for k in "bBaA"
                )
            case Trade():
                assert (ev.price, ev.qty) == (float(d["p"]), float(d["q"]))
            case BookDiff():
                assert ev.bids == [(float(p), float(q)) for p, q in d["b"]]
                assert ev.asks == [(float(p), float(q)) for p, q in d["a"]]
            case BookSnapshot():
                assert ev.bids == [(float(p), float(q)) for p, q in d["bids"]]
                assert ev.asks == [(float(p), float(q)) for p, q in d["asks"]]
            case _:
                pytest.fail(f"unexpected event {ev!r}")


NAB_ROWS = {
    "machine_temperature_system_failure.csv": (22_695, 4),
    "ambient_temperature_system_failure.csv": (7_267, 2),
    "nyc_taxi.csv": (10_320, 5),
    "cpu_utilization_asg_misconfiguration.csv": (18_050, 1),
    "ec2_request_latency_system_failure.csv": (4_032, 3),
    "rogue_agent_key_hold.csv": (1_882, 2),
    "rogue_agent_key_updown.csv": (5_315, 2),
}


def test_nab_counts_windows_and_quirks(tmp_path: Path) -> None:
    """All 7 NAB files import with the README's row and window counts, quirks kept in order."""
    out = tmp_path / "nab.parquet"
    report = import_nab([NAB / n for n in NAB_ROWS], out)
    assert report.bad_count == 0
    assert report.rows_written == sum(rows for rows, _ in NAB_ROWS.values())
    windows = anomaly_windows(out)
    series: dict[str, list[int]] = {}
    for r in FeedReader(out).records():
        assert isinstance(r.event, SensorReading) and r.event.source_ts_ns == r.recv_ns
        series.setdefault(r.event.sensor_id, []).append(r.recv_ns)
    for name, (rows, n_windows) in NAB_ROWS.items():
        stem = name.removesuffix(".csv")
        assert len(series[stem]) == rows, name
        assert len(windows[stem]) == n_windows, name
    steps = {k: [b - a for a, b in itertools.pairwise(v)] for k, v in series.items()}
    assert [s for s in steps["machine_temperature_system_failure"] if s < 0] == [-3_300 * 10**9]
    assert sum(s == 0 for s in steps["ec2_request_latency_system_failure"]) == 11
