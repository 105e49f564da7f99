"""Generic CSV (with a header row) and NDJSON files to weir events, through a column map.

A ``ColumnMap`` says which input column feeds which event field::

    ColumnMap.parse("key=sensor,ts=time,value=reading", kind="sensor", ts_unit="s")

Targets: ``key`` (the symbol or sensor id; required), ``ts`` (the event's own time ->
``source_ts_ns``), ``recv`` (receive time -> ``recv_ns``; defaults to ``ts``; one of the
two is required), ``kind`` (a column holding the kind per row, instead of a fixed
``kind=``), and any field of the event type (``value``, ``unit``, ``bid_px``, ``price``,
``buyer_is_maker``, ...). A field left out of the map is read from a column of its own
name when there is one. Times are numbers in ``s``/``ms``/``us``/``ns`` since the epoch
(decimals kept exactly to the ns) or ``iso`` date-times (naive means UTC).

Values are converted and range-checked by msgspec in lax mode (``"1.5"`` -> 1.5,
``"true"`` -> True), so the bounds of ``schemas.events`` hold. In CSV an empty cell counts
as absent. CSV cells are text, so book kinds (``book_diff``/``book_snapshot``, whose levels
are lists) need NDJSON.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, get_args

import msgspec

from replay.importers.base import (
    ImportLog,
    ImportReport,
    OnError,
    Progress,
    SourceInfo,
    iso_to_ns,
    open_error,
    write_feed,
)
from schemas.codec import Encoding
from schemas.errors import FeedError
from schemas.events import EVENT_KINDS, EVENT_TYPES, Event, SensorReading

TsUnit = Literal["s", "ms", "us", "ns", "iso"]
TS_UNITS: Final[tuple[str, ...]] = get_args(TsUnit)
_SCALE: Final = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_UNIT_WORDS: Final = {
    "s": "seconds since the epoch",
    "ms": "milliseconds since the epoch",
    "us": "microseconds since the epoch",
    "ns": "nanoseconds since the epoch",
    "iso": "an ISO-8601 date-time",
}
_SPECIAL: Final = ("key", "ts", "recv", "kind")
_IMPLICIT: Final = frozenset({"symbol", "sensor_id", "source_ts_ns", "schema_version"})
_TYPES: Final[dict[str, type[Any]]] = dict(zip(EVENT_KINDS, EVENT_TYPES, strict=True))
_MAX_NS: Final = 2**63 - 1


def _fields_of(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(_TYPES[kind]) if f.name not in _IMPLICIT)


class _RowError(Exception):
    """A row that cannot become an event; the message is the reason."""


class ColumnMap(msgspec.Struct, frozen=True, kw_only=True):
    """Which input column feeds which event field (see the module docstring)."""

    columns: dict[str, str]
    """Target (``key``, ``ts``, ``recv``, ``kind`` or an event field) -> input column."""
    kind: str | None = None
    """The kind of every row, unless ``columns["kind"]`` names a column holding it."""
    ts_unit: str = "ns"

    def __post_init__(self) -> None:
        if self.ts_unit not in TS_UNITS:
            raise FeedError(
                f"unknown ts unit {self.ts_unit!r}; expected one of {', '.join(TS_UNITS)}"
            )
        if self.kind is None and "kind" not in self.columns:
            raise FeedError("column map needs a kind: pass kind=... or map kind=<column>")
        if self.kind is not None and self.kind not in EVENT_KINDS:
            raise FeedError(
                f"unknown kind {self.kind!r}; expected one of {', '.join(sorted(EVENT_KINDS))}"
            )
        if "key" not in self.columns:
            raise FeedError("column map needs key=<column>")
        if "ts" not in self.columns and "recv" not in self.columns:
            raise FeedError("column map needs ts=<column> or recv=<column>")
        kinds = [self.kind] if self.kind is not None else list(EVENT_KINDS)
        allowed = {f for k in kinds for f in _fields_of(k)}
        for target in self.columns:
            if target not in _SPECIAL and target not in allowed:
                raise FeedError(
                    f"unknown target {target!r} in column map; expected key, ts, recv, kind"
                    f" or a field of {'/'.join(kinds)}: {', '.join(sorted(allowed))}"
                )

    @classmethod
    def parse(cls, spec: str, *, kind: str | None = None, ts_unit: str = "ns") -> ColumnMap:
        """Parse ``"target=column,target=column,..."`` (as ``--map`` takes it)."""
        columns: dict[str, str] = {}
        for part in spec.split(","):
            if not part.strip():
                continue
            target, sep, column = part.partition("=")
            target, column = target.strip(), column.strip()
            if not sep or not target or not column:
                raise FeedError(f"bad column map entry {part!r}: expected target=column")
            if target in columns:
                raise FeedError(f"column map names target {target!r} twice")
            columns[target] = column
        return cls(columns=columns, kind=kind, ts_unit=ts_unit)


class _RowBuilder:
    """Turns one row (column -> value) into ``(recv_ns, event)`` or raises ``_RowError``."""

    def __init__(self, cmap: ColumnMap, present: Callable[[str], bool]) -> None:
        self.cmap = cmap
        cols = cmap.columns
        self.key_col = cols["key"]
        self.ts_col = cols.get("ts")
        self.recv_col = cols.get("recv")
        self.kind_col = cols.get("kind")
        self.scale = _SCALE.get(cmap.ts_unit, 0)
        self.unit_words = _UNIT_WORDS[cmap.ts_unit]
        # Per kind: (type, key field, [(field, column)]), fields defaulting to same-name columns.
        self.plans: dict[str, tuple[type[Any], str, list[tuple[str, str]]]] = {}
        for kind in [cmap.kind] if cmap.kind is not None else EVENT_KINDS:
            cls = _TYPES[kind]
            key_field = "sensor_id" if cls is SensorReading else "symbol"
            pairs = [(f, cols.get(f, f)) for f in _fields_of(kind) if f in cols or present(f)]
            self.plans[kind] = (cls, key_field, pairs)
        self.convert = msgspec.convert

    def time(self, value: Any, column: str) -> int:
        try:
            if isinstance(value, bool):
                raise ValueError
            if self.scale == 0:
                if not isinstance(value, str):
                    raise ValueError
                ns = iso_to_ns(value)
            elif isinstance(value, int):
                ns = value * self.scale
            elif isinstance(value, float):
                ns = int(Decimal(repr(value)) * self.scale)
            elif isinstance(value, str):
                try:
                    ns = int(value) * self.scale
                except ValueError:
                    ns = int(Decimal(value.strip()) * self.scale)
            else:
                raise ValueError
        except (ValueError, ArithmeticError):
            raise _RowError(
                f"expected {self.unit_words} in column {column!r}, got {value!r}"
            ) from None
        if not 0 <= ns <= _MAX_NS:
            raise _RowError(f"time {value!r} in column {column!r} is outside 1970..2262")
        return ns

    def build(self, row: Mapping[str, Any]) -> tuple[int, Event]:
        kind = self.cmap.kind
        if self.kind_col is not None:
            kind = row.get(self.kind_col)
            if not isinstance(kind, str) or kind not in self.plans:
                raise _RowError(
                    f"unknown kind {kind!r} in column {self.kind_col!r}; expected one of "
                    + ", ".join(sorted(self.plans))
                )
        assert kind is not None
        cls, key_field, pairs = self.plans[kind]
        key = row.get(self.key_col)
        if key is None or key == "":
            raise _RowError(f"missing key column {self.key_col!r}")
        ts = None
        if self.ts_col is not None:
            v = row.get(self.ts_col)
            if v is None or v == "":
                raise _RowError(f"missing time column {self.ts_col!r}")
            ts = self.time(v, self.ts_col)
        recv = ts
        if self.recv_col is not None:
            v = row.get(self.recv_col)
            if v is None or v == "":
                raise _RowError(f"missing receive-time column {self.recv_col!r}")
            recv = self.time(v, self.recv_col)
        assert recv is not None
        data: dict[str, Any] = {key_field: key if isinstance(key, str) else str(key)}
        if ts is not None:
            data["source_ts_ns"] = ts
        for field, col in pairs:
            v = row.get(col)
            if v is not None and v != "":
                data[field] = v
        try:
            event: Event = self.convert(data, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise _RowError(self._explain(str(exc), pairs, key_field)) from None
        return recv, event

    def _explain(self, msg: str, pairs: list[tuple[str, str]], key_field: str) -> str:
        """Add the input column to msgspec's message, which names the event field."""
        columns = dict(pairs)
        columns[key_field] = self.key_col
        for field, col in columns.items():
            if msg.endswith((f"`$.{field}`", f"field `{field}`")):
                return f"{msg} (column {col!r})"
        return msg


