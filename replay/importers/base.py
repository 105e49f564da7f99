"""What every importer shares: the bad-line policy, the report, the feed's source metadata.

An importer is a generator ``iter_*(path, ..., log=ImportLog) -> Iterator[(recv_ns, Event)]``
that yields events in file order and hands every line it cannot turn into an event to
``ImportLog.bad`` (file and line number, the reason), which raises ``FeedError`` under
``on_error="fail"`` (the default) or counts and lists it under ``"skip"``. Lines that are
well formed but carry nothing weir imports (an unknown Binance stream, a blank line) are
counted by ``ImportLog.skip`` and shown in the summary: nothing is dropped silently.

``write_feed`` drains one or more such generators into a feed file (several sources are
merged by receive time; each keeps its own order) and returns an ``ImportReport``.

The feed's ``weir.source`` metadata holds a JSON ``SourceInfo``: importer, source file
names, parameters and ground-truth anomaly windows (NAB labels, synthetic injections).
``anomaly_windows(feed)`` reads them back for detector evaluation.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from schemas.codec import Encoding
from schemas.errors import FeedError
from schemas.events import EVENT_KINDS, EVENT_TYPES, Event
from schemas.feed import FeedReader, FeedWriter

OnError = Literal["fail", "skip"]
ON_ERROR_CHOICES: Final = ("fail", "skip")
DEFAULT_MAX_LISTED: Final = 20
"""How many bad lines a report lists verbatim (all are counted)."""

Source = Iterator[tuple[int, Event]]
"""What an importer yields: ``(recv_ns, event)`` in file order."""

_KIND_OF: Final[dict[type[Any], str]] = dict(zip(EVENT_TYPES, EVENT_KINDS, strict=True))
_MAX_NS: Final = 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_FRACTION = re.compile(r"\.(\d+)")


def kind_of(event: Event) -> str:
    """The ``kind`` tag of ``event`` (``quote``, ``trade``, ...)."""
    return _KIND_OF[type(event)]


def iso_to_ns(text: str) -> int:
    """ISO-8601 date-time to ns since the epoch; naive means UTC; keeps up to 9 decimals.

    Raises ``ValueError`` when ``text`` is not an ISO date-time or lies outside int64 ns.
    """
    frac_ns = 0
    m = _FRACTION.search(text)
    if m is not None:
        digits = m.group(1)
        frac_ns = int(digits[:9].ljust(9, "0"))
        text = text[: m.start()] + text[m.end() :]
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ns = (dt - _EPOCH) // _US * 1000 + frac_ns
    if not 0 <= ns <= _MAX_NS:
        raise ValueError(f"{text!r} is outside 1970-01-01..2262-04-11")
    return ns


class BadLine(msgspec.Struct, frozen=True, kw_only=True):
    """One input line that could not be imported."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class AnomalyWindow(msgspec.Struct, frozen=True, kw_only=True):
    """A ground-truth anomaly: ``key`` is anomalous from ``start_ns`` to ``end_ns`` inclusive.

    Times are on the events' ``source_ts_ns`` clock. ``label`` says where it came from
    (``nab``) or what was injected (``spike``, ``level_shift``, ``drift``).
    """

    key: str
    start_ns: int
    end_ns: int
    label: str = ""


class SourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a feed was made from; stored as JSON in the feed's ``weir.source`` metadata."""

    importer: str
    files: list[str] = msgspec.field(default_factory=list)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    anomalies: list[AnomalyWindow] = msgspec.field(default_factory=list)

    def encode(self) -> str:
        """JSON text with keys in a fixed order (same info, same bytes)."""
        return msgspec.json.encode(self, order="deterministic").decode()


_source_info_decoder = msgspec.json.Decoder(SourceInfo)


def read_source_info(feed: str | Path | FeedReader) -> SourceInfo | None:
    """The ``SourceInfo`` of a feed, or ``None`` when its ``weir.source`` is not one."""
    reader = feed if isinstance(feed, FeedReader) else FeedReader(feed)
    if not reader.source.startswith("{"):
        return None
    try:
        return _source_info_decoder.decode(reader.source)
    except msgspec.DecodeError:
        return None


def anomaly_windows(feed: str | Path | FeedReader) -> dict[str, list[tuple[int, int]]]:
    """Ground-truth anomaly windows of a feed per key, ``(start_ns, end_ns)`` inclusive.

    Empty when the feed carries none (market feeds, recordings, NAB files without labels).
    """
    info = read_source_info(feed)
    out: dict[str, list[tuple[int, int]]] = {}
    for w in info.anomalies if info is not None else ():
        out.setdefault(w.key, []).append((w.start_ns, w.end_ns))
    return out


