"""Binance websocket captures (hftbacktest collector format) to weir events.

Input: gzip (or plain) text, one message per line, ``<local receive ns> <raw JSON>``.
The JSON is a combined-stream message ``{"stream": ..., "data": {...}}``:

============================ ============ =================================================
stream                       event        fields used
============================ ============ =================================================
``<sym>@bookTicker``         ``Quote``    ``b B a A`` px/qty, ``u`` update id, ``E`` (or
                                          ``T``) exchange ms when present (futures only)
``<sym>@depth`` / ``@depth@  ``BookDiff`` ``U``/``u`` first/last update id, ``b``/``a``
100ms`` / ``@depth@0ms``                  levels, ``E`` event ms (futures ``T`` ignored)
``<sym>@trade``              ``Trade``    ``t`` id, ``p`` px, ``q`` qty, ``T`` trade ms,
                                          ``m`` buyer is maker
============================ ============ =================================================

A line without ``"stream"`` is a REST depth snapshot ``{"lastUpdateId", "bids", "asks"}``
(futures add ``E``/``T``) and becomes a ``BookSnapshot``; its symbol comes from the file
name (``btcusdt_usdm_20240808.gz`` -> ``BTCUSDT``: the name up to the first ``_`` or ``.``,
upper-cased) unless ``symbol`` is given. Stream symbols are the stream name's prefix,
upper-cased. Other streams are counted as skipped, not imported.

``recv_ns`` is the local stamp; ``source_ts_ns`` is exchange time (ms x 1e6), ``None``
where Binance sends none (spot ``bookTicker``, spot snapshots). The two clocks are never
mixed.

Prices and quantities arrive as decimal strings and are parsed by msgspec (lax mode) to
the nearest IEEE-754 double, the same value ``float(text)`` gives (tested): Binance sends at
most 8 decimals and under 16 significant digits, so ``repr`` of the float gives the decimal
back; exact decimal arithmetic is not needed for features or replay.
Each line is parsed once by a typed msgspec decoder built at import time, which also
enforces the bounds of ``schemas.events`` (price > 0, qty >= 0, at most 5000 levels).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, BinaryIO, Final, cast

import msgspec

from replay.importers.base import (
    ImportLog,
    ImportReport,
    OnError,
    Progress,
    SourceInfo,
    open_error,
    write_feed,
)
from schemas.codec import Encoding
from schemas.errors import FeedError
from schemas.events import (
    MAX_KEY_LEN,
    BookDiff,
    BookSnapshot,
    Event,
    Levels,
    Price,
    Qty,
    Quote,
    Trade,
    UpdateId,
)

_MS: Final = 1_000_000
_MAX_NS: Final = 2**63 - 1
ExchangeMs = Annotated[int, msgspec.Meta(ge=0, le=_MAX_NS // _MS)]


class _Ticker(msgspec.Struct):
    u: UpdateId
    b: Price
    B: Qty
    a: Price
    A: Qty
    E: ExchangeMs | None = None
    T: ExchangeMs | None = None


class _Depth(msgspec.Struct):
    E: ExchangeMs
    U: UpdateId
    u: UpdateId
    b: Levels
    a: Levels


class _Trade(msgspec.Struct):
    t: UpdateId
    p: Price
    q: Qty
    T: ExchangeMs
    m: bool


class _TickerMsg(msgspec.Struct):
    stream: str
    data: _Ticker


class _DepthMsg(msgspec.Struct):
    stream: str
    data: _Depth


class _TradeMsg(msgspec.Struct):
    stream: str
    data: _Trade


class _Snapshot(msgspec.Struct):
    lastUpdateId: UpdateId  # Binance's field name
    bids: Levels
    asks: Levels
    E: ExchangeMs | None = None


class _Envelope(msgspec.Struct):
    stream: str | None = None


# strict=False: decimal strings decode straight to float, bounds still apply.
_TICKER = msgspec.json.Decoder(_TickerMsg, strict=False)
_DEPTH = msgspec.json.Decoder(_DepthMsg, strict=False)
_TRADE = msgspec.json.Decoder(_TradeMsg, strict=False)
_SNAPSHOT = msgspec.json.Decoder(_Snapshot, strict=False)
_ENVELOPE = msgspec.json.Decoder(_Envelope)

_QUOTE_K, _DIFF_K, _TRADE_K, _OTHER_K = 0, 1, 2, 3
_STREAM_PREFIX: Final = b'{"stream":"'
_GZIP_MAGIC: Final = b"\x1f\x8b"


def symbol_from_filename(path: str | Path) -> str:
    """The symbol a capture file is named after: ``btcusdt_20240808.gz`` -> ``BTCUSDT``."""
    name = Path(path).name
    return name.split("_", 1)[0].split(".", 1)[0].upper()


def _classify(stream: str) -> tuple[int, str]:
    sym, _, channel = stream.partition("@")
    if not sym or len(sym) > MAX_KEY_LEN:
        return _OTHER_K, ""
    if channel == "bookTicker":
        return _QUOTE_K, sym.upper()
    if channel == "trade":
        return _TRADE_K, sym.upper()
    if channel == "depth" or (channel.startswith("depth@") and channel.endswith("ms")):
        return _DIFF_K, sym.upper()
    return _OTHER_K, ""


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    return cast(BinaryIO, gzip.open(path, "rb")) if gzipped else path.open("rb")


def _show(data: bytes, width: int = 40) -> str:
    text = data.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= width else text[:width] + "...")


def iter_binance(
    path: str | Path, *, log: ImportLog, symbol: str | None = None
) -> Iterator[tuple[int, Event]]:
    """Yield ``(recv_ns, event)`` for every line of one capture file, in file order.

    Bad lines go to ``log.bad`` as ``<file name>:<line>: <reason>``; streams other than
    bookTicker/depth/trade and blank lines are counted by ``log.skip``. Raises
    ``FeedError`` when the file cannot be opened (and for bad lines under ``fail``).
    """
    path = Path(path)
    name = path.name
    snap_symbol = symbol or symbol_from_filename(path)
    if not 0 < len(snap_symbol) <= MAX_KEY_LEN:
        raise FeedError(f"{name}: cannot take a symbol from the file name; pass one")
    try:
        f = _open(path)
    except OSError as exc:
        raise open_error(path, exc) from exc
    streams: dict[bytes, tuple[int, str]] = {}
    lineno = 0
    bad = log.bad
    with f:
        lines = iter(f)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except (EOFError, OSError, zlib.error) as exc:
                bad(name, lineno + 1, f"truncated or corrupt gzip data: {exc}")
                return
            lineno += 1
            log.lines += 1
            sp = line.find(b" ")
            if sp <= 0:
                if not line.strip():
                    log.skip("blank line")
                else:
                    bad(name, lineno, f"expected '<receive ns> <json>', got {_show(line)}")
                continue
            try:
                recv_ns = int(line[:sp])
            except ValueError:
                bad(name, lineno, f"expected receive time in ns, got {_show(line[:sp])}")
                continue
            if not 0 <= recv_ns <= _MAX_NS:
                bad(name, lineno, f"receive time {recv_ns} is outside 0..2**63-1 ns")
                continue
            payload = line[sp + 1 :]
            if payload.startswith(_STREAM_PREFIX):
                end = payload.find(b'"', 11)
                stream_b = payload[11:end]
            elif b'"stream"' in payload:
                try:
                    stream = _ENVELOPE.decode(payload).stream or ""
                except msgspec.DecodeError as exc:
                    bad(name, lineno, f"combined-stream message: {exc}")
                    continue
                stream_b = stream.encode()
            else:
                snapshot = _snapshot(payload, snap_symbol, name, lineno, log)
                if snapshot is not None:
                    yield recv_ns, snapshot
                continue
            cls = streams.get(stream_b)
            if cls is None:
                cls = streams[stream_b] = _classify(stream_b.decode("utf-8", "replace"))
            k, sym = cls
            event: Event
            try:
                if k == _QUOTE_K:
                    q = _TICKER.decode(payload).data
                    ts = q.E if q.E is not None else q.T
                    event = Quote(
                        symbol=sym,
                        bid_px=q.b,
                        bid_qty=q.B,
                        ask_px=q.a,
                        ask_qty=q.A,
                        update_id=q.u,
                        source_ts_ns=None if ts is None else ts * _MS,
                    )
                elif k == _TRADE_K:
                    t = _TRADE.decode(payload).data
                    event = Trade(
                        symbol=sym,
                        trade_id=t.t,
                        price=t.p,
                        qty=t.q,
                        buyer_is_maker=t.m,
                        source_ts_ns=t.T * _MS,
                    )
                elif k == _DIFF_K:
                    d = _DEPTH.decode(payload).data
                    event = BookDiff(
                        symbol=sym,
                        first_update_id=d.U,
                        last_update_id=d.u,
                        bids=d.b,
                        asks=d.a,
                        source_ts_ns=d.E * _MS,
                    )
                else:
                    log.skip(f"stream {stream_b.decode('utf-8', 'replace')}")
                    continue
            except msgspec.DecodeError as exc:
                bad(name, lineno, f"{stream_b.decode('utf-8', 'replace')}: {exc}")
                continue
            yield recv_ns, event


def _snapshot(
    payload: bytes, symbol: str, name: str, lineno: int, log: ImportLog
) -> BookSnapshot | None:
    if b'"lastUpdateId"' not in payload:
        log.bad(
            name,
            lineno,
            'expected a combined-stream message {"stream", "data"} or a depth snapshot '
            '{"lastUpdateId", "bids", "asks"}',
        )
        return None
    try:
        s = _SNAPSHOT.decode(payload)
    except msgspec.DecodeError as exc:
        log.bad(name, lineno, f"depth snapshot: {exc}")
        return None
    return BookSnapshot(
        symbol=symbol,
        last_update_id=s.lastUpdateId,
        bids=s.bids,
        asks=s.asks,
        source_ts_ns=None if s.E is None else s.E * _MS,
    )


def import_binance(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    symbol: str | None = None,
    on_error: OnError = "fail",
    limit: int | None = None,
    encoding: Encoding | str = Encoding.MSGPACK,
    max_listed: int = 20,
    progress: Progress | None = None,
) -> ImportReport:
    """Import Binance capture files into one feed at ``out`` (merged by receive time).

    ``symbol`` overrides the snapshot symbol taken from each file name. Returns the
    report; raises ``FeedError`` on the first bad line under ``on_error="fail"``.
    """
    if not sources:
        raise FeedError("no input files")
    log = ImportLog(on_error, max_listed=max_listed)
    paths = [Path(s) for s in sources]
    info = SourceInfo(
        importer="binance",
        files=[p.name for p in paths],
        params={"symbol": symbol} if symbol else {},
    )
    return write_feed(
        out,
        [iter_binance(p, log=log, symbol=symbol) for p in paths],
        log=log,
        info=info,
        limit=limit,
        encoding=encoding,
        progress=progress,
    )