def iter_csv(
    path: str | Path, cmap: ColumnMap, *, log: ImportLog, delimiter: str = ","
) -> Iterator[tuple[int, Event]]:
    """Yield ``(recv_ns, event)`` per data row of one CSV file with a header, in file order.

    Raises ``FeedError`` when the file cannot be opened, is empty, or its header lacks a
    mapped column; bad rows go to ``log.bad``.
    """
    path = Path(path)
    name = path.name
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise open_error(path, exc) from exc
    with f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise FeedError(f"{name}:1: expected a header row, got an empty file")
        header = [h.strip() for h in header]
        log.lines += 1
        missing = [c for c in cmap.columns.values() if c not in header]
        if missing:
            raise FeedError(
                f"{name}:1: mapped column(s) {', '.join(map(repr, missing))} not in the header "
                f"{','.join(header)}"
            )
        builder = _RowBuilder(cmap, set(header).__contains__)
        width = len(header)
        for row in reader:
            log.lines += 1
            if not row:
                log.skip("blank line")
                continue
            if len(row) != width:
                log.bad(name, reader.line_num, f"expected {width} fields, got {len(row)}")
                continue
            try:
                yield builder.build(dict(zip(header, row, strict=True)))
            except _RowError as exc:
                log.bad(name, reader.line_num, str(exc))