class ImportLog:
    """Counts lines and applies the bad-line policy while an importer runs.

    ``bad`` raises ``FeedError("<file>:<line>: <reason>")`` under ``fail``; under ``skip``
    it counts the line and keeps the first ``max_listed``. ``skip`` counts well-formed
    lines that carry nothing to import, by reason.
    """

    def __init__(self, on_error: OnError = "fail", *, max_listed: int = DEFAULT_MAX_LISTED):
        if on_error not in ON_ERROR_CHOICES:
            raise FeedError(
                f"unknown on_error {on_error!r}; expected one of {', '.join(ON_ERROR_CHOICES)}"
            )
        self.on_error: OnError = on_error
        self.max_listed = max_listed
        self.lines = 0
        self.bad_count = 0
        self.bad_lines: list[BadLine] = []
        self.skipped: dict[str, int] = {}

    def bad(self, file: str, line: int, reason: str) -> None:
        """Report a line that cannot be imported (raises under ``fail``)."""
        bad = BadLine(file=file, line=line, reason=reason)
        if self.on_error == "fail":
            raise FeedError(str(bad))
        self.bad_count += 1
        if len(self.bad_lines) < self.max_listed:
            self.bad_lines.append(bad)

    def skip(self, reason: str) -> None:
        """Count a well-formed line that is deliberately not imported."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class ImportReport(msgspec.Struct, kw_only=True):
    """What an import read and wrote."""

    importer: str
    sources: list[str]
    out: str
    rows_written: int = 0
    lines_read: int = 0
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    """Rows written per event kind."""
    skipped: dict[str, int] = msgspec.field(default_factory=dict)
    """Well-formed lines not imported, per reason."""
    bad_count: int = 0
    bad_lines: list[BadLine] = msgspec.field(default_factory=list)
    """The first bad lines (all are in ``bad_count``)."""
    first_recv_ns: int | None = None
    last_recv_ns: int | None = None
    min_recv_ns: int | None = None
    max_recv_ns: int | None = None
    recv_backwards: int = 0
    """Rows whose ``recv_ns`` is below the previous row's (kept in file order)."""
    limited: bool = False
    """True when ``limit`` stopped the import before the input ended."""
    anomalies: list[AnomalyWindow] = msgspec.field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def span_ns(self) -> int:
        """``max(recv_ns) - min(recv_ns)`` of the rows written (0 when none)."""
        if self.min_recv_ns is None or self.max_recv_ns is None:
            return 0
        return self.max_recv_ns - self.min_recv_ns

    @property
    def rows_per_s(self) -> float:
        """Import throughput: rows written per wall second."""
        return self.rows_written / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """Human-readable, multi-line summary (what the CLI prints)."""
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(self.counts.items())) or "none"
        origin = (
            f" from {self.lines_read:,} lines of {len(self.sources)} file(s)"
            if self.sources
            else f" ({self.importer})"
        )
        lines = [
            f"wrote {self.rows_written:,} events{origin} to {self.out} in "
            f"{self.elapsed_s:.2f} s ({self.rows_per_s:,.0f} events/s)",
            f"  kinds: {kinds}",
            f"  span: {self.span_ns / 1e9:,.3f} s of receive time"
            + (f", {self.recv_backwards:,} backward step(s) kept" if self.recv_backwards else ""),
        ]
        if self.limited:
            lines.append(f"  stopped at --limit {self.rows_written:,}")
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  skipped {n:,}: {reason}")
        if self.anomalies:
            lines.append(f"  anomaly windows: {len(self.anomalies)}")
        if self.bad_count:
            lines.append(f"  bad lines skipped: {self.bad_count:,}")
            lines.extend(f"    {b}" for b in self.bad_lines)
            if self.bad_count > len(self.bad_lines):
                lines.append(f"    ... {self.bad_count - len(self.bad_lines):,} more")
        return "\n".join(lines)


Progress = Callable[[int], None]
"""Called with the rows written so far, every ``PROGRESS_EVERY`` rows and at the end."""
PROGRESS_EVERY: Final = 4096


def write_feed(
    out: str | Path,
    sources: Sequence[Source],
    *,
    log: ImportLog,
    info: SourceInfo,
    limit: int | None = None,
    encoding: Encoding | str = Encoding.MSGPACK,
    progress: Progress | None = None,
) -> ImportReport:
    """Drain ``sources`` into a new feed at ``out`` and report what was read and written.

    Several sources are merged by ``recv_ns`` (a stable merge: each source keeps its own
    order, ties go to the earlier source). Stops after ``limit`` rows when given. On any
    error the half-written file is removed and the error propagates.
    """
    report = ImportReport(
        importer=info.importer,
        sources=list(info.files),
        out=str(out),
        anomalies=list(info.anomalies),
    )
    started = time.perf_counter()
    merged: Iterable[tuple[int, Event]]
    merged = sources[0] if len(sources) == 1 else heapq.merge(*sources, key=_recv_of)
    counts: dict[type[Any], int] = dict.fromkeys(EVENT_TYPES, 0)
    rows = backwards = 0
    first: int | None = None
    prev = lo = hi = 0
    cap = _MAX_NS if limit is None else limit
    try:
        with FeedWriter(out, encoding=encoding, source=info.encode()) as writer:
            write = writer.write
            for recv_ns, event in merged:
                if rows >= cap:
                    report.limited = True
                    break
                write(event, recv_ns)
                counts[type(event)] += 1
                if rows == 0:
                    first = lo = hi = recv_ns
                elif recv_ns < prev:
                    backwards += 1
                    lo = min(lo, recv_ns)
                elif recv_ns > hi:
                    hi = recv_ns
                prev = recv_ns
                rows += 1
                if progress is not None and rows % PROGRESS_EVERY == 0:
                    progress(rows)
    finally:
        for src in sources:
            close = getattr(src, "close", None)
            if close is not None:
                close()
    if progress is not None:
        progress(rows)
    report.elapsed_s = time.perf_counter() - started
    report.rows_written = rows
    report.counts = {_KIND_OF[t]: n for t, n in counts.items() if n}
    if rows:
        report.first_recv_ns, report.last_recv_ns = first, prev
        report.min_recv_ns, report.max_recv_ns = lo, hi
    report.recv_backwards = backwards
    report.lines_read = log.lines
    report.skipped = dict(log.skipped)
    report.bad_count = log.bad_count
    report.bad_lines = list(log.bad_lines)
    return report


def _recv_of(item: tuple[int, Event]) -> int:
    return item[0]


def open_error(path: Path, exc: OSError) -> FeedError:
    """The error for an input file that cannot be opened or read."""
    return FeedError(f"cannot read {path}: {exc.strerror or exc}")
