"""Training datasets from feeds: the serving feature path, labels, the time split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engines.dataset import (
    TRADING_LABELS,
    balanced_theta,
    build_dataset,
    collect,
    column_stats,
    future_returns,
    infer_task,
    split_times,
    trading_labels,
)
from engines.errors import EngineError
from schemas.events import BookDiff, BookSnapshot, Event, Quote, SensorReading, Trade
from schemas.features import FeatureSpec, SensorState, Task
from schemas.feed import FeedReader, FeedWriter
from service.state import StateStore

T0 = 1_700_000_000_000_000_000


def market_events(
    n: int, *, keys: tuple[str, ...] = ("AAA", "BBB"), seed: int = 0
) -> list[tuple[Event, int]]:
    """``n`` random quotes, trades and book diffs over ``keys``, with recv times."""
    rng = np.random.default_rng(seed)
    mids = dict.fromkeys(keys, 100.0)
    out: list[tuple[Event, int]] = []
    t = T0
    for key in keys:
        snap = BookSnapshot(
            symbol=key,
            last_update_id=1,
            bids=[(99.99 - i * 0.01, 1.0 + i) for i in range(5)],
            asks=[(100.01 + i * 0.01, 1.0 + i) for i in range(5)],
        )
        out.append((snap, t))
        t += 1_000
    for i in range(n):
        key = keys[int(rng.integers(len(keys)))]
        mids[key] = round(mids[key] + 0.01 * int(rng.integers(-1, 2)), 2)
        mid = mids[key]
        t += int(rng.integers(1, 5_000_000))
        u = rng.random()
        ev: Event
        if u < 0.6:
            ev = Quote(
                symbol=key,
                bid_px=round(mid - 0.01, 2),
                bid_qty=float(rng.uniform(0.1, 5)),
                ask_px=round(mid + 0.01, 2),
                ask_qty=float(rng.uniform(0.1, 5)),
            )
        elif u < 0.8:
            ev = Trade(
                symbol=key,
                trade_id=i,
                price=mid,
                qty=float(rng.uniform(0.01, 2)),
                buyer_is_maker=bool(rng.random() < 0.5),
            )
        else:
            ev = BookDiff(
                symbol=key,
                first_update_id=i,
                last_update_id=i,
                bids=[(round(mid - 0.01, 2), float(rng.uniform(0, 3)))],
                asks=[(round(mid + 0.01, 2), float(rng.uniform(0, 3)))],
            )
        out.append((ev, t))
    return out


def write_feed(path: Path, events: Sequence[tuple[Event, int]]) -> Path:
    """Write ``events`` as a feed file (small row groups, to cross batch boundaries)."""
    with FeedWriter(path, batch_rows=97) as w:
        for ev, recv in events:
            w.write(ev, recv)
    return path


@pytest.fixture
def market_feed(tmp_path: Path) -> Path:
    return write_feed(tmp_path / "market.parquet", market_events(600))


def sensor_feed(tmp_path: Path, n: int = 300) -> Path:
    """Two sensors' readings, a reading every second."""
    rng = np.random.default_rng(1)
    events: list[tuple[Event, int]] = [
        (SensorReading(sensor_id=f"s{i % 2}", value=float(rng.normal(20, 2))), T0 + i * 10**9)
        for i in range(n)
    ]
    return write_feed(tmp_path / "sensor.parquet", events)


def test_no_skew_dataset_rows_equal_serving_rows(market_feed: Path) -> None:
    """Every dataset row equals what the service's StateStore + write_window gives."""
    spec = FeatureSpec(task=Task.TRADING, window=8)
    rows, events = collect(market_feed, spec)
    store = StateStore(spec, max_keys=16)
    served = []
    arrivals = []
    row = np.empty(spec.n_features, dtype=np.float32)
    for rec in FeedReader(market_feed).records():
        state = store.update(rec.event, rec.recv_ns)
        if state.ready:
            state.write_window(row)
            served.append(row.copy())
            arrivals.append(rec.recv_ns)
    assert events == 602
    assert len(rows) == len(served) > 500
    np.testing.assert_array_equal(rows.x, np.stack(served))
    np.testing.assert_array_equal(rows.arrival_ns, np.array(arrivals))


def test_no_skew_sensor_rows_and_targets(tmp_path: Path) -> None:
    """Sensor rows equal the serving rows (current z masked) and targets are last_z."""
    feed = sensor_feed(tmp_path)
    spec = FeatureSpec(task=Task.SENSOR, window=6)
    rows, _ = collect(feed, spec)
    store = StateStore(spec, max_keys=4)
    row = np.empty(spec.n_features, dtype=np.float32)
    xs, zs = [], []
    for rec in FeedReader(feed).records():
        state = store.update(rec.event, rec.recv_ns)
        if state.ready:
            assert isinstance(state, SensorState)
            state.write_window(row)
            xs.append(row.copy())
            zs.append(state.last_z)
    np.testing.assert_array_equal(rows.x, np.stack(xs))
    np.testing.assert_array_equal(rows.y, np.array(zs))
    assert not rows.x[:, -3:-1].any()


