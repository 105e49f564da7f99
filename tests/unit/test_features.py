"""Feature spec and per-key windows."""

from __future__ import annotations

import heapq
import math
import random

import numpy as np
import pytest

from schemas.errors import SchemaError
from schemas.events import BookDiff, BookSnapshot, Quote, SensorReading, Trade
from schemas.features import RUN_WINDOWS, FeatureSpec, KeyState, SensorState, Task, TradingState


def _quote(mid: float, bq: float = 1.0, aq: float = 1.0) -> Quote:
    return Quote(symbol="B", bid_px=mid - 0.5, bid_qty=bq, ask_px=mid + 0.5, ask_qty=aq)


def test_spec_json_round_trip_and_sizes() -> None:
    """A spec survives JSON and states its input width."""
    spec = FeatureSpec(task=Task.TRADING, window=16)
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert spec.row_width == 10
    assert spec.n_features == 160
    assert FeatureSpec(task=Task.SENSOR, window=8).n_features == 24


def test_bad_spec_named() -> None:
    """A bad window length is named with the field."""
    with pytest.raises(
        SchemaError, match=r"bad feature spec: Expected `int` >= 1 - at `\$.window`"
    ):
        FeatureSpec.from_json(b'{"task":"trading","window":0}')


def test_trading_rows_follow_the_quotes() -> None:
    """Mid returns, spread and imbalance are computed from the quotes, oldest row first."""
    spec = FeatureSpec(task=Task.TRADING, window=3, clip_bps=1e6)
    st = spec.new_state()
    assert isinstance(st, TradingState)
    st.update(_quote(100.0, 3.0, 1.0), arrival_ns=0)
    st.update(_quote(101.0), arrival_ns=1_000_000)
    assert not st.ready
    st.update(_quote(100.0), arrival_ns=3_000_000)
    assert st.ready
    win = st.window_view()
    assert win[0, 0] == 0.0  # first row: no previous mid
    assert win[1, 0] == pytest.approx(math.log(101.0 / 100.0) * 1e4, rel=1e-5)
    assert win[2, 0] == pytest.approx(math.log(100.0 / 101.0) * 1e4, rel=1e-5)
    assert win[0, 1] == pytest.approx(1.0 / 100.0 * 1e4, rel=1e-5)
    assert win[0, 2] == pytest.approx(0.5)
    assert win[2, 6] == pytest.approx(math.log1p(2.0), rel=1e-5)
    assert list(win[2, 7:]) == [1.0, 0.0, 0.0]


def test_window_slides_and_copies() -> None:
    """After more events than the window, the copy holds the latest rows in order."""
    spec = FeatureSpec(task=Task.SENSOR, window=4)
    st = spec.new_state()
    for i in range(11):
        st.update(SensorReading(sensor_id="s", value=float(i % 3)), arrival_ns=i * 10**9)
    out = np.empty(spec.n_features, dtype=np.float32)
    st.write_window(out)
    view = st.window_view()
    assert np.array_equal(out.reshape(4, 3)[:3], view[:3])
    assert list(out[-3:-1]) == [0.0, 0.0]  # the forecast target is masked
    assert out[-1] == view[3, 2]
    assert st.count == 11


def test_window_copy_is_the_window_at_every_position_of_the_ring() -> None:
    """The copy (one slice of the flat ring) is the window, oldest row first, after each
    event, as the ring's position goes round more than once."""
    spec = FeatureSpec(task=Task.TRADING, window=3)
    st = spec.new_state()
    out = np.empty(spec.n_features, dtype=np.float32)
    for i in range(8):
        st.update(_quote(100.0 + i), arrival_ns=(i + 1) * 1_000_000)
        st.write_window(out)
        assert np.array_equal(out, st.window_view().reshape(-1))


def _fold(st: KeyState, i: int) -> None:
    if isinstance(st, SensorState):
        st.update(SensorReading(sensor_id="s", value=float(i * 7 % 5)), arrival_ns=i * 10**9)
    else:
        st.update(_quote(100.0 + i % 7), arrival_ns=(i + 1) * 1_000_000)


