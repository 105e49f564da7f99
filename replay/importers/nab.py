"""Numenta Anomaly Benchmark series (``timestamp,value`` CSV) to ``SensorReading`` events.

Each row becomes ``SensorReading(sensor_id=<file stem>, value, source_ts_ns)``. The naive
``YYYY-MM-DD HH:MM:SS`` timestamp is taken as UTC. NAB has no receive time, so
``recv_ns = source_ts_ns``. Rows stay in file order: NAB's own quirks (a 3,300 s step
backwards in machine_temperature, duplicate stamps in ec2_request_latency) are kept, not
sorted or dropped; the report counts backward steps.

Labels: ``labels/combined_windows.json`` maps ``<dir>/<file>.csv`` to anomaly windows
``[[start, end], ...]``. By default it is looked up at ``<csv>/../../../labels/``
(NAB's layout). The windows go into the feed's ``weir.source`` metadata as
``AnomalyWindow(key=<sensor id>, start_ns, end_ns, label="nab")`` (inclusive ends, on
the ``source_ts_ns`` clock) and into the report; read them back with
``replay.anomaly_windows(feed)``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec

from replay.importers.base import (
    AnomalyWindow,
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
from schemas.events import MAX_KEY_LEN, SensorReading

_HEADER: Final = ["timestamp", "value"]
_LO: Final = -1e12
_HI: Final = 1e12
LABELS_NAME: Final = "combined_windows.json"

_windows_decoder = msgspec.json.Decoder(dict[str, list[tuple[str, str]]])


def default_labels_path(csv_path: str | Path) -> Path:
    """Where NAB keeps the windows for ``csv_path``: ``<csv>/../../../labels/...json``."""
    return Path(csv_path).resolve().parent.parent.parent / "labels" / LABELS_NAME


def nab_windows(csv_path: str | Path, labels_path: str | Path) -> list[AnomalyWindow]:
    """The labelled anomaly windows of one NAB file (empty when the file has none).

    Raises ``FeedError`` when the labels file cannot be read or parsed.
    """
    csv_path, labels_path = Path(csv_path), Path(labels_path)
    try:
        table = _windows_decoder.decode(labels_path.read_bytes())
    except OSError as exc:
        raise open_error(labels_path, exc) from exc
    except msgspec.DecodeError as exc:
        raise FeedError(f"{labels_path.name}: {exc}") from exc
    key = f"{csv_path.parent.name}/{csv_path.name}"
    out = []
    for start, end in table.get(key, []):
        try:
            out.append(
                AnomalyWindow(
                    key=csv_path.stem, start_ns=iso_to_ns(start), end_ns=iso_to_ns(end), label="nab"
                )
            )
        except ValueError as exc:
            raise FeedError(
                f"{labels_path.name}: {key}: bad window [{start!r}, {end!r}]: {exc}"
            ) from exc
    return out


def iter_nab(path: str | Path, *, log: ImportLog) -> Iterator[tuple[int, SensorReading]]:
    """Yield ``(recv_ns, reading)`` per row of one NAB CSV, in file order.

    A file whose header is not ``timestamp,value`` raises ``FeedError``; bad rows go to
    ``log.bad`` as ``<file name>:<line>: <reason>``; blank lines are counted as skipped.
    """
    path = Path(path)
    name, sensor = path.name, path.stem
    if not 0 < len(sensor) <= MAX_KEY_LEN:
        raise FeedError(f"{name}: file stem is not a usable sensor id (1..{MAX_KEY_LEN} chars)")
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise open_error(path, exc) from exc
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != _HEADER:
            raise FeedError(f"{name}:1: expected header 'timestamp,value', got {header!r}")
        log.lines += 1
        bad = log.bad
        for row in reader:
            log.lines += 1
            if not row:
                log.skip("blank line")
                continue
            if len(row) != 2:
                bad(name, reader.line_num, f"expected 2 fields (timestamp,value), got {len(row)}")
                continue
            ts_text, value_text = row
            try:
                ts = iso_to_ns(ts_text)
            except ValueError:
                bad(name, reader.line_num, f"expected YYYY-MM-DD HH:MM:SS, got {ts_text!r}")
                continue
            try:
                value = float(value_text)
            except ValueError:
                bad(name, reader.line_num, f"expected a float value, got {value_text!r}")
                continue
            if not _LO <= value <= _HI:
                bad(name, reader.line_num, f"value {value_text!r} is outside [-1e12, 1e12]")
                continue
            yield ts, SensorReading(sensor_id=sensor, value=value, source_ts_ns=ts)


def import_nab(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    labels: str | Path | None = None,
    on_error: OnError = "fail",
    limit: int | None = None,
    encoding: Encoding | str = Encoding.MSGPACK,
    max_listed: int = 20,
    progress: Progress | None = None,
) -> ImportReport:
    """Import NAB CSV files into one feed at ``out``, with their labelled anomaly windows.

    ``labels`` names ``combined_windows.json``; by default it is looked up in NAB's layout
    beside each file, and a file without one gets no windows (``params["labels"]`` in the
    feed's source info says which labels file was used, or ``None``).
    """
    if not sources:
        raise FeedError("no input files")
    paths = [Path(s) for s in sources]
    if labels is not None and not Path(labels).is_file():
        raise FeedError(f"cannot read {labels}: no such labels file")
    windows: list[AnomalyWindow] = []
    used: list[str | None] = []
    for p in paths:
        lp = Path(labels) if labels is not None else default_labels_path(p)
        if lp.is_file():
            windows.extend(nab_windows(p, lp))
            used.append(lp.name)
        else:
            used.append(None)
    log = ImportLog(on_error, max_listed=max_listed)
    info = SourceInfo(
        importer="nab",
        files=[p.name for p in paths],
        params={"labels": used[0] if len(set(used)) == 1 else used},
        anomalies=windows,
    )
    return write_feed(
        out,
        [iter_nab(p, log=log) for p in paths],
        log=log,
        info=info,
        limit=limit,
        encoding=encoding,
        progress=progress,
    )
