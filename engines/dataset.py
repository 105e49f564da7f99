"""Training datasets from feed files, through the serving feature code (no skew).

A feed is read once, event by event (``schemas.feed.FeedReader``); each key has its own
``KeyState`` from one ``FeatureSpec`` (the spec the bundle ships), updated with the feed's
``recv_ns`` as ``arrival_ns``, exactly as the service updates it with the Kafka record
time. Every event after which its key's window is ready gives one sample: the input row
is ``state.write_window(row)``, the same call the service makes.

Targets
    trading: the mid-price move over the next ``horizon`` events of the same key,
    ``r = ln(mid[i + horizon] / mid[i]) * 1e4`` bps, labelled ``SELL`` (``r < -theta``),
    ``HOLD`` (``|r| <= theta``) or ``BUY`` (``r > theta``), in that output order. ``theta``
    is given, or (default) chosen on the TRAINING rows only as the 1/3 quantile of ``|r|``,
    so the three classes are about equal there. The last ``horizon`` events of a key have
    no label and are dropped.
    sensor: ``SensorState.last_z`` after the event (the window masks it).

Split (no leakage): by time, on ``recv_ns``. ``global``: train is the first ``train_frac``
of the feed's time span, test the rest. ``key``: the same per key, for feeds whose keys
cover different periods (NAB). A trading row whose label looks past the split (its
horizon event lies in the test period) is purged from train. Normalisation statistics,
``theta`` and any threshold are computed from train rows only.

Memory: the input matrix is allocated once (``num_rows`` from the feed footer, float32)
and filled in place; nothing else per event beyond a few scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from engines.errors import EngineError
from schemas.errors import SchemaError
from schemas.events import SensorReading
from schemas.features import FeatureSpec, KeyState, SensorState, Task, TradingState
from schemas.feed import FeedReader

TRADING_LABELS: Final = ("SELL", "HOLD", "BUY")
DEFAULT_HORIZON: Final = 20
DEFAULT_TRAIN_FRAC: Final = 0.7
SplitMode = Literal["global", "key"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class Samples:
    """Rows of one dataset (or one split of it), aligned by index.

    ``x`` float32 ``[n, n_features]`` (model inputs), ``y`` the target (int64 class for
    trading, float32 ``last_z`` for sensor), ``arrival_ns`` int64 (feed ``recv_ns``),
    ``key`` int64 (index into ``keys``), ``ret_bps`` float64 (trading: the future move the
    label came from; NaN for sensor).
    """

    __slots__ = ("arrival_ns", "key", "keys", "ret_bps", "x", "y")

    def __init__(
        self,
        x: F32,
        y: npt.NDArray[Any],
        arrival_ns: I64,
        key: I64,
        keys: Sequence[str],
        ret_bps: F64,
    ) -> None:
        self.x = x
        self.y = y
        self.arrival_ns = arrival_ns
        self.key = key
        self.keys = tuple(keys)
        self.ret_bps = ret_bps

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: npt.NDArray[Any]) -> Samples:
        """The rows selected by ``idx`` (a boolean mask or indices), copied."""
        return Samples(
            self.x[idx],
            self.y[idx],
            self.arrival_ns[idx],
            self.key[idx],
            self.keys,
            self.ret_bps[idx],
        )


class DatasetInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How a dataset was made: stored in the bundle's ``metadata.data``."""

    feed: str
    task: str
    events: int
    samples: int
    keys: list[str]
    split: str
    train_frac: float
    split_ns: dict[str, int]
    """Per key (``"*"`` for a global split): the first ``recv_ns`` of the test period."""
    train_rows: int
    test_rows: int
    purged_rows: int = 0
    horizon: int = 0
    theta_bps: float = 0.0
    theta_rule: str = ""
    labels: list[str] = []
    train_class_counts: list[int] = []
    test_class_counts: list[int] = []


class Dataset:
    """A train/test pair from one feed, and how it was made."""

    __slots__ = ("info", "spec", "test", "train")

    def __init__(self, spec: FeatureSpec, train: Samples, test: Samples, info: DatasetInfo):
        self.spec = spec
        self.train = train
        self.test = test
        self.info = info


def _key_index(keys: dict[str, int], key: str) -> int:
    idx = keys.get(key)
    if idx is None:
        idx = keys[key] = len(keys)
    return idx


