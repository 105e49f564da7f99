"""Seeded synthetic feeds for the demo: a bursty market and sensors with known anomalies.

Market (per symbol, independent streams merged by receive time):

- Arrivals follow a self-exciting Hawkes process with an exponential kernel, simulated
  exactly through its cluster (branching) representation, vectorised over generations
  with numpy: immigrants arrive as a Poisson process whose rate follows the regime, each
  event triggers ``Poisson(branching)`` children ``Exp(decay_s)`` later. Mean rate is
  ``rate`` events/s; bursts last a few ``decay_s``.
- Regimes (``calm``, ``up``, ``down``, ``volatile``) switch after ``Exp(regime_mean_s)``
  and set drift, volatility, spread and activity. A latent order-flow pressure (AR(1) in
  event time, pulled towards the regime's sign) both moves the mid-price and shows in the
  data (bid/ask size imbalance, aggressor side of trades), so a model has something to
  learn. Regime spans are ground truth in ``params["regimes"]`` of the source info.
- Each symbol starts with a ``BookSnapshot`` of ``levels`` per side, then ``Quote``
  (60 %), ``BookDiff`` (15 %, top ``levels`` per side, deletes as qty 0, update ids
  chained as Binance's are) and ``Trade`` (25 %) events. Prices sit on a 0.01 tick.
- ``source_ts_ns`` is exchange time (ms resolution); ``recv_ns`` adds a lognormal
  network latency (~2 ms) and never goes backwards.

Sensors: readings every ``1/rate`` s (jittered) of level + seasonal wave + AR(1) noise,
with injected ``spike``, ``level_shift`` and ``drift`` anomalies whose windows (inclusive,
on the ``source_ts_ns`` clock) go into the feed's source info as ``AnomalyWindow``s; read
them with ``replay.anomaly_windows(feed)``.

Everything is drawn from ``numpy.random.default_rng`` seeded from ``seed`` (one child
stream per symbol or sensor), and the clock starts at a fixed ``start_ns``: the same
arguments give a byte-identical feed file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from replay.importers.base import (
    AnomalyWindow,
    ImportLog,
    ImportReport,
    Progress,
    SourceInfo,
    write_feed,
)
from schemas.codec import Encoding
from schemas.errors import FeedError
from schemas.events import BookDiff, BookSnapshot, Event, Quote, SensorReading, Trade

DEFAULT_START_NS: Final = 1_700_000_000_000_000_000
"""2023-11-14T22:13:20Z: a fixed clock origin, so output depends on the seed alone."""
DEFAULT_SYMBOLS: Final = ("SYNA", "SYNB")
TICKS_PER_UNIT: Final = 100  # tick 0.01: price = ticks / 100, correctly rounded

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class _Regime:
    __slots__ = ("activity", "drift", "name", "pressure", "spread", "vol")

    def __init__(
        self, name: str, drift: float, vol: float, activity: float, pressure: float, spread: float
    ) -> None:
        self.name = name
        self.drift = drift  # log-price drift per s
        self.vol = vol  # log-price volatility per sqrt(s)
        self.activity = activity  # immigrant-rate multiplier
        self.pressure = pressure  # mean order-flow pressure
        self.spread = spread  # mean extra spread ticks


REGIMES: Final = (
    _Regime("calm", 0.0, 6e-5, 0.6, 0.0, 0.3),
    _Regime("up", 8e-5, 1e-4, 1.0, 0.8, 0.6),
    _Regime("down", -8e-5, 1e-4, 1.0, -0.8, 0.6),
    _Regime("volatile", 0.0, 3e-4, 2.0, 0.0, 2.0),
)


def _regime_path(
    rng: np.random.Generator, horizon_s: float, mean_s: float
) -> tuple[FloatArray, IntArray]:
    """Regime start times (from 0) and regime indices covering ``[0, horizon_s)``."""
    starts, idx = [0.0], [int(rng.integers(len(REGIMES)))]
    t = 0.0
    while True:
        t += float(rng.exponential(mean_s))
        if t >= horizon_s:
            break
        nxt = int(rng.integers(len(REGIMES) - 1))
        idx.append(nxt if nxt < idx[-1] else nxt + 1)  # any regime but the current one
        starts.append(t)
    return np.asarray(starts, dtype=np.float64), np.asarray(idx, dtype=np.int64)


def hawkes_times(
    rng: np.random.Generator,
    *,
    base_rate: FloatArray | float,
    horizon_s: float,
    branching: float,
    decay_s: float,
    segment_starts: FloatArray | None = None,
) -> FloatArray:
    """Sorted event times in ``[0, horizon_s)`` of a Hawkes process with kernel
    ``branching / decay_s * exp(-t / decay_s)``, by exact cluster simulation.

    ``base_rate`` is the immigrant rate (events/s), per segment when ``segment_starts``
    (ascending, first 0) is given. The stationary mean rate is ``base_rate / (1 - branching)``.
    """
    if not 0.0 <= branching < 1.0:
        raise FeedError(f"branching must be in [0, 1), got {branching}")
    starts = np.zeros(1) if segment_starts is None else segment_starts
    rates = np.broadcast_to(np.asarray(base_rate, dtype=np.float64), starts.shape)
    ends = np.append(starts[1:], horizon_s)
    counts = rng.poisson(rates * (ends - starts))
    gen = rng.uniform(np.repeat(starts, counts), np.repeat(ends, counts))
    out = [gen]
    while gen.size:
        parents = np.repeat(gen, rng.poisson(branching, gen.size))
        gen = parents + rng.exponential(decay_s, parents.size)
        gen = gen[gen < horizon_s]
        out.append(gen)
    return np.sort(np.concatenate(out), kind="stable")


def _latency_recv(
    rng: np.random.Generator, start_ns: int, t_s: FloatArray, median_s: float, sigma: float
) -> tuple[IntArray, IntArray]:
    """``(recv_ns, source_ns)``: receive times never go backwards; source in ms."""
    t_ns = start_ns + np.round(t_s * 1e9).astype(np.int64)
    lat = np.round(median_s * 1e9 * np.exp(sigma * rng.standard_normal(t_s.size)))
    recv = np.maximum.accumulate(t_ns + lat.astype(np.int64))
    return recv, t_ns // 1_000_000 * 1_000_000


class _MarketPlan:
    """Every random draw of one symbol's stream, as arrays; ``events()`` replays them."""

    def __init__(
        self,
        rng: np.random.Generator,
        symbol: str,
        *,
        price0: float,
        rate: float,
        seconds: float | None,
        n_events: int | None,
        levels: int,
        branching: float,
        decay_s: float,
        regime_mean_s: float,
        start_ns: int,
    ) -> None:
        self.symbol, self.levels, self.start_ns = symbol, levels, start_ns
        self.rng = rng
        horizon = seconds if seconds is not None else max(1.0, (n_events or 1) / rate)
        while True:
            reg_starts, reg_idx = _regime_path(rng, horizon, regime_mean_s)
            act = np.array([REGIMES[i].activity for i in reg_idx])
            w = np.diff(np.append(reg_starts, horizon))
            mu = rate * (1.0 - branching) * act / (float(np.dot(act, w)) / horizon)
            t = hawkes_times(
                rng,
                base_rate=mu,
                horizon_s=horizon,
                branching=branching,
                decay_s=decay_s,
                segment_starts=reg_starts,
            )
            if n_events is None or t.size >= n_events:
                break
            horizon *= 1.5
        if n_events is not None:
            t = t[:n_events]
            horizon = float(t[-1]) if t.size else 0.0
            keep = reg_starts <= horizon
            reg_starts, reg_idx = reg_starts[keep], reg_idx[keep]
        n = t.size
        self.t = t
        seg = np.searchsorted(reg_starts, t, side="right") - 1
        r = [REGIMES[i] for i in reg_idx[seg]] if n else []
        drift = np.array([x.drift for x in r])
        vol = np.array([x.vol for x in r])
        pbar = np.array([x.pressure for x in r])
        spread_mean = np.array([x.spread for x in r])
        # Latent order-flow pressure: AR(1) in event time pulled towards the regime's sign.
        eps = 0.15 * rng.standard_normal(n)
        pressure = np.empty(n)
        p, phi = 0.0, 0.98
        for k in range(n):
            p = phi * p + (1.0 - phi) * pbar[k] + eps[k]
            pressure[k] = p
        dt = np.diff(t, prepend=0.0)
        ret = (drift + 1.5e-4 * pressure) * dt + vol * np.sqrt(dt) * rng.standard_normal(n)
        mid_ticks = price0 * TICKS_PER_UNIT * np.exp(np.cumsum(ret))
        spread = 1 + rng.poisson(spread_mean)
        self.bid = np.maximum(1, np.floor(mid_ticks - spread / 2)).astype(np.int64)
        self.ask = self.bid + spread
        self.kind = rng.choice(3, size=n, p=[0.6, 0.15, 0.25])  # quote, diff, trade
        lean = np.exp(0.6 * pressure)
        self.bid_qty = np.round(rng.lognormal(0.5, 0.6, n) * lean, 3) + 0.001
        self.ask_qty = np.round(rng.lognormal(0.5, 0.6, n) / lean, 3) + 0.001
        buy = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * pressure))
        self.buyer_is_maker = ~buy
        self.trade_px = np.where(buy, self.ask, self.bid)
        self.trade_qty = np.round(rng.lognormal(-3.0, 1.0, n), 4) + 0.0001
        self.uid_step = 1 + rng.poisson(2.0, n)
        self.recv, self.src = _latency_recv(rng, start_ns, t, 0.002, 0.5)
        self.regimes = [
            [start_ns + round(float(s) * 1e9), REGIMES[i].name]
            for s, i in zip(reg_starts, reg_idx, strict=True)
        ]
        self.price0_ticks = round(price0 * TICKS_PER_UNIT)

    def _deep_qty(self, depth: int) -> float:
        return round(float(self.rng.lognormal(0.0, 0.8)) * (1.0 + 0.1 * depth), 3) + 0.001

    def events(self) -> Iterator[tuple[int, Event]]:
        """The snapshot, then every event of the stream in receive order."""
        sym, lv, u = self.symbol, self.levels, TICKS_PER_UNIT
        bids: dict[int, float] = {}
        asks: dict[int, float] = {}
        b0 = self.price0_ticks
        for j in range(lv):
            bids[b0 - j] = self._deep_qty(j)
            asks[b0 + 1 + j] = self._deep_qty(j)
        uid = 1_000_000
        last_diff_u = uid
        yield (
            self.start_ns,
            BookSnapshot(
                symbol=sym,
                last_update_id=uid,
                bids=[(p / u, q) for p, q in bids.items()],
                asks=[(p / u, q) for p, q in asks.items()],
                source_ts_ns=self.start_ns // 1_000_000 * 1_000_000,
            ),
        )
        cols = zip(
            self.kind.tolist(),
            self.recv.tolist(),
            self.src.tolist(),
            self.bid.tolist(),
            self.ask.tolist(),
            self.bid_qty.tolist(),
            self.ask_qty.tolist(),
            self.trade_px.tolist(),
            self.trade_qty.tolist(),
            self.buyer_is_maker.tolist(),
            self.uid_step.tolist(),
            strict=True,
        )
        trade_id = 0
        for kind, recv, src, b, a, bq, aq, tpx, tq, bim, step in cols:
            if kind == 0:
                uid += step
                yield (
                    recv,
                    Quote(
                        symbol=sym,
                        bid_px=b / u,
                        bid_qty=bq,
                        ask_px=a / u,
                        ask_qty=aq,
                        update_id=uid,
                        source_ts_ns=src,
                    ),
                )
            elif kind == 1:
                uid += step
                db = self._side_diff(bids, range(b, b - lv, -1), bq)
                da = self._side_diff(asks, range(a, a + lv), aq)
                yield (
                    recv,
                    BookDiff(
                        symbol=sym,
                        first_update_id=last_diff_u + 1,
                        last_update_id=uid,
                        bids=[(p / u, q) for p, q in sorted(db.items(), reverse=True)],
                        asks=[(p / u, q) for p, q in sorted(da.items())],
                        source_ts_ns=src,
                    ),
                )
                last_diff_u = uid
            else:
                trade_id += 1
                yield (
                    recv,
                    Trade(
                        symbol=sym,
                        trade_id=trade_id,
                        price=tpx / u,
                        qty=tq,
                        buyer_is_maker=bim,
                        source_ts_ns=src,
                    ),
                )

    def _side_diff(self, book: dict[int, float], want: range, top_qty: float) -> dict[int, float]:
        """Move ``book`` to the levels in ``want`` and return the changes (qty 0 = delete)."""
        changes: dict[int, float] = {}
        keep = set(want)
        for px in [p for p in book if p not in keep]:
            del book[px]
            changes[px] = 0.0
        for depth, px in enumerate(want):
            old = book.get(px)
            if depth == 0:
                q = top_qty
            elif old is None or self.rng.random() < 0.3:
                q = self._deep_qty(depth)
            else:
                continue
            if q != old:
                book[px] = q
                changes[px] = q
        return changes


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _check_size(seconds: float | None, events: int | None, minimum: int) -> None:
    if (seconds is None) == (events is None):
        raise FeedError("give exactly one of seconds or events")
    if seconds is not None and not seconds > 0:
        raise FeedError(f"seconds must be > 0, got {seconds}")
    if events is not None and events < minimum:
        raise FeedError(f"events must be >= {minimum}, got {events}")


