"""The feature spec and the per-key feature windows: one code path for training and serving.

A ``FeatureSpec`` (stored as JSON in every model bundle) says which task a model serves and
how long its window is. A ``KeyState`` holds one key's running state (last quote, a
bounded order book, running statistics) and a ring of the last ``window`` feature rows; each
event of the key appends one row. The model's input for an event is that key's window after
the event, flattened oldest-first (``window * row_width`` float32 values).

Call contract: ``KeyState.update`` is called once per event of its key, in the key's event
order, with the event's arrival time (``arrival_ns``, wall ns: the feed's ``recv_ns`` when
training, the record's arrival when serving). It is O(1) per event except book diffs, which
are O(levels in the message) plus a bounded prune. ``write_window`` copies the window into a
caller-owned row (one ``memcpy``); nothing else allocates per event beyond Python floats.
A key whose events come in runs (one instrument's feed) can have its ring widened
(``widen``) to keep the windows of its last ``RUN_WINDOWS`` events: ``write_windows`` then
copies a run's windows into their rows at once, one strided copy.

``FeatureSpec`` is weir's own implementation of the model package contract's feature seam
(``engines.features.Features``; ``KeyState`` is its ``FeatureState``): the built-in trading
and sensor packages name it as ``schemas.features:FeatureSpec``.

Trading row (10 values): mid log-return since the previous row in bps (clipped), spread in
bps, level-1 size imbalance, signed log trade size, trade price minus mid in bps, top-N
depth imbalance from the book, log1p(gap ms), and a one-hot of quote / book / trade.
Sensor row (3 values): the reading's z-score against an EWMA mean and variance taken *before*
the reading (its surprise), the change of that z-score, and log1p(gap s) / 10. The sensor
model forecasts the current reading's z-score from the window, so ``write_window`` masks
the last row's z and dz (zeroes them) and ``SensorState.last_z`` is the forecast target;
the anomaly score is ``|last_z - forecast|``.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_left, insort
from typing import Annotated, ClassVar

import msgspec
import numpy as np

from schemas.errors import SchemaError
from schemas.events import (
    EVENT_TYPES,
    BookDiff,
    BookSnapshot,
    Event,
    Quote,
    SensorReading,
    Trade,
)

FEATURE_SPEC_VERSION = 1


class Task(enum.StrEnum):
    """What a model decides."""

    TRADING = "trading"
    """Mid-price move over the next k events: SELL / HOLD / BUY."""
    SENSOR = "sensor"
    """Next-reading forecast; the forecast error is the anomaly score: OK / ALERT."""


class FeatureSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How events become model inputs. Stored in the bundle as ``features.json``."""

    task: Task
    window: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    book_levels: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    book_keep: Annotated[int, msgspec.Meta(ge=10)] = 200
    """Levels per side kept in the book; farther ones are pruned."""
    clip_bps: Annotated[float, msgspec.Meta(gt=0)] = 50.0
    ewma_alpha: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.02
    z_clip: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    version: int = FEATURE_SPEC_VERSION

    @property
    def row_names(self) -> tuple[str, ...]:
        """Names of the values of one row."""
        return TRADING_ROW if self.task is Task.TRADING else SENSOR_ROW

    @property
    def row_width(self) -> int:
        """Values per row."""
        return len(self.row_names)

    @property
    def n_features(self) -> int:
        """Length of one model input: ``window * row_width``."""
        return self.window * self.row_width

    def new_state(self) -> KeyState:
        """A fresh state for one key of this spec's task."""
        return TradingState(self) if self.task is Task.TRADING else SensorState(self)

    def to_json(self) -> bytes:
        """The spec as JSON (the bundle's ``features.json``)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes) -> FeatureSpec:
        """Read a spec; a bad value is named (``SchemaError``)."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:
            raise SchemaError(f"bad feature spec: {exc}") from exc


def _foreign(task: str, event: object) -> str:
    """Why ``task``'s built-in features refuse ``event``, an object of none of weir's types
    (a user's own event reaches them only when no model package's features take it)."""
    return f"{task} features got a {type(event).__qualname__}, not one of weir's event types"


TRADING_ROW = (
    "mid_ret_bps",
    "spread_bps",
    "l1_imbalance",
    "signed_log_trade",
    "trade_dev_bps",
    "depth_imbalance",
    "log_gap_ms",
    "is_quote",
    "is_book",
    "is_trade",
)
SENSOR_ROW = ("z", "dz", "log_gap_s")


RUN_WINDOWS = 64
"""The windows of a key's last events a widened ring keeps (``KeyState.widen``)."""