def collect(
    feed: str | Path, spec: FeatureSpec, *, max_events: int | None = None
) -> tuple[Samples, int]:
    """Every ready sample of ``feed`` in feed order, with raw targets; and the events read.

    ``y`` is the mid price after the event (trading) or ``last_z`` (sensor); turn mids into
    labels with :func:`trading_labels`.
    """
    reader = FeedReader(feed)
    n_max = reader.num_rows if max_events is None else min(reader.num_rows, max_events)
    x = np.empty((n_max, spec.n_features), dtype=np.float32)
    target = np.empty(n_max, dtype=np.float64)
    arrival = np.empty(n_max, dtype=np.int64)
    key_of = np.empty(n_max, dtype=np.int64)
    states: dict[str, KeyState] = {}
    keys: dict[str, int] = {}
    trading = spec.task is Task.TRADING
    n = 0
    events = 0
    for rec in reader.records():
        if events >= n_max:
            break
        events += 1
        event = rec.event
        state = states.get(event.key)
        if state is None:
            state = states[event.key] = spec.new_state()
        try:
            state.update(event, rec.recv_ns)
        except SchemaError as exc:
            raise EngineError(f"feed {feed}: event {events - 1}: {exc}") from exc
        if not state.ready:
            continue
        if trading:
            assert isinstance(state, TradingState)
            mid = state.mid
        else:
            assert isinstance(state, SensorState)
            mid = state.last_z
        state.write_window(x[n])
        target[n] = mid
        arrival[n] = rec.recv_ns
        key_of[n] = _key_index(keys, event.key)
        n += 1
    names = sorted(keys, key=keys.__getitem__)
    samples = Samples(
        x[:n],
        target[:n],
        arrival[:n],
        key_of[:n],
        names,
        np.full(n, np.nan, dtype=np.float64),
    )
    return samples, events


def future_returns(mid: F64, key: I64, horizon: int) -> tuple[F64, I64]:
    """Per row: ``ln(mid[j] / mid[i]) * 1e4`` for ``j`` the row ``horizon`` rows later of
    the same key, and ``j`` itself; NaN and ``-1`` where there is none or a mid is 0.

    Rows of a key are consecutive events of that key (every event after warm-up is a
    row), so "``horizon`` rows later" is "``horizon`` events later".
    """
    n = mid.shape[0]
    ret = np.full(n, np.nan, dtype=np.float64)
    later = np.full(n, -1, dtype=np.int64)
    for k in np.unique(key):
        rows = np.flatnonzero(key == k)
        if rows.shape[0] <= horizon:
            continue
        now, fut = rows[:-horizon], rows[horizon:]
        m0, m1 = mid[now], mid[fut]
        ok = (m0 > 0.0) & (m1 > 0.0)
        r = np.full(now.shape[0], np.nan)
        r[ok] = np.log(m1[ok] / m0[ok]) * 1e4
        ret[now] = r
        later[now] = fut
    return ret, later


def balanced_theta(ret_bps: F64) -> float:
    """The 1/3 quantile of ``|ret_bps|``: about a third of rows fall in ``[-theta, theta]``."""
    finite = np.abs(ret_bps[np.isfinite(ret_bps)])
    if finite.size == 0:
        return 0.0
    return float(np.quantile(finite, 1.0 / 3.0))


def trading_labels(ret_bps: F64, theta: float) -> I64:
    """0 = SELL (``r < -theta``), 1 = HOLD, 2 = BUY (``r > theta``)."""
    y = np.ones(ret_bps.shape[0], dtype=np.int64)
    y[ret_bps < -theta] = 0
    y[ret_bps > theta] = 2
    return y


def split_times(arrival: I64, key: I64, n_keys: int, *, mode: SplitMode, train_frac: float) -> I64:
    """Per row, the ``recv_ns`` at which its test period starts (``global`` or per ``key``)."""
    if not 0.0 < train_frac < 1.0:
        raise EngineError(f"train_frac must be in (0, 1), got {train_frac}")
    if arrival.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if mode == "global":
        t0, t1 = int(arrival.min()), int(arrival.max())
        return np.full(arrival.shape[0], t0 + int((t1 - t0) * train_frac), dtype=np.int64)
    cut = np.zeros(n_keys, dtype=np.int64)
    for k in range(n_keys):
        a = arrival[key == k]
        if a.size:
            cut[k] = int(a.min()) + int((int(a.max()) - int(a.min())) * train_frac)
    return cut[key]


