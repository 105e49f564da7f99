"""The seeded synthetic generator: deterministic, bursty, coherent books, known anomalies."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from replay import anomaly_windows, read_source_info, synthesize_market, synthesize_sensor
from replay.synthetic import ANOMALY_KINDS, hawkes_times
from schemas import (
    BookDiff,
    BookSnapshot,
    FeedError,
    FeedReader,
    FeedRecord,
    Quote,
    SensorReading,
    Trade,
)


@pytest.fixture
def market(tmp_path: Path) -> Callable[..., list[FeedRecord]]:
    """Factory: write a small market feed (arguments override the defaults), read it back."""

    def make(**kw: object) -> list[FeedRecord]:
        args: dict[str, object] = {"seconds": 20.0, "seed": 7} | kw
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.parquet"
        synthesize_market(out, **args)  # type: ignore[arg-type]
        return list(FeedReader(out).records())

    return make


@pytest.mark.parametrize("kind", ["market", "sensor"])
def test_same_seed_same_bytes(tmp_path: Path, kind: str) -> None:
    """The same arguments write byte-identical files; another seed writes a different one."""
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        if kind == "market":
            synthesize_market(tmp_path / f"{name}.parquet", seconds=10.0, seed=seed)
        else:
            synthesize_sensor(tmp_path / f"{name}.parquet", seconds=2000.0, seed=seed)
    a, b, c = (tmp_path / f"{n}.parquet" for n in "abc")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_market_has_every_kind_in_receive_order(market: Callable[..., list[FeedRecord]]) -> None:
    """A market feed opens each symbol with a snapshot, then quotes, diffs and trades in
    non-decreasing receive order, receive never before exchange time."""
    records = market(symbols=["AAA", "BBB"])
    recv = [r.recv_ns for r in records]
    assert recv == sorted(recv)
    for sym in ("AAA", "BBB"):
        mine = [r for r in records if r.event.key == sym]
        assert isinstance(mine[0].event, BookSnapshot)
        kinds = {type(r.event) for r in mine[1:]}
        assert kinds == {Quote, BookDiff, Trade}
    assert all(r.source_ts_ns is not None and r.source_ts_ns <= r.recv_ns for r in records)


def test_market_events_count_is_exact(market: Callable[..., list[FeedRecord]]) -> None:
    """--events N writes exactly N rows, snapshots included, split across symbols."""
    records = market(seconds=None, events=1001, symbols=["AAA", "BBB", "CCC"])
    assert len(records) == 1001
    per = [sum(r.event.key == s for r in records) for s in ("AAA", "BBB", "CCC")]
    assert per == [334, 334, 333]


def test_market_book_is_coherent(market: Callable[..., list[FeedRecord]]) -> None:
    """Diffs chain update ids from the snapshot and keep a never-crossed book of N levels,
    prices on the 0.01 tick; quotes are never crossed and their update ids only grow."""
    records = market(symbols=["AAA"], levels=5)
    snap = records[0].event
    assert isinstance(snap, BookSnapshot)
    bids = dict(snap.bids)
    asks = dict(snap.asks)
    last_u = quote_u = snap.last_update_id
    diffs = 0
    for r in records[1:]:
        ev = r.event
        if isinstance(ev, BookDiff):
            assert ev.first_update_id == last_u + 1 and ev.last_update_id >= ev.first_update_id
            last_u = ev.last_update_id
            for book, levels in ((bids, ev.bids), (asks, ev.asks)):
                for px, qty in levels:
                    assert round(px * 100) == pytest.approx(px * 100, abs=1e-6)
                    if qty == 0:
                        del book[px]
                    else:
                        book[px] = qty
            assert len(bids) == len(asks) == 5
            assert max(bids) < min(asks)
            diffs += 1
        elif isinstance(ev, Quote):
            assert ev.bid_px < ev.ask_px
            assert ev.update_id > max(quote_u, last_u)
            quote_u = ev.update_id
    assert diffs > 100


def test_market_arrivals_are_bursty(market: Callable[..., list[FeedRecord]]) -> None:
    """Hawkes arrivals are overdispersed: the gap coefficient of variation is well above 1."""
    records = market(seconds=60.0, symbols=["AAA"])
    gaps = np.diff(np.array([r.recv_ns for r in records[1:]], dtype=np.int64))
    assert gaps.std() / gaps.mean() > 1.5
    assert len(records) == pytest.approx(60 * 200, rel=0.25)


def test_market_records_regimes(tmp_path: Path) -> None:
    """The regime path of each symbol is kept in the feed's source info as ground truth."""
    out = tmp_path / "m.parquet"
    synthesize_market(out, seconds=120.0, seed=3, symbols=["AAA"], regime_mean_s=10.0)
    info = read_source_info(out)
    assert info is not None and info.importer == "synthetic"
    regimes = info.params["regimes"]["AAA"]
    assert len(regimes) > 3 and regimes[0][0] == info.params["start_ns"]
    assert {name for _, name in regimes} <= {"calm", "up", "down", "volatile"}
    assert all(a[1] != b[1] for a, b in itertools.pairwise(regimes))