@pytest.mark.parametrize("task", [Task.TRADING, Task.SENSOR])
def test_a_run_s_windows_are_each_event_s_window_as_the_ring_goes_round(task: Task) -> None:
    """``write_windows`` copies, for each event of a run, what ``write_window`` copied right
    after it (the sensor's masked), for runs of every length up to what the widened ring
    keeps, read at once or one event later, at every position of the ring; the window is
    the same across the widening."""
    spec = FeatureSpec(task=task, window=3)
    st = spec.new_state()
    n = spec.n_features
    for i in range(5):
        _fold(st, i)
    before = st.window_view().copy()
    assert st.runs == 1 and st.widen() and st.runs == RUN_WINDOWS
    assert np.array_equal(st.window_view(), before)
    assert st.widen() and st.runs == RUN_WINDOWS  # once
    i = 5
    rng = random.Random(3)
    for _ in range(12):
        k = rng.choice([1, 2, RUN_WINDOWS - 1, RUN_WINDOWS])
        back = 0 if k == RUN_WINDOWS else rng.choice([0, 1])
        first = st.count + 1
        want = np.zeros((k, n), dtype=np.float32)
        for j in range(k + back):
            _fold(st, i)
            i += 1
            if j < k:
                st.write_window(want[j])
        got = np.full((2 * k + 1, n), np.nan, dtype=np.float32)
        rows = list(range(2 * k, 0, -2))[::-1]  # scattered rows, as slots may be
        st.write_windows(got, rows, first)
        assert np.array_equal(got[rows], want)
        assert np.isnan(got[0]).all()  # rows not named are not written
        run = np.full((k + 2, n), np.nan, dtype=np.float32)
        st.write_windows(run, slice(1, k + 1), first)  # consecutive rows, as a slice
        assert np.array_equal(run[1 : k + 1], want)
        assert np.isnan(run[0]).all() and np.isnan(run[k + 1]).all()


def test_windows_the_ring_does_not_keep_are_refused() -> None:
    """Asking for a window the ring no longer (or never) kept raises, naming the events."""
    spec = FeatureSpec(task=Task.TRADING, window=2)
    st = spec.new_state()
    for i in range(4):
        _fold(st, i)
    out = np.zeros((RUN_WINDOWS + 1, spec.n_features), dtype=np.float32)
    with pytest.raises(ValueError, match=r"events 3\.\.3 of a key at event 4: .* last 1"):
        st.write_windows(out, [0], 3)  # narrow: the last event's window only
    st.write_windows(out, [0], 4)
    st.widen()
    with pytest.raises(ValueError, match=r"events 3\.\.3"):
        st.write_windows(out, [0], 3)  # before the widening
    for i in range(RUN_WINDOWS + 1):
        _fold(st, i)
    with pytest.raises(ValueError, match=rf"last {RUN_WINDOWS}"):
        st.write_windows(out, list(range(RUN_WINDOWS + 1)), st.count - RUN_WINDOWS)
    with pytest.raises(ValueError, match="events"):
        st.write_windows(out, [0, 1], st.count)  # a run past the last event


def test_runs_are_taken_only_where_write_windows_copies_the_input() -> None:
    """A class takes runs where its ``write_windows`` is its ``write_window``'s: not one
    with a ``write_window`` or a ``write_input`` of its own and an inherited
    ``write_windows``."""

    class Doubled(TradingState):
        def write_window(self, out: np.ndarray) -> None:
            out[:] = 2.0

    class Own(TradingState):
        def write_input(self, out: np.ndarray) -> None:
            out[:] = 7.0

    class Both(Doubled):
        def write_windows(self, out: np.ndarray, rows: list[int], first: int) -> None:
            out[rows] = 2.0

    assert TradingState.takes_runs and SensorState.takes_runs and KeyState.takes_runs
    assert not Doubled.takes_runs and not Own.takes_runs
    assert Both.takes_runs