def build_dataset(
    feed: str | Path,
    spec: FeatureSpec,
    *,
    horizon: int = DEFAULT_HORIZON,
    theta_bps: float | None = None,
    train_frac: float = DEFAULT_TRAIN_FRAC,
    split: SplitMode = "global",
    max_events: int | None = None,
) -> Dataset:
    """Read ``feed`` through ``spec`` and split it by time (see the module docstring)."""
    if horizon < 1:
        raise EngineError(f"horizon must be >= 1, got {horizon}")
    if split not in ("global", "key"):
        raise EngineError(f"split must be 'global' or 'key', got {split!r}")
    rows, events = collect(feed, spec, max_events=max_events)
    if len(rows) == 0:
        raise EngineError(
            f"feed {feed}: no key reached a full window of {spec.window} events "
            f"({events} events read)"
        )
    cut = split_times(rows.arrival_ns, rows.key, len(rows.keys), mode=split, train_frac=train_frac)
    is_train = rows.arrival_ns < cut
    split_ns = (
        {"*": int(cut[0])}
        if split == "global"
        else {
            rows.keys[int(k)]: int(cut[np.flatnonzero(rows.key == k)[0]])
            for k in np.unique(rows.key)
        }
    )
    common: dict[str, Any] = {
        "feed": Path(feed).name,
        "task": spec.task.value,
        "events": events,
        "samples": len(rows),
        "keys": list(rows.keys),
        "split": split,
        "train_frac": train_frac,
        "split_ns": split_ns,
    }
    if spec.task is Task.SENSOR:
        rows.y = rows.y.astype(np.float32)
        train, test = rows.take(is_train), rows.take(~is_train)
        info = DatasetInfo(**common, train_rows=len(train), test_rows=len(test))
        return Dataset(spec=spec, train=train, test=test, info=info)

    ret, later = future_returns(rows.y, rows.key, horizon)
    labelled = np.isfinite(ret)
    # Purge: a train row whose horizon event is already in the test period would learn
    # from the test period's prices.
    later_arrival = np.where(later >= 0, rows.arrival_ns[np.maximum(later, 0)], 0)
    leaks = is_train & labelled & (later_arrival >= cut)
    train_mask = is_train & labelled & ~leaks
    test_mask = ~is_train & labelled
    rule = "given"
    if theta_bps is None:
        theta_bps = balanced_theta(ret[train_mask])
        rule = "train |ret| 1/3 quantile"
    rows.ret_bps = ret
    rows.y = trading_labels(np.nan_to_num(ret), theta_bps)
    train, test = rows.take(train_mask), rows.take(test_mask)
    info = DatasetInfo(
        **common,
        train_rows=len(train),
        test_rows=len(test),
        purged_rows=int(leaks.sum()),
        horizon=horizon,
        theta_bps=float(theta_bps),
        theta_rule=rule,
        labels=list(TRADING_LABELS),
        train_class_counts=np.bincount(train.y, minlength=3).tolist(),
        test_class_counts=np.bincount(test.y, minlength=3).tolist(),
    )
    return Dataset(spec=spec, train=train, test=test, info=info)


def infer_task(feed: str | Path) -> Task:
    """The task a feed serves, from its first event (sensor readings → sensor)."""
    for rec in FeedReader(feed).records():
        return Task.SENSOR if isinstance(rec.event, SensorReading) else Task.TRADING
    raise EngineError(f"feed {feed}: empty")


def column_stats(x: F32, row_width: int) -> tuple[F32, F32]:
    """Mean and std per row column, pooled over window positions, tiled to ``n_features``.

    Columns that never vary (std < 1e-6) get std 1, so they pass through unscaled.
    """
    w = x.shape[1] // row_width
    cols = x.reshape(-1, w, row_width)
    mean = np.zeros(row_width, dtype=np.float64)
    sq = np.zeros(row_width, dtype=np.float64)
    step = 8192
    for i in range(0, cols.shape[0], step):
        chunk = cols[i : i + step].astype(np.float64)
        mean += chunk.sum(axis=(0, 1))
        sq += (chunk * chunk).sum(axis=(0, 1))
    count = max(1, cols.shape[0] * w)
    mean /= count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    std[std < 1e-6] = 1.0
    return (
        np.tile(mean, w).astype(np.float32),
        np.tile(std, w).astype(np.float32),
    )


def check_columns(row_names: Sequence[str], names: Sequence[str], what: str) -> None:
    """Raise ``EngineError`` naming any of ``names`` that is not a row column."""
    unknown = [n for n in names if n not in row_names]
    if unknown:
        raise EngineError(
            f"{what}: unknown column(s) {', '.join(unknown)}; known: {', '.join(row_names)}"
        )


def drop_columns(
    mean: F32, std: F32, row_names: Sequence[str], names: Sequence[str]
) -> tuple[F32, F32]:
    """``mean``/``std`` with the row columns ``names`` switched off at every window position:
    mean 0 and std infinite, so the model's standardisation (``(x - mean) / std``) feeds
    them to the network as 0 whatever their value (for symbol-scaled columns a model must
    not learn from). Unknown names raise ``EngineError`` naming them and the known ones.
    """
    unknown = [n for n in names if n not in row_names]
    if unknown:
        raise EngineError(
            f"drop_features: unknown column(s) {', '.join(unknown)}; known: {', '.join(row_names)}"
        )
    width = len(row_names)
    mean, std = mean.copy(), std.copy()
    for name in names:
        col = row_names.index(name)
        mean[col::width] = 0.0
        std[col::width] = np.inf
    return mean, std
