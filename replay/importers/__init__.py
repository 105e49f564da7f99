"""Importers: public feed formats (Binance captures, NAB, mapped CSV/NDJSON) to feed files."""

from replay.importers.base import (
    AnomalyWindow,
    BadLine,
    ImportLog,
    ImportReport,
    OnError,
    SourceInfo,
    anomaly_windows,
    read_source_info,
    write_feed,
)
from replay.importers.binance import import_binance, iter_binance
from replay.importers.generic import ColumnMap, import_csv, import_ndjson, iter_csv, iter_ndjson
from replay.importers.nab import import_nab, iter_nab, nab_windows

__all__ = [
    "AnomalyWindow",
    "BadLine",
    "ColumnMap",
    "ImportLog",
    "ImportReport",
    "OnError",
    "SourceInfo",
    "anomaly_windows",
    "import_binance",
    "import_csv",
    "import_nab",
    "import_ndjson",
    "iter_binance",
    "iter_csv",
    "iter_nab",
    "iter_ndjson",
    "nab_windows",
    "read_source_info",
    "write_feed",
]
