"""weir's replay package: importers, synthetic feeds, record, replay, measure, report, demo."""

from replay.comparison import compare
from replay.echo import Echo
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
from replay.inprocess import InProcessTransport
from replay.kafka import KafkaTransport
from replay.pacing import Pacing
from replay.plan import load_plan
from replay.report import render_html, write_html
from replay.results import RunResult, read_result, write_result
from replay.slo import Slo, SloError, evaluate, load_slo
from replay.synthetic import synthesize_market, synthesize_sensor

__all__ = [
    "AnomalyWindow",
    "BadLine",
    "ColumnMap",
    "Echo",
    "ImportLog",
    "ImportReport",
    "InProcessTransport",
    "KafkaTransport",
    "Pacing",
    "ReplayError",
    "RunResult",
    "Slo",
    "SloError",
    "SourceInfo",
    "anomaly_windows",
    "compare",
    "evaluate",
    "import_binance",
    "import_csv",
    "import_nab",
    "import_ndjson",
    "load_plan",
    "load_slo",
    "read_result",
    "read_source_info",
    "render_html",
    "synthesize_market",
    "synthesize_sensor",
    "write_html",
    "write_result",
]