class KeyState:
    """One key's running state and the ring of its last ``window`` feature rows."""

    __slots__ = (
        "_flat",
        "_n",
        "_period",
        "_pos",
        "_ring",
        "_since",
        "_windows",
        "count",
        "last_arrival_ns",
        "runs",
        "spec",
        "window",
    )

    row_width: ClassVar[int]
    takes_runs: ClassVar[bool] = True
    """Whether ``write_windows`` copies what ``write_input`` does (``__init_subclass__``)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.window = spec.window
        self._ring = np.zeros((0, self.row_width), dtype=np.float32)
        self._period = 0
        self._pos = 0
        self._n = spec.window * self.row_width
        self._since = 0
        self.runs = 1
        """The events of this key whose windows the ring keeps: 1, or ``RUN_WINDOWS`` once
        widened (``widen``)."""
        self._lay_out(spec.window)
        self.count = 0
        self.last_arrival_ns: int | None = None

    def _lay_out(self, period: int) -> None:
        """A ring of ``period`` rows (the last ``period`` rows kept), its rows copied over."""
        width = self.row_width
        ring = np.zeros((2 * period, width), dtype=np.float32)
        if self._period:
            # The last rows kept, oldest first, become rows 0.. of the new ring (and their
            # second copies); rows older than the old ring are zeros, as before the first.
            kept = self._ring[self._pos : self._pos + self._period]
            ring[: self._period] = kept
            ring[period : period + self._period] = kept
        # Every row is written twice, at i and i + period, so the last `period` rows are
        # always one contiguous slice: reading a window is a single copy.
        self._pos = self._period % period
        self._period = period
        self._ring = ring
        # The ring as one run of floats (a view): a window is one slice of it, read without
        # the row-shaped views a copy between 2-D shapes needs (half the time per event).
        self._flat = ring.reshape(-1)
        # Every window in the ring, by its first row: the windows of a run of events are
        # one slice of this (a read-only view; ``write_windows``).
        self._windows = np.lib.stride_tricks.as_strided(
            self._flat,
            shape=(2 * period - self.window + 1, self._n),
            strides=(width * self._flat.itemsize, self._flat.itemsize),
            writeable=False,
        )

    @property
    def ready(self) -> bool:
        """True once the window holds ``window`` rows (before that, decisions are warming)."""
        return self.count >= self.window

    def widen(self) -> bool:
        """Keep the windows of this key's last ``RUN_WINDOWS`` events, not only the last
        one's (``runs``), so ``write_windows`` can copy a run of them at once: the ring
        grows from ``2 * window`` rows to ``2 * (window + RUN_WINDOWS - 1)``. True (for the
        caller's convenience)."""
        if self.runs == 1:
            self._lay_out(self.window + RUN_WINDOWS - 1)
            self.runs = RUN_WINDOWS
            self._since = self.count  # the windows of events before it are not kept
        return True

    def _push(self, row: tuple[float, ...]) -> None:
        period = self._period
        pos = self._pos
        # Both copies of the row (``pos`` and ``pos + period``) as one strided slice: the
        # tuple is converted to float32 once, not once per copy.
        self._ring[pos : pos + period + 1 : period] = row
        self._pos = (pos + 1) % period
        self.count += 1

    def _gap(self, arrival_ns: int) -> float:
        last = self.last_arrival_ns
        self.last_arrival_ns = arrival_ns
        if last is None or arrival_ns <= last:
            return 0.0
        return float(arrival_ns - last)

    def window_view(self) -> np.ndarray:
        """The last ``window`` rows, oldest first, as a read-only view (rows not yet seen are 0)."""
        start = self._pos + self._period - self.window
        view = self._ring[start : start + self.window]
        view.flags.writeable = False
        return view

    def write_window(self, out: np.ndarray) -> None:
        """Copy the flattened window, oldest row first, into ``out`` (``n_features`` float32)."""
        start = (self._pos + self._period - self.window) * self.row_width
        out[:] = self._flat[start : start + self._n]

    write_input = write_window
    """The model input (``engines.features.FeatureState``): the window, by the class's own
    ``write_window`` itself (``__init_subclass__`` names a subclass's one so), not a call
    that makes another call."""

    def write_windows(self, out: np.ndarray, rows: list[int] | slice, first: int) -> None:
        """Copy the windows of as many consecutive events of this key as ``rows`` names
        (row numbers, or a slice of rows), the first of them the ``first``-th (``count``
        right after its update), into ``out[rows]``: what ``write_window`` would have
        copied right after each. Its ring keeps the last ``runs`` events' windows since it
        was widened: ``count - first`` must be below ``runs``."""
        back = self.count - first
        k = len(rows) if isinstance(rows, list) else rows.stop - rows.start
        if not 0 <= back < self.runs or k > back + 1 or first < self._since:
            raise ValueError(
                f"windows of events {first}..{first + k - 1} of a key at event "
                f"{self.count}: its ring keeps the last {self.runs}"
            )
        start = self._pos + self._period - self.window - back
        out[rows] = self._windows[start : start + k]

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        # ``write_windows`` copies the windows ``write_window`` copies where it is given by
        # the same class or one that derives from it: a ``write_window`` below the
        # ``write_windows`` (its input is not the one ``write_windows`` knows) takes no runs.
        mro = cls.__mro__
        cls.takes_runs = next(
            i for i, c in enumerate(mro) if "write_windows" in c.__dict__
        ) <= next(i for i, c in enumerate(mro) if "write_window" in c.__dict__)
        if "write_input" in cls.__dict__:
            cls.takes_runs = cls.takes_runs and cls.write_input is cls.write_window
            return
        # The class that gives ``cls`` its ``write_input``: where that is its own
        # ``write_window`` (this alias), ``cls`` gets its own ``write_window`` instead.
        giver = next(c for c in cls.__mro__[1:] if "write_input" in c.__dict__)
        if giver.__dict__["write_input"] is getattr(giver, "write_window", None):
            cls.write_input = cls.write_window
        else:
            cls.takes_runs = False

    def target(self) -> float:
        """What the model forecasts for the last event: 0.0 (a classifier's features)."""
        return 0.0

    def update(self, event: Event, arrival_ns: int) -> None:
        """Fold one event of this key into the state and append its row."""
        raise NotImplementedError


def _book_of(levels: list[tuple[float, float]]) -> dict[float, float]:
    """One side of a snapshot as a map, applied in order like a diff's levels (a repeated
    price keeps its last quantity; a quantity of 0 deletes it)."""
    side: dict[float, float] = {}
    for px, qty in levels:
        if qty == 0.0:
            side.pop(px, None)
        else:
            side[px] = qty
    return side


class TradingState(KeyState):
    """Quotes, a bounded order book and trades of one instrument."""

    __slots__ = (
        "_ask_px",
        "_bid_px",
        "_depth",
        "ask",
        "ask_qty",
        "asks",
        "bid",
        "bid_qty",
        "bids",
        "book_updates",
        "mid",
    )

    row_width = len(TRADING_ROW)

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.bid = 0.0
        self.ask = 0.0
        self.bid_qty = 0.0
        self.ask_qty = 0.0
        self.mid = 0.0
        """Latest mid price (0 until a quote, book or trade gave one): the label source."""
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        # Each side's prices in ascending order, beside its map: the best levels are a
        # slice, not a heap pass over the whole book (``_depth_imbalance`` runs per book
        # event, on up to ``2 * book_keep`` levels a side).
        self._bid_px: list[float] = []
        self._ask_px: list[float] = []
        self.book_updates = 0
        # The depth imbalance of the last book event (0 before one): every row carries it,
        # and only a book event changes it.
        self._depth = 0.0

    def _clip(self, bps: float) -> float:
        c = self.spec.clip_bps
        return c if bps > c else -c if bps < -c else bps

    @staticmethod
    def _apply_levels(
        side: dict[float, float], prices: list[float], levels: list[tuple[float, float]]
    ) -> None:
        for px, qty in levels:
            if qty == 0.0:
                if side.pop(px, None) is not None:
                    del prices[bisect_left(prices, px)]
            else:
                if px not in side:
                    insort(prices, px)
                side[px] = qty

    def _prune(self) -> None:
        keep = self.spec.book_keep
        if len(self.bids) > 2 * keep:
            self._bid_px = self._bid_px[-keep:]
            self.bids = {p: self.bids[p] for p in self._bid_px}
        if len(self.asks) > 2 * keep:
            self._ask_px = self._ask_px[:keep]
            self.asks = {p: self.asks[p] for p in self._ask_px}

    def _depth_imbalance(self) -> float:
        n = self.spec.book_levels
        bids, asks = self.bids, self.asks
        if not bids or not asks:
            return 0.0
        # Best first, as the sums always ran: the same floats added in the same order.
        b = sum(bids[p] for p in reversed(self._bid_px[-n:]))
        a = sum(asks[p] for p in self._ask_px[:n])
        total = b + a
        return (b - a) / total if total > 0.0 else 0.0

    def _book_mid(self) -> float:
        if self.bids and self.asks:
            return (self._bid_px[-1] + self._ask_px[0]) / 2.0
        return self.mid

    def update(self, event: Event, arrival_ns: int) -> None:
        """Fold one market event into the state and append its row."""
        prev_mid = self.mid
        trade_sig = 0.0
        trade_dev = 0.0
        is_quote = is_book = is_trade = 0.0
        match event:
            case Quote():
                is_quote = 1.0
                self.bid, self.ask = event.bid_px, event.ask_px
                self.bid_qty, self.ask_qty = event.bid_qty, event.ask_qty
                self.mid = (event.bid_px + event.ask_px) / 2.0
            case BookDiff() | BookSnapshot():
                is_book = 1.0
                if isinstance(event, BookSnapshot):
                    # A whole book (up to 5,000 levels a side): sorted once, not inserted.
                    self.bids = _book_of(event.bids)
                    self.asks = _book_of(event.asks)
                    self._bid_px = sorted(self.bids)
                    self._ask_px = sorted(self.asks)
                else:
                    self._apply_levels(self.bids, self._bid_px, event.bids)
                    self._apply_levels(self.asks, self._ask_px, event.asks)
                self.book_updates += 1
                if self.book_updates % 64 == 0:
                    self._prune()
                if self.bid == 0.0:
                    self.mid = self._book_mid()
            case Trade():
                is_trade = 1.0
                if self.mid == 0.0:
                    self.mid = event.price
                sign = -1.0 if event.buyer_is_maker else 1.0
                trade_sig = sign * math.log1p(event.qty)
                trade_dev = self._clip((event.price - self.mid) / self.mid * 1e4)
            case SensorReading():
                raise SchemaError(
                    f"trading features got a sensor reading for key {event.sensor_id!r}"
                )
            case _:
                raise SchemaError(_foreign("trading", event))
        mid = self.mid
        ret = 0.0
        if prev_mid != 0.0 and mid != 0.0:
            ratio = mid / prev_mid  # underflows to 0 for extreme (valid) prices: clip, not log(0)
            ret = self._clip(math.log(ratio) * 1e4) if ratio > 0.0 else -self.spec.clip_bps
        spread = self._clip((self.ask - self.bid) / mid * 1e4) if self.bid > 0.0 else 0.0
        qsum = self.bid_qty + self.ask_qty
        l1 = (self.bid_qty - self.ask_qty) / qsum if qsum > 0.0 else 0.0
        gap_ms = self._gap(arrival_ns) / 1e6
        if is_book:
            self._depth = self._depth_imbalance()
        self._push(
            (
                ret,
                spread,
                l1,
                trade_sig,
                trade_dev,
                self._depth,
                math.log1p(gap_ms),
                is_quote,
                is_book,
                is_trade,
            )
        )


class SensorState(KeyState):
    """Running EWMA statistics of one sensor's readings."""

    __slots__ = ("last_z", "mean", "var")

    row_width = len(SENSOR_ROW)

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec)
        self.mean = 0.0
        self.var = 0.0
        self.last_z = 0.0
        """The latest reading's z-score: the forecast target of the previous window."""

    def target(self) -> float:
        """The latest reading's z-score (``last_z``): what the model forecasts."""
        return self.last_z

    def update(self, event: Event, arrival_ns: int) -> None:
        """Fold one reading into the state and append its row."""
        if not isinstance(event, SensorReading):
            if not isinstance(event, EVENT_TYPES):
                raise SchemaError(_foreign("sensor", event))
            raise SchemaError(
                f"sensor features got a {type(event).__struct_config__.tag} event "
                f"for key {event.key!r}"
            )
        v = event.value
        spec = self.spec
        if self.count == 0:
            self.mean = v
            self.var = 0.0
            z = 0.0
        else:
            std = math.sqrt(self.var)
            z = (v - self.mean) / std if std > 1e-12 else 0.0
            z = spec.z_clip if z > spec.z_clip else -spec.z_clip if z < -spec.z_clip else z
            a = spec.ewma_alpha
            d = v - self.mean
            self.mean += a * d
            self.var = (1.0 - a) * (self.var + a * d * d)
        dz = z - self.last_z
        self.last_z = z
        gap_s = self._gap(arrival_ns) / 1e9
        self._push((z, dz, math.log1p(gap_s) / 10.0))

    def write_window(self, out: np.ndarray) -> None:
        """Copy the window like ``KeyState.write_window``, masking the current z and dz."""
        super().write_window(out)
        w = self.row_width
        out[-w : -w + 2] = 0.0

    def write_windows(self, out: np.ndarray, rows: list[int] | slice, first: int) -> None:
        """Copy the windows like ``KeyState.write_windows``, each masked as ``write_window``."""
        super().write_windows(out, rows, first)
        w = self.row_width
        out[rows, -w : -w + 2] = 0.0