def test_book_and_trade_rows() -> None:
    """Book events set depth imbalance; trades carry signed size and price deviation."""
    spec = FeatureSpec(task=Task.TRADING, window=4, book_levels=2)
    st = spec.new_state()
    assert isinstance(st, TradingState)
    st.update(
        BookSnapshot(
            symbol="B", last_update_id=1, bids=[(99.0, 3.0), (98.0, 1.0)], asks=[(101.0, 1.0)]
        ),
        arrival_ns=0,
    )
    assert st.mid == 100.0
    st.update(
        BookDiff(symbol="B", first_update_id=2, last_update_id=2, bids=[(98.0, 0.0)], asks=[]), 1
    )
    st.update(Trade(symbol="B", trade_id=1, price=100.5, qty=2.0, buyer_is_maker=True), 2)
    win = st.window_view()[1:]
    assert win[0, 5] == pytest.approx((4.0 - 1.0) / 5.0)
    assert win[1, 5] == pytest.approx((3.0 - 1.0) / 4.0)  # diff deleted the 98 level
    assert win[2, 5] == win[1, 5]  # trades keep the last depth figure
    assert win[2, 3] == pytest.approx(-math.log1p(2.0))
    assert win[2, 4] == pytest.approx(50.0)  # 0.5 over 100 in bps, at the clip
    for i in range(3 * spec.window):  # the ring goes round: the figure stays the last book's
        st.update(Trade(symbol="B", trade_id=2 + i, price=100.0, qty=1.0, buyer_is_maker=False), 3)
    assert list(st.window_view()[:, 5]) == [pytest.approx(0.5)] * spec.window
    fresh = spec.new_state()
    fresh.update(Trade(symbol="B", trade_id=1, price=100.0, qty=1.0, buyer_is_maker=False), 0)
    assert fresh.window_view()[-1, 5] == 0.0  # no book yet: no imbalance


def test_book_is_pruned() -> None:
    """The book never keeps more than twice book_keep levels per side."""
    spec = FeatureSpec(task=Task.TRADING, window=2, book_keep=10)
    st = spec.new_state()
    assert isinstance(st, TradingState)
    for i in range(200):
        st.update(
            BookDiff(
                symbol="B",
                first_update_id=i,
                last_update_id=i,
                bids=[(1000.0 - i, 1.0)],
                asks=[(2000.0 + i, 1.0)],
            ),
            i,
        )
    assert len(st.bids) <= 20 and len(st.asks) <= 20
    assert max(st.bids) == 1000.0 and min(st.asks) == 2000.0


def _heap_depth(bids: dict[float, float], asks: dict[float, float], n: int) -> float:
    """Depth imbalance as a heap pass over the whole book computes it (the reference)."""
    if not bids or not asks:
        return 0.0
    b = sum(bids[p] for p in heapq.nlargest(n, bids))
    a = sum(asks[p] for p in heapq.nsmallest(n, asks))
    return (b - a) / (b + a) if b + a > 0.0 else 0.0


def test_book_ladders_give_the_whole_book_heap_result_bit_for_bit() -> None:
    """Random diffs (adds, changes, deletes of present and absent levels), snapshots and
    prunes: each side's sorted ladder is its map's prices, and the depth feature and the
    book mid equal a heap pass over the map, to the last bit (a model trained on the
    features of one must be served the same floats)."""
    rng = random.Random(7)
    spec = FeatureSpec(task=Task.TRADING, window=2, book_keep=10, book_levels=5)
    st = spec.new_state()
    assert isinstance(st, TradingState)

    def levels(lo: float) -> list[tuple[float, float]]:
        return [
            (lo + rng.randrange(40) * 0.1, rng.choice((0.0, rng.random() * 3)))
            for _ in range(rng.randrange(8))
        ]

    for i in range(3000):
        if i % 500 == 0:
            # Two draws on one price grid: a snapshot may repeat a price (and zero it).
            ev: BookDiff | BookSnapshot = BookSnapshot(
                symbol="B",
                last_update_id=i,
                bids=levels(99.0) + levels(99.0),
                asks=levels(101.0) + levels(101.0),
            )
            want_bids: dict[float, float] = {}
            for px, qty in ev.bids:  # applied in order, as a diff's levels are
                if qty == 0.0:
                    want_bids.pop(px, None)
                else:
                    want_bids[px] = qty
        else:
            ev = BookDiff(
                symbol="B",
                first_update_id=i,
                last_update_id=i,
                bids=levels(98.0),
                asks=levels(100.5),
            )
        st.update(ev, i)
        if isinstance(ev, BookSnapshot):
            assert st.bids == want_bids
        assert st._bid_px == sorted(st.bids) and st._ask_px == sorted(st.asks)
        want = _heap_depth(st.bids, st.asks, spec.book_levels)
        assert st._depth_imbalance() == want
        assert st._ring[(st._pos - 1) % st.window, 5] == np.float32(want)
        if st.bids and st.asks:
            assert st._book_mid() == (max(st.bids) + min(st.asks)) / 2.0