def synthesize_market(
    out: str | Path,
    *,
    seconds: float | None = None,
    events: int | None = None,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    rate: float = 200.0,
    seed: int = 0,
    levels: int = 10,
    branching: float = 0.75,
    decay_s: float = 0.005,
    regime_mean_s: float = 30.0,
    start_ns: int = DEFAULT_START_NS,
    encoding: Encoding | str = Encoding.MSGPACK,
    progress: Progress | None = None,
) -> ImportReport:
    """Write a synthetic market feed: ``seconds`` of it, or ``events`` rows in all.

    ``rate`` is the mean events/s per symbol; ``events`` counts every row written
    (including one snapshot per symbol). Same arguments, same file bytes.
    """
    if not symbols:
        raise FeedError("need at least one symbol")
    _check_size(seconds, events, 2 * len(symbols))
    if not rate > 0:
        raise FeedError(f"rate must be > 0, got {rate}")
    if not 1 <= levels <= 1000:
        raise FeedError(f"levels must be in 1..1000, got {levels}")
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(symbols))]
    shares = _split(events, len(symbols)) if events is not None else [None] * len(symbols)
    plans = [
        _MarketPlan(
            rng,
            sym,
            price0=100.0 * (i + 1),
            rate=rate,
            seconds=seconds,
            n_events=None if share is None else share - 1,
            levels=levels,
            branching=branching,
            decay_s=decay_s,
            regime_mean_s=regime_mean_s,
            start_ns=start_ns,
        )
        for i, (rng, sym, share) in enumerate(zip(rngs, symbols, shares, strict=True))
    ]
    params: dict[str, Any] = {
        "kind": "market",
        "seed": seed,
        "seconds": seconds,
        "events": events,
        "symbols": list(symbols),
        "rate": rate,
        "levels": levels,
        "branching": branching,
        "decay_s": decay_s,
        "regime_mean_s": regime_mean_s,
        "start_ns": start_ns,
        "regimes": {p.symbol: p.regimes for p in plans},
    }
    return write_feed(
        out,
        [p.events() for p in plans],
        log=ImportLog(),
        info=SourceInfo(importer="synthetic", params=params),
        encoding=encoding,
        progress=progress,
    )


