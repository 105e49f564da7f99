"""The ``weir replay`` command group: import, synthesize and inspect feed files.

Registered through the ``weir.commands`` entry point (``replay.cli:register``). Each
subcommand is a ``(name, register)`` pair in ``_commands``; a register function adds its
parser to the group's subparsers with ``set_defaults(func=handler)``, and a handler takes
the parsed namespace and returns the exit code. Add ``record``/``run``/``report``/``compare``
by appending to ``_commands``.

    weir replay import binance SRC... --out FEED [--symbol S] [--on-error fail|skip] [--limit N]
    weir replay import nab SRC... --out FEED [--labels combined_windows.json]
    weir replay import csv|ndjson SRC... --out FEED --map key=..,ts=..,value=.. --kind K
                                    [--ts-unit s|ms|us|ns|iso]
    weir replay synth --kind market|sensor (--seconds S | --events N) [--seed N] --out FEED
    weir replay inspect FEED [--json]

Progress (rows, rate) is drawn on stderr, at most 5 times a second, only when stderr is a
terminal; the final summary always goes to stdout. Bad input lines fail the import by
default (``--on-error fail``); ``--on-error skip`` skips, counts and lists them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
import pyarrow as pa

from replay.commands import register_compare, register_report, register_run
from replay.echo import register_echo
from replay.importers.base import ON_ERROR_CHOICES, ImportReport, SourceInfo, read_source_info
from replay.importers.binance import import_binance
from replay.importers.generic import TS_UNITS, ColumnMap, import_csv, import_ndjson
from replay.importers.nab import import_nab
from replay.record import register_record
from replay.synthetic import DEFAULT_SYMBOLS, synthesize_market, synthesize_sensor
from schemas.codec import Encoding
from schemas.events import EVENT_KINDS
from schemas.feed import FEED_VERSION, FeedReader

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class ProgressLine:
    """A carriage-return progress line (``rows``, rate) on a terminal, throttled.

    Call with the rows done so far; draws at most once per ``interval`` seconds and only
    when ``stream`` is a TTY. ``done()`` clears the line.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last = float("-inf")
        self.drawn = False

    def __call__(self, rows: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = rows / (now - self.started) if now > self.started else 0.0
        self.stream.write(f"\r{rows:,} events  {rate:,.0f} events/s")
        self.stream.flush()
        self.drawn = True

    def done(self) -> None:
        """Erase the progress line, if one was drawn."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def _print_report(report: ImportReport, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(report).decode())
    else:
        print(report.summary())


def _add_common_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SRC", type=Path, help="input file(s)")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="FEED", help="feed to write")
    p.add_argument(
        "--on-error",
        choices=ON_ERROR_CHOICES,
        default="fail",
        help="bad input lines fail the import (default) or are skipped, counted and listed",
    )
    p.add_argument("--limit", type=int, metavar="N", help="stop after N events")
    p.add_argument(
        "--max-listed", type=int, default=20, metavar="N", help="bad lines listed (default 20)"
    )
    p.add_argument(
        "--encoding",
        choices=[e.value for e in Encoding],
        default=Encoding.MSGPACK.value,
        help="payload encoding (default msgpack)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_import(args: argparse.Namespace) -> int:
    progress = ProgressLine()
    common: dict[str, Any] = {
        "on_error": args.on_error,
        "limit": args.limit,
        "encoding": args.encoding,
        "max_listed": args.max_listed,
        "progress": progress,
    }
    try:
        if args.format == "binance":
            report = import_binance(args.sources, args.out, symbol=args.symbol, **common)
        elif args.format == "nab":
            report = import_nab(args.sources, args.out, labels=args.labels, **common)
        else:
            cmap = ColumnMap.parse(args.map, kind=args.kind, ts_unit=args.ts_unit)
            fn = import_csv if args.format == "csv" else import_ndjson
            report = fn(args.sources, args.out, cmap, **common)
    finally:
        progress.done()
    _print_report(report, args.json)
    return 0


def _register_import(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "import",
        help="import public feed formats into a feed file",
        description="Import Binance captures, NAB series or mapped CSV/NDJSON into a feed.",
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    b = formats.add_parser("binance", help="Binance websocket captures (gzip text)")
    _add_common_import(b)
    b.add_argument("--symbol", help="snapshot symbol (default: from the file name)")
    n = formats.add_parser("nab", help="Numenta Anomaly Benchmark CSV files")
    _add_common_import(n)
    n.add_argument(
        "--labels", type=Path, help="combined_windows.json (default: NAB's layout beside SRC)"
    )
    for fmt, what in (("csv", "CSV files with a header row"), ("ndjson", "NDJSON files")):
        g = formats.add_parser(fmt, help=what)
        _add_common_import(g)
        g.add_argument(
            "--map",
            required=True,
            metavar="TARGET=COL,...",
            help="column map, e.g. key=sensor,ts=time,value=reading",
        )
        g.add_argument("--kind", choices=EVENT_KINDS, help="kind of every row (or map kind=COL)")
        g.add_argument("--ts-unit", choices=TS_UNITS, default="ns", help="time unit (default ns)")
    for q in (b, n, *(formats.choices[f] for f in ("csv", "ndjson"))):
        q.set_defaults(func=_run_import)


def _run_synth(args: argparse.Namespace) -> int:
    progress = ProgressLine()
    try:
        if args.kind == "market":
            symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
            report = synthesize_market(
                args.out,
                seconds=args.seconds,
                events=args.events,
                symbols=symbols,
                rate=args.rate if args.rate is not None else 200.0,
                seed=args.seed,
                levels=args.levels,
                encoding=args.encoding,
                progress=progress,
            )
        else:
            report = synthesize_sensor(
                args.out,
                seconds=args.seconds,
                events=args.events,
                sensors=args.sensors,
                rate=args.rate if args.rate is not None else 1.0,
                anomalies=args.anomalies,
                seed=args.seed,
                encoding=args.encoding,
                progress=progress,
            )
    finally:
        progress.done()
    _print_report(report, args.json)
    return 0


def _register_synth(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "synth",
        help="write a seeded synthetic feed (market or sensor)",
        description="Write a synthetic feed; the same arguments give the same file.",
    )
    p.add_argument("--kind", choices=("market", "sensor"), required=True)
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--seconds", type=float, help="duration to generate")
    size.add_argument("--events", type=int, help="rows to write in all")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="FEED")
    p.add_argument(
        "--rate", type=float, help="events/s per symbol (200) or readings/s per sensor (1)"
    )
    p.add_argument(
        "--symbols", default=",".join(DEFAULT_SYMBOLS), help="market: comma-separated symbols"
    )
    p.add_argument("--levels", type=int, default=10, help="market: book levels per side")
    p.add_argument("--sensors", type=int, default=3, help="sensor: number of series")
    p.add_argument("--anomalies", type=int, help="sensor: anomalies per series (default n/500)")
    p.add_argument(
        "--encoding", choices=[e.value for e in Encoding], default=Encoding.MSGPACK.value
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_synth)


class FeedSummary(msgspec.Struct, kw_only=True):
    """What ``weir replay inspect`` shows about a feed file."""

    path: str
    size_bytes: int
    feed_version: str
    encoding: str
    rows: int
    kinds: dict[str, int]
    keys: dict[str, int]
    first_recv_ns: int | None
    last_recv_ns: int | None
    min_recv_ns: int | None
    max_recv_ns: int | None
    recv_backwards: int
    min_source_ts_ns: int | None
    max_source_ts_ns: int | None
    rows_without_source_ts: int
    source: SourceInfo | None
    source_text: str
    """The raw ``weir.source`` metadata when it is not a ``SourceInfo``."""


def inspect_feed(path: str | Path) -> FeedSummary:
    """Scan a feed's plain columns (payloads are not decoded) and summarize it."""
    reader = FeedReader(path)
    kinds: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    backwards = 0
    first: int | None = None
    last = lo = hi = 0
    s_lo: int | None = None
    s_hi: int | None = None
    no_src = 0
    for batch in reader.batches(columns=["recv_ns", "source_ts_ns", "key", "kind"]):
        if batch.num_rows == 0:
            continue
        recv = batch.column("recv_ns").to_numpy()
        bmin, bmax = int(recv.min()), int(recv.max())
        if first is None:
            first, lo, hi = int(recv[0]), bmin, bmax
        else:
            backwards += int(recv[0] < last)
            lo, hi = min(lo, bmin), max(hi, bmax)
        last = int(recv[-1])
        backwards += int(np.count_nonzero(np.diff(recv) < 0))
        src = batch.column("source_ts_ns")
        no_src += src.null_count
        if src.null_count < len(src):
            vals = src.drop_null().to_numpy()
            smin, smax = int(vals.min()), int(vals.max())
            s_lo = smin if s_lo is None else min(s_lo, smin)
            s_hi = smax if s_hi is None else max(s_hi, smax)
        for col, counter in (("kind", kinds), ("key", keys)):
            arr = batch.column(col)
            if isinstance(arr, pa.DictionaryArray):
                arr = arr.dictionary_decode()
            for item in arr.value_counts().to_pylist():
                counter[item["values"]] += item["counts"]
    info = read_source_info(reader)
    p = Path(path)
    return FeedSummary(
        path=str(p),
        size_bytes=p.stat().st_size,
        feed_version=FEED_VERSION,
        encoding=reader.encoding.value,
        rows=reader.num_rows,
        kinds=dict(sorted(kinds.items())),
        keys=dict(sorted(keys.items(), key=lambda kv: (-kv[1], kv[0]))),
        first_recv_ns=first,
        last_recv_ns=None if first is None else last,
        min_recv_ns=None if first is None else lo,
        max_recv_ns=None if first is None else hi,
        recv_backwards=backwards,
        min_source_ts_ns=s_lo,
        max_source_ts_ns=s_hi,
        rows_without_source_ts=no_src,
        source=info,
        source_text="" if info is not None else reader.source,
    )


def _iso(ns: int | None) -> str:
    if ns is None:
        return "-"
    dt = datetime.fromtimestamp(ns // 10**9, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ns % 10**9 // 10**6:03d}Z"


def _format_summary(s: FeedSummary, max_keys: int = 10) -> str:
    span = 0.0
    if s.max_recv_ns is not None and s.min_recv_ns is not None:
        span = (s.max_recv_ns - s.min_recv_ns) / 1e9
    kinds = ", ".join(f"{k} {n:,}" for k, n in s.kinds.items()) or "none"
    top = list(s.keys.items())[:max_keys]
    keys = ", ".join(f"{k} {n:,}" for k, n in top)
    if len(s.keys) > max_keys:
        keys += f", ... {len(s.keys) - max_keys:,} more"
    lines = [
        f"feed: {s.path} ({s.size_bytes / 2**20:,.1f} MiB, feed v{s.feed_version}, "
        f"payload {s.encoding})",
        f"rows: {s.rows:,}",
        f"kinds: {kinds}",
        f"keys ({len(s.keys):,}): {keys}",
        f"recv: {_iso(s.min_recv_ns)} .. {_iso(s.max_recv_ns)} ({span:,.3f} s), "
        f"{s.recv_backwards:,} backward step(s)",
        f"source ts: {_iso(s.min_source_ts_ns)} .. {_iso(s.max_source_ts_ns)}"
        + (f" ({s.rows_without_source_ts:,} rows without)" if s.rows_without_source_ts else ""),
    ]
    if s.source is not None:
        files = ", ".join(s.source.files)
        lines.append(f"source: {s.source.importer}" + (f": {files}" if files else ""))
        if s.source.anomalies:
            per: Counter[str] = Counter(w.key for w in s.source.anomalies)
            lines.append(
                f"anomaly windows: {len(s.source.anomalies)} ("
                + ", ".join(f"{k} {n}" for k, n in sorted(per.items()))
                + ")"
            )
    elif s.source_text:
        lines.append(f"source: {s.source_text}")
    return "\n".join(lines)


def _run_inspect(args: argparse.Namespace) -> int:
    summary = inspect_feed(args.feed)
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        print(_format_summary(summary))
    return 0


def _register_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarize a feed file (rows, kinds, keys, span, encoding)",
        description="Summarize a feed file without decoding its payloads.",
    )
    p.add_argument("feed", type=Path, metavar="FEED")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_inspect)


_commands: list[tuple[str, Register]] = [
    ("import", _register_import),
    ("synth", _register_synth),
    ("inspect", _register_inspect),
    ("record", register_record),
    ("run", register_run),
    ("report", register_report),
    ("compare", register_compare),
    ("echo", register_echo),
]
"""The group's subcommands, in help order; append ``(name, register)`` to add one."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` group and its subcommands to ``weir``'s subparsers."""
    p = subparsers.add_parser(
        "replay",
        help="import, synthesize and inspect feeds; replay them against the service",
        description="Feed files: import public formats, synthesize demo feeds, inspect.",
    )
    sub = p.add_subparsers(dest="replay_command", metavar="COMMAND", required=True)
    for _name, reg in _commands:
        reg(sub)