def test_hawkes_mean_rate_matches_theory() -> None:
    """The cluster simulation's mean rate is base / (1 - branching)."""
    rng = np.random.default_rng(0)
    t = hawkes_times(rng, base_rate=100.0, horizon_s=200.0, branching=0.6, decay_s=0.01)
    assert t.size / 200.0 == pytest.approx(250.0, rel=0.1)
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 200.0
    with pytest.raises(FeedError):
        hawkes_times(rng, base_rate=1.0, horizon_s=1.0, branching=1.0, decay_s=0.01)


def _series(path: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in FeedReader(path).records():
        assert isinstance(r.event, SensorReading) and r.event.source_ts_ns is not None
        out.setdefault(r.event.sensor_id, []).append((r.event.source_ts_ns, r.event.value))
    return out


def test_sensor_anomalies_change_only_their_windows(tmp_path: Path) -> None:
    """With the same seed, readings differ from the anomaly-free series inside every
    window and nowhere else; windows are ordered, disjoint and labelled."""
    clean, dirty = tmp_path / "clean.parquet", tmp_path / "dirty.parquet"
    synthesize_sensor(clean, events=6000, sensors=2, seed=5, anomalies=0)
    report = synthesize_sensor(dirty, events=6000, sensors=2, seed=5, anomalies=4)
    assert anomaly_windows(clean) == {}
    windows = anomaly_windows(dirty)
    assert sorted(windows) == ["synth-00", "synth-01"]
    assert {w.label for w in report.anomalies} <= set(ANOMALY_KINDS)
    a, b = _series(clean), _series(dirty)
    for sensor, spans in windows.items():
        assert len(spans) == 4
        assert all(s <= e < s2 for (s, e), (s2, _) in itertools.pairwise(spans))
        for (ts, va), (tb, vb) in zip(a[sensor], b[sensor], strict=True):
            assert ts == tb
            inside = any(s <= ts <= e for s, e in spans)
            assert (va != vb) == inside, (sensor, ts)


def test_sensor_size_and_errors(tmp_path: Path) -> None:
    """Seconds x rate readings per sensor; exactly one of seconds/events is required."""
    report = synthesize_sensor(tmp_path / "s.parquet", seconds=100.0, rate=2.0, sensors=4)
    assert report.rows_written == 800 and report.counts == {"sensor": 800}
    with pytest.raises(FeedError) as err:
        synthesize_sensor(tmp_path / "x.parquet", seconds=1.0, events=5)
    assert str(err.value) == "give exactly one of seconds or events"
    with pytest.raises(FeedError) as err:
        synthesize_market(tmp_path / "x.parquet", seconds=1.0, rate=0.0)
    assert str(err.value) == "rate must be > 0, got 0.0"