def test_future_returns_look_horizon_events_ahead_within_the_key() -> None:
    """The return of a row is to the mid ``horizon`` rows later of the same key, else NaN."""
    mid = np.array([100.0, 200.0, 101.0, 202.0, 102.0, 0.0])
    key = np.array([0, 1, 0, 1, 0, 1])
    ret, later = future_returns(mid, key, horizon=1)
    np.testing.assert_allclose(ret[:3], np.log([1.01, 1.01, 102 / 101]) * 1e4)
    assert later.tolist() == [2, 3, 4, 5, -1, -1]
    assert np.isnan(ret[3:]).all()  # a zero mid ahead, then no row ahead


def test_labels_split_at_plus_minus_theta() -> None:
    """Below -theta is SELL, above +theta BUY, the closed band between is HOLD."""
    ret = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert trading_labels(ret, 1.0).tolist() == [0, 1, 1, 1, 2]
    assert TRADING_LABELS == ("SELL", "HOLD", "BUY")


def test_balanced_theta_leaves_a_third_in_the_band() -> None:
    """With continuous returns the balanced theta gives about a third per class."""
    ret = np.random.default_rng(0).normal(size=30_000)
    counts = np.bincount(trading_labels(ret, balanced_theta(ret)), minlength=3) / ret.size
    np.testing.assert_allclose(counts, 1 / 3, atol=0.01)


def test_split_is_by_time_and_purges_labels_that_cross_it(market_feed: Path) -> None:
    """Train rows precede the split and so do their label horizons; test rows follow it."""
    spec = FeatureSpec(task=Task.TRADING, window=8)
    ds = build_dataset(market_feed, spec, horizon=5, train_frac=0.7)
    cut = ds.info.split_ns["*"]
    assert ds.train.arrival_ns.max() < cut <= ds.test.arrival_ns.min()
    assert ds.info.purged_rows == 10  # the last 5 pre-split rows of each of the 2 keys
    assert ds.info.train_rows == len(ds.train) and ds.info.test_rows == len(ds.test)
    assert sum(ds.info.train_class_counts) == len(ds.train)
    # theta comes from the train rows alone
    assert ds.info.theta_bps == pytest.approx(balanced_theta(ds.train.ret_bps))


def test_given_theta_is_used_and_stated(market_feed: Path) -> None:
    """A fixed theta is applied as given and recorded as such."""
    ds = build_dataset(market_feed, FeatureSpec(task=Task.TRADING, window=8), theta_bps=0.5)
    assert ds.info.theta_bps == 0.5 and ds.info.theta_rule == "given"
    np.testing.assert_array_equal(ds.train.y, trading_labels(ds.train.ret_bps, 0.5))


def test_per_key_split_cuts_each_keys_own_span(tmp_path: Path) -> None:
    """With split='key' each key is cut at 70 % of its own span; 'global' cuts the feed's."""
    events = [
        (SensorReading(sensor_id="early", value=float(i % 7)), T0 + i * 10**9) for i in range(100)
    ] + [
        (SensorReading(sensor_id="late", value=float(i % 5)), T0 + (1000 + i) * 10**9)
        for i in range(100)
    ]
    feed = write_feed(tmp_path / "two.parquet", events)
    ds = build_dataset(feed, FeatureSpec(task=Task.SENSOR, window=4), split="key")
    assert set(ds.info.split_ns) == {"early", "late"}
    for k, name in enumerate(ds.train.keys):
        assert ds.train.arrival_ns[ds.train.key == k].max() < ds.info.split_ns[name]
        assert ds.test.arrival_ns[ds.test.key == k].min() >= ds.info.split_ns[name]
    glob = build_dataset(feed, FeatureSpec(task=Task.SENSOR, window=4), split="global")
    assert set(glob.train.key.tolist()) == {0} and set(glob.test.key.tolist()) == {1}


def test_split_times_rejects_a_bad_fraction() -> None:
    """train_frac outside (0, 1) is an error naming the value."""
    with pytest.raises(EngineError, match=r"train_frac must be in \(0, 1\), got 1.5"):
        split_times(np.array([1, 2]), np.array([0, 0]), 1, mode="global", train_frac=1.5)


def test_too_short_feed_is_an_error(tmp_path: Path) -> None:
    """A feed whose keys never fill a window says so."""
    feed = write_feed(tmp_path / "short.parquet", market_events(3, keys=("A",)))
    with pytest.raises(EngineError, match="no key reached a full window of 32 events"):
        build_dataset(feed, FeatureSpec(task=Task.TRADING, window=32))


def test_infer_task_from_first_event(market_feed: Path, tmp_path: Path) -> None:
    """Market feeds are trading, sensor feeds sensor."""
    assert infer_task(market_feed) is Task.TRADING
    assert infer_task(sensor_feed(tmp_path)) is Task.SENSOR


def test_column_stats_pool_window_positions() -> None:
    """Mean/std are per row column over all positions, tiled; constant columns get std 1."""
    x = np.zeros((4, 6), dtype=np.float32)  # window 3, row width 2
    x[:, 0::2] = np.arange(12, dtype=np.float32).reshape(4, 3)
    mean, std = column_stats(x, 2)
    assert mean.tolist() == [5.5, 0.0] * 3
    np.testing.assert_allclose(std[0], np.arange(12).std(), rtol=1e-6)
    assert std[1] == 1.0
