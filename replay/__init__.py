"""weir's replay package: feed importers, the synthetic generator, the ``weir replay`` CLI."""

from replay.errors import ReplayError
from replay.importers import (
    AnomalyWindow,
    BadLine,
    ColumnMap,
    ImportLog,
    ImportReport,
    SourceInfo,
    anomaly_windows,
    import_binance,
    import_csv,
    import_nab,
    import_ndjson,
    read_source_info,
)
from replay.synthetic import synthesize_market, synthesize_sensor

__all__ = [
    "AnomalyWindow",
    "BadLine",
    "ColumnMap",
    "ImportLog",
    "ImportReport",
    "ReplayError",
    "SourceInfo",
    "anomaly_windows",
    "import_binance",
    "import_csv",
    "import_nab",
    "import_ndjson",
    "read_source_info",
    "synthesize_market",
    "synthesize_sensor",
]