_object_decoder = msgspec.json.Decoder(dict[str, Any])


def iter_ndjson(
    path: str | Path, cmap: ColumnMap, *, log: ImportLog
) -> Iterator[tuple[int, Event]]:
    """Yield ``(recv_ns, event)`` per line of one NDJSON file (one object per line).

    Top-level keys are the columns. Raises ``FeedError`` when the file cannot be opened;
    bad lines go to ``log.bad``.
    """
    path = Path(path)
    name = path.name
    try:
        f = path.open("rb")
    except OSError as exc:
        raise open_error(path, exc) from exc
    builder: _RowBuilder | None = None
    with f:
        for lineno, line in enumerate(f, 1):
            log.lines += 1
            if not line.strip():
                log.skip("blank line")
                continue
            try:
                row = _object_decoder.decode(line)
            except msgspec.DecodeError as exc:
                log.bad(name, lineno, f"JSON: {exc}")
                continue
            if builder is None:
                # Same-name fields are looked up in every row; absent ones are skipped there.
                builder = _RowBuilder(cmap, lambda _f: True)
            try:
                yield builder.build(row)
            except _RowError as exc:
                log.bad(name, lineno, str(exc))


def _import(
    importer: str,
    it: Callable[[Path, ColumnMap, ImportLog], Iterator[tuple[int, Event]]],
    sources: Sequence[str | Path],
    out: str | Path,
    cmap: ColumnMap,
    *,
    on_error: OnError,
    limit: int | None,
    encoding: Encoding | str,
    max_listed: int,
    progress: Progress | None,
) -> ImportReport:
    if not sources:
        raise FeedError("no input files")
    paths = [Path(s) for s in sources]
    log = ImportLog(on_error, max_listed=max_listed)
    info = SourceInfo(
        importer=importer,
        files=[p.name for p in paths],
        params={"columns": cmap.columns, "kind": cmap.kind, "ts_unit": cmap.ts_unit},
    )
    return write_feed(
        out,
        [it(p, cmap, log) for p in paths],
        log=log,
        info=info,
        limit=limit,
        encoding=encoding,
        progress=progress,
    )


def import_csv(
    sources: Sequence[str | Path],
    out: str | Path,
    cmap: ColumnMap,
    *,
    on_error: OnError = "fail",
    limit: int | None = None,
    encoding: Encoding | str = Encoding.MSGPACK,
    max_listed: int = 20,
    progress: Progress | None = None,
) -> ImportReport:
    """Import CSV files (header row first) into one feed at ``out`` through ``cmap``."""
    return _import(
        "csv",
        lambda p, m, log: iter_csv(p, m, log=log),
        sources,
        out,
        cmap,
        on_error=on_error,
        limit=limit,
        encoding=encoding,
        max_listed=max_listed,
        progress=progress,
    )


def import_ndjson(
    sources: Sequence[str | Path],
    out: str | Path,
    cmap: ColumnMap,
    *,
    on_error: OnError = "fail",
    limit: int | None = None,
    encoding: Encoding | str = Encoding.MSGPACK,
    max_listed: int = 20,
    progress: Progress | None = None,
) -> ImportReport:
    """Import NDJSON files (one JSON object per line) into one feed at ``out``."""
    return _import(
        "ndjson",
        lambda p, m, log: iter_ndjson(p, m, log=log),
        sources,
        out,
        cmap,
        on_error=on_error,
        limit=limit,
        encoding=encoding,
        max_listed=max_listed,
        progress=progress,
    )