def test_sensor_z_is_surprise_before_update() -> None:
    """A spike after a flat series gets a large, clipped z-score."""
    spec = FeatureSpec(task=Task.SENSOR, window=2, z_clip=5.0)
    st = spec.new_state()
    assert isinstance(st, SensorState)
    for i in range(50):
        st.update(SensorReading(sensor_id="s", value=10.0 + 0.1 * (i % 2)), i)
    st.update(SensorReading(sensor_id="s", value=1000.0), 51)
    assert st.last_z == 5.0


def test_wrong_event_for_task_named() -> None:
    """Feeding a market event to sensor state (and back) names the key."""
    with pytest.raises(SchemaError, match=r"sensor features got a quote event for key 'B'"):
        FeatureSpec(task=Task.SENSOR).new_state().update(_quote(1.0), 0)
    with pytest.raises(SchemaError, match=r"trading features got a sensor reading for key 's'"):
        FeatureSpec(task=Task.TRADING).new_state().update(
            SensorReading(sensor_id="s", value=1.0), 0
        )


def test_write_input_is_each_state_class_s_own_write_window() -> None:
    """The model input is the window as each class writes it: a sensor state's masks the
    current z and dz like its ``write_window``, and a subclass overriding ``write_window``
    gets its own as ``write_input`` too."""
    spec = FeatureSpec(task=Task.SENSOR, window=4)
    s = SensorState(spec)
    for v in (1.0, 2.0, 4.0, 8.0, 3.0):
        s.update(SensorReading(sensor_id="s", value=v), 0)
    a = np.empty(spec.n_features, dtype=np.float32)
    b = np.empty(spec.n_features, dtype=np.float32)
    s.write_input(a)
    s.write_window(b)
    assert (a == b).all() and (a[-3:-1] == 0.0).all()

    class Doubled(TradingState):
        def write_window(self, out: np.ndarray) -> None:
            super().write_window(out)
            out *= 2.0

    t = Doubled(FeatureSpec(task=Task.TRADING, window=2))
    t.update(_quote(100.0), 1)
    t.update(_quote(101.0), 2)
    c = np.empty(t.spec.n_features, dtype=np.float32)
    d = np.empty(t.spec.n_features, dtype=np.float32)
    t.write_input(c)
    t.write_window(d)
    assert (c == d).all() and c.any()


def test_write_input_of_its_own_is_kept_and_a_mixin_s_write_window_is_found() -> None:
    """A class whose parent has a ``write_input`` of its own keeps it when it overrides
    ``write_window``; a ``write_window`` from a mixin is the class's ``write_input``."""

    class OwnInput(TradingState):
        def write_input(self, out: np.ndarray) -> None:
            out[:] = 7.0

    class Child(OwnInput):
        def write_window(self, out: np.ndarray) -> None:
            out[:] = 1.0

    class Ones:
        def write_window(self, out: np.ndarray) -> None:
            out[:] = 1.0

    class Mixed(Ones, TradingState):
        pass

    spec = FeatureSpec(task=Task.TRADING, window=2)
    out = np.zeros(spec.n_features, dtype=np.float32)
    Child(spec).write_input(out)
    assert (out == 7.0).all()
    Mixed(spec).write_input(out)
    assert (out == 1.0).all()