ANOMALY_KINDS: Final = ("spike", "level_shift", "drift")


def _sensor_series(
    rng: np.random.Generator, sensor: str, n: int, rate: float, n_anomalies: int, start_ns: int
) -> tuple[IntArray, IntArray, FloatArray, list[AnomalyWindow]]:
    """``(recv_ns, source_ns, values, windows)`` of one sensor."""
    period = 1.0 / rate
    t = np.arange(n) * period + rng.uniform(0.0, 0.05 * period, n)
    level = float(rng.uniform(20.0, 80.0))
    noise_sd = float(rng.uniform(0.5, 2.0))
    season = float(rng.uniform(2.0, 8.0)) * np.sin(
        2 * math.pi * np.arange(n) / max(n / 4.0, 8.0) + rng.uniform(0, 2 * math.pi)
    )
    eps = rng.standard_normal(n) * noise_sd * math.sqrt(1 - 0.8**2)
    ar = np.empty(n)
    a = 0.0
    for k in range(n):
        a = 0.8 * a + eps[k]
        ar[k] = a
    values = level + season + ar
    src = start_ns + np.round(t * 1e9).astype(np.int64)
    lat = np.round(0.05e9 * np.exp(0.4 * rng.standard_normal(n))).astype(np.int64)
    recv = np.maximum.accumulate(src + lat)
    windows: list[AnomalyWindow] = []
    # Anomalies after a 10 % warm-up, one per equal slot, so they never overlap.
    lo = n // 10
    slot = (n - lo) // max(n_anomalies, 1)
    for j in range(n_anomalies if slot >= 8 else 0):
        kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            length = int(rng.integers(1, 4))
        elif kind == "level_shift":
            length = int(rng.integers(max(2, slot // 8), max(3, slot // 2)))
        else:
            length = int(rng.integers(max(2, slot // 4), max(3, slot // 2 + 1)))
        first = lo + j * slot + int(rng.integers(0, max(1, slot - length)))
        last = min(first + length, n) - 1
        span = slice(first, last + 1)
        if kind == "spike":
            values[span] += sign * float(rng.uniform(6.0, 10.0)) * noise_sd
        elif kind == "level_shift":
            values[span] += sign * float(rng.uniform(3.0, 5.0)) * noise_sd
        else:
            values[span] += (
                sign
                * float(rng.uniform(4.0, 6.0))
                * noise_sd
                * np.linspace(1.0 / (last - first + 1), 1.0, last - first + 1)
            )
        windows.append(
            AnomalyWindow(key=sensor, start_ns=int(src[first]), end_ns=int(src[last]), label=kind)
        )
    return recv, src, np.round(values, 6), windows


def _sensor_events(
    sensor: str, recv: IntArray, src: IntArray, values: FloatArray
) -> Iterator[tuple[int, Event]]:
    for r, s, v in zip(recv.tolist(), src.tolist(), values.tolist(), strict=True):
        yield r, SensorReading(sensor_id=sensor, value=v, source_ts_ns=s)


def synthesize_sensor(
    out: str | Path,
    *,
    seconds: float | None = None,
    events: int | None = None,
    sensors: int = 3,
    rate: float = 1.0,
    anomalies: int | None = None,
    seed: int = 0,
    start_ns: int = DEFAULT_START_NS,
    encoding: Encoding | str = Encoding.MSGPACK,
    progress: Progress | None = None,
) -> ImportReport:
    """Write a synthetic sensor feed with injected anomalies and their windows.

    ``sensors`` series at ``rate`` readings/s each for ``seconds``, or ``events`` rows in
    all; ``anomalies`` per sensor (default: one per 500 readings, at least one).
    """
    _check_size(seconds, events, sensors)
    if not 1 <= sensors <= 10_000:
        raise FeedError(f"sensors must be in 1..10000, got {sensors}")
    if not rate > 0:
        raise FeedError(f"rate must be > 0, got {rate}")
    if events is not None:
        counts = _split(events, sensors)
    else:
        assert seconds is not None
        counts = [max(1, int(seconds * rate))] * sensors
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(sensors)]
    names = [f"synth-{i:02d}" for i in range(sensors)]
    series = []
    windows: list[AnomalyWindow] = []
    for rng, name, n in zip(rngs, names, counts, strict=True):
        m = anomalies if anomalies is not None else max(1, n // 500)
        recv, src, values, w = _sensor_series(rng, name, n, rate, m, start_ns)
        series.append((name, recv, src, values))
        windows.extend(w)
    params: dict[str, Any] = {
        "kind": "sensor",
        "seed": seed,
        "seconds": seconds,
        "events": events,
        "sensors": sensors,
        "rate": rate,
        "anomalies": anomalies,
        "start_ns": start_ns,
    }
    return write_feed(
        out,
        [_sensor_events(*s) for s in series],
        log=ImportLog(),
        info=SourceInfo(importer="synthetic", params=params, anomalies=windows),
        encoding=encoding,
        progress=progress,
    )
