"""Feed importers: Binance captures, NAB CSV, generic CSV/NDJSON, bad-line policy, report."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from replay.importers import (
    AnomalyWindow,
    ColumnMap,
    ImportLog,
    anomaly_windows,
    import_binance,
    import_csv,
    import_nab,
    import_ndjson,
    iter_binance,
    iter_csv,
    iter_nab,
    iter_ndjson,
    read_source_info,
)
from replay.importers.base import iso_to_ns
from replay.importers.binance import symbol_from_filename
from schemas import (
    BookDiff,
    BookSnapshot,
    FeedError,
    FeedReader,
    Quote,
    SensorReading,
    Trade,
)

MS = 1_000_000

SPOT_TICKER = (
    '1000 {"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT",'
    '"b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}'
)
SPOT_DEPTH = (
    '2000 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,'
    '"s":"BTCUSDT","U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"]],'
    '"a":[["61837.64000000","1.54698000"],["61839.85000000","0.00000000"]]}}'
)
SPOT_TRADE = (
    '3000 {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
    '"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}'
)
SPOT_SNAPSHOT = (
    '4000 {"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],'
    '"asks":[["61837.64000000","1.54698000"],["61838.00000000","0.5"]]}'
)
FUT_TICKER = (
    '5000 {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,'
    '"s":"BTCUSDT","b":"61800.20","B":"2.507","a":"61800.30","A":"2.510",'
    '"T":1723161256313,"E":1723161256314}}'
)
FUT_DEPTH = (
    '6000 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256299,'
    '"T":1723161256298,"s":"BTCUSDT","U":5123107832006,"u":5123107837557,'
    '"pu":5123107831937,"b":[["58710.20","0.014"]],"a":[]}}'
)
FUT_SNAPSHOT = (
    '7000 {"lastUpdateId":5123107832000,"E":1723161255000,"T":1723161254999,'
    '"bids":[["61800.20","1.0"]],"asks":[["61800.30","2.0"]]}'
)


def _gz(path: Path, lines: list[str], *, newline_at_end: bool = True) -> Path:
    text = "\n".join(lines) + ("\n" if newline_at_end else "")
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


@pytest.fixture
def capture(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write lines as a gzip capture named like the collector's files."""

    def make(*lines: str, name: str = "btcusdt_20240808.gz") -> Path:
        return _gz(tmp_path / name, list(lines))

    return make


def _events(path: Path, **kw: object) -> list[tuple[int, object]]:
    return list(iter_binance(path, log=ImportLog(), **kw))  # type: ignore[arg-type]


def test_binance_spot_lines_map_to_events(capture: Callable[..., Path]) -> None:
    """Spot bookTicker, depth, trade and the REST snapshot become the matching events."""
    path = capture(SPOT_TICKER, SPOT_DEPTH, SPOT_TRADE, SPOT_SNAPSHOT)
    assert _events(path) == [
        (
            1000,
            Quote(
                symbol="BTCUSDT",
                bid_px=61837.63,
                bid_qty=3.78826,
                ask_px=61837.64,
                ask_qty=1.54698,
                update_id=50093239212,
                source_ts_ns=None,
            ),
        ),
        (
            2000,
            BookDiff(
                symbol="BTCUSDT",
                first_update_id=50093239189,
                last_update_id=50093239202,
                bids=[(61737.63, 0.0)],
                asks=[(61837.64, 1.54698), (61839.85, 0.0)],
                source_ts_ns=1723161255208 * MS,
            ),
        ),
        (
            3000,
            Trade(
                symbol="BTCUSDT",
                trade_id=3735683259,
                price=61837.63,
                qty=0.02,
                buyer_is_maker=True,
                source_ts_ns=1723161255342 * MS,
            ),
        ),
        (
            4000,
            BookSnapshot(
                symbol="BTCUSDT",
                last_update_id=50093239218,
                bids=[(61837.63, 3.78826)],
                asks=[(61837.64, 1.54698), (61838.0, 0.5)],
                source_ts_ns=None,
            ),
        ),
    ]


def test_binance_futures_take_exchange_time_from_e(capture: Callable[..., Path]) -> None:
    """Futures bookTicker, depth and snapshot take source time from E (ms), not T."""
    path = capture(FUT_TICKER, FUT_DEPTH, FUT_SNAPSHOT, name="btcusdt_usdm_20240808.gz")
    (_, quote), (_, diff), (_, snap) = _events(path)
    assert isinstance(quote, Quote) and quote.source_ts_ns == 1723161256314 * MS
    assert quote.bid_px == 61800.2 and quote.ask_qty == 2.51
    assert isinstance(diff, BookDiff) and diff.source_ts_ns == 1723161256299 * MS
    assert diff.asks == []
    assert isinstance(snap, BookSnapshot) and snap.source_ts_ns == 1723161255000 * MS
    assert snap.symbol == "BTCUSDT" and snap.last_update_id == 5123107832000


def test_binance_snapshot_symbol_from_name_or_option(capture: Callable[..., Path]) -> None:
    """The snapshot symbol comes from the file name unless one is passed."""
    assert symbol_from_filename("ethusdt_20240808.gz") == "ETHUSDT"
    assert symbol_from_filename("btcusdt_usdm_20240808.gz") == "BTCUSDT"
    assert symbol_from_filename("solusdt.gz") == "SOLUSDT"
    path = capture(SPOT_SNAPSHOT, name="ethusdt_x.gz")
    [(_, snap)] = _events(path)
    assert isinstance(snap, BookSnapshot) and snap.symbol == "ETHUSDT"
    [(_, snap)] = _events(path, symbol="XYZ")
    assert isinstance(snap, BookSnapshot) and snap.symbol == "XYZ"


@pytest.mark.parametrize(
    "text",
    ["0.00000001", "61837.63000000", "99999999.99999999", "1234.5678", "0.1", "3e-8"],
)
def test_binance_decimal_strings_parse_like_float(capture: Callable[..., Path], text: str) -> None:
    """A price string decodes to exactly float(text), the nearest double."""
    line = SPOT_TICKER.replace('"b":"61837.63000000"', f'"b":"{text}"')
    [(_, quote)] = _events(capture(line))
    assert isinstance(quote, Quote) and quote.bid_px == float(text)


BAD_BINANCE = [
    ("garbage", "expected '<receive ns> <json>', got 'garbage'"),
    ('abc {"stream":"x"}', "expected receive time in ns, got 'abc'"),
    ("-5 " + SPOT_TICKER.split(" ", 1)[1], "receive time -5 is outside 0..2**63-1 ns"),
    (
        SPOT_TICKER.replace('"b":"61837.63000000"', '"b":"0"'),
        "btcusdt@bookTicker: Expected `float` > 0.0 - at `$.data.b`",
    ),
    (
        SPOT_TICKER.replace('"B":"3.78826000"', '"B":"x"'),
        "btcusdt@bookTicker: Expected `float`, got `str` - at `$.data.B`",
    ),
    (
        SPOT_TICKER.replace('"B":"3.78826000"', '"B":"-1"'),
        "btcusdt@bookTicker: Expected `float` >= 0.0 - at `$.data.B`",
    ),
    (
        SPOT_TRADE.replace(',"T":1723161255342', ""),
        "btcusdt@trade: Object missing required field `T` - at `$.data`",
    ),
    (
        SPOT_DEPTH.replace('[["61737.63000000","0.00000000"]]', '[["61737.63000000"]]'),
        "btcusdt@depth@100ms: Expected `array` of length 2 - at `$.data.b[0]`",
    ),
    (SPOT_TRADE[:60], "btcusdt@trade: Input data was truncated"),
    (
        '9 {"foo":1}',
        'expected a combined-stream message {"stream", "data"} or a depth snapshot '
        '{"lastUpdateId", "bids", "asks"}',
    ),
    (
        SPOT_SNAPSHOT.replace("50093239218", '"x"'),
        "depth snapshot: Expected `int`, got `str` - at `$.lastUpdateId`",
    ),
    (
        '9 {"data":{}, "stream": 5}',
        "combined-stream message: Expected `str | null`, got `int` - at `$.stream`",
    ),
]


@pytest.mark.parametrize(("line", "reason"), BAD_BINANCE)
def test_binance_bad_line_fails_with_file_and_line(
    capture: Callable[..., Path], tmp_path: Path, line: str, reason: str
) -> None:
    """Under the default policy a bad line fails the import naming file, line and reason."""
    src = capture(SPOT_TICKER, line, SPOT_TRADE)
    out = tmp_path / "out.parquet"
    with pytest.raises(FeedError) as err:
        import_binance([src], out)
    assert str(err.value) == f"btcusdt_20240808.gz:2: {reason}"
    assert not out.exists()
    assert list(tmp_path.glob("*.tmp")) == []


def test_binance_skip_policy_counts_and_lists(capture: Callable[..., Path], tmp_path: Path) -> None:
    """Under skip, bad lines are counted, the first ones listed, good lines still imported."""
    bad = [line for line, _ in BAD_BINANCE]
    src = capture(SPOT_TICKER, *bad, SPOT_TRADE)
    report = import_binance([src], tmp_path / "o.parquet", on_error="skip", max_listed=3)
    assert report.rows_written == 2
    assert report.counts == {"quote": 1, "trade": 1}
    assert report.bad_count == len(bad)
    assert [str(b) for b in report.bad_lines] == [
        f"btcusdt_20240808.gz:{i + 2}: {reason}" for i, (_, reason) in enumerate(BAD_BINANCE[:3])
    ]
    assert f"bad lines skipped: {len(bad)}" in report.summary()
    assert f"... {len(bad) - 3} more" in report.summary()
    assert FeedReader(tmp_path / "o.parquet").num_rows == 2


def test_binance_unknown_streams_and_blank_lines_are_counted(
    capture: Callable[..., Path], tmp_path: Path
) -> None:
    """Streams weir does not import and blank lines are skipped and counted, not failed."""
    kline = '10 {"stream":"btcusdt@kline_1m","data":{"k":{}}}'
    src = capture(SPOT_TICKER, kline, "", kline, SPOT_TRADE)
    report = import_binance([src], tmp_path / "o.parquet")
    assert report.rows_written == 2 and report.lines_read == 5
    assert report.skipped == {"stream btcusdt@kline_1m": 2, "blank line": 1}
    assert "skipped 2: stream btcusdt@kline_1m" in report.summary()


def test_binance_plain_text_and_whitespace_json(tmp_path: Path) -> None:
    """An uncompressed capture and a stream message with spaces in the JSON both import."""
    path = tmp_path / "btcusdt.txt"
    spaced = SPOT_TRADE.replace('{"stream":"btcusdt@trade",', '{ "stream": "btcusdt@trade", ')
    path.write_text(SPOT_TICKER + "\n" + spaced + "\n")
    events = _events(path)
    assert [type(e) for _, e in events] == [Quote, Trade]


def test_binance_truncated_gzip_is_a_bad_line(tmp_path: Path) -> None:
    """A capture cut off mid-stream fails at the line after the last whole one."""
    src = _gz(tmp_path / "btcusdt.gz", [SPOT_TICKER] * 2000)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) - 12])
    with pytest.raises(FeedError, match=r"^btcusdt\.gz:\d+: truncated or corrupt gzip data: "):
        import_binance([src], tmp_path / "o.parquet")
    report = import_binance([src], tmp_path / "o.parquet", on_error="skip")
    assert report.bad_count == 1 and report.rows_written == report.lines_read


def test_binance_missing_file_fails(tmp_path: Path) -> None:
    """A missing input names the path and the OS reason."""
    with pytest.raises(FeedError) as err:
        import_binance([tmp_path / "nope.gz"], tmp_path / "o.parquet")
    assert str(err.value) == f"cannot read {tmp_path / 'nope.gz'}: No such file or directory"


def test_binance_files_merge_by_receive_time(tmp_path: Path) -> None:
    """Several captures interleave by receive time, each keeping its own order."""
    a = _gz(
        tmp_path / "btcusdt_a.gz", [SPOT_TICKER.replace("1000 ", f"{t} ", 1) for t in (1, 5, 9)]
    )
    eth = SPOT_TRADE.replace("btcusdt@trade", "ethusdt@trade")
    b = _gz(tmp_path / "ethusdt_b.gz", [eth.replace("3000 ", f"{t} ", 1) for t in (2, 5, 7)])
    report = import_binance([a, b], tmp_path / "o.parquet")
    records = list(FeedReader(tmp_path / "o.parquet").records())
    assert [r.recv_ns for r in records] == [1, 2, 5, 5, 7, 9]
    keys = [r.event.key[0] for r in records]
    assert keys == ["B", "E", "B", "E", "E", "B"]
    assert report.sources == ["btcusdt_a.gz", "ethusdt_b.gz"]
    assert report.span_ns == 8 and report.first_recv_ns == 1 and report.last_recv_ns == 9


def test_binance_limit_stops_early(capture: Callable[..., Path], tmp_path: Path) -> None:
    """--limit writes the first N events and says it stopped."""
    src = capture(SPOT_TICKER, SPOT_DEPTH, SPOT_TRADE, SPOT_SNAPSHOT)
    report = import_binance([src], tmp_path / "o.parquet", limit=2)
    assert report.rows_written == 2 and report.limited
    assert "stopped at --limit 2" in report.summary()
    assert not import_binance([src], tmp_path / "p.parquet", limit=4).limited


def test_import_report_feed_source_info(capture: Callable[..., Path], tmp_path: Path) -> None:
    """The feed's weir.source holds the importer and file names as JSON."""
    src = capture(SPOT_TICKER)
    import_binance([src], tmp_path / "o.parquet", symbol="BTCUSDT")
    info = read_source_info(tmp_path / "o.parquet")
    assert info is not None and info.importer == "binance"
    assert info.files == ["btcusdt_20240808.gz"] and info.params == {"symbol": "BTCUSDT"}
    assert anomaly_windows(tmp_path / "o.parquet") == {}


def test_import_log_rejects_unknown_policy() -> None:
    """An unknown on_error value is refused up front."""
    with pytest.raises(FeedError) as err:
        ImportLog("ignore")  # type: ignore[arg-type]
    assert str(err.value) == "unknown on_error 'ignore'; expected one of fail, skip"


def test_iso_to_ns_keeps_nanoseconds_and_offsets() -> None:
    """ISO times keep 9 decimals; naive is UTC; offsets are applied."""
    assert iso_to_ns("1970-01-01 00:00:01") == 1_000_000_000
    assert iso_to_ns("1970-01-01T00:00:01.123456789") == 1_123_456_789
    assert iso_to_ns("1970-01-01T01:00:00+01:00") == 0
    assert iso_to_ns("2013-12-10 06:25:00.000000") == 1386656700 * 10**9
    with pytest.raises(ValueError):
        iso_to_ns("1969-12-31 23:59:59")


# --- NAB ------------------------------------------------------------------------------


@pytest.fixture
def nab_tree(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a NAB-layout tree with one CSV and, optionally, its labels."""

    def make(rows: list[str], windows: list[list[str]] | None = None, name: str = "m.csv") -> Path:
        data = tmp_path / "nab" / "data" / "realKnownCause"
        data.mkdir(parents=True, exist_ok=True)
        csv_path = data / name
        csv_path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
        if windows is not None:
            labels = tmp_path / "nab" / "labels"
            labels.mkdir(exist_ok=True)
            table = {f"realKnownCause/{name}": windows, "other/x.csv": []}
            (labels / "combined_windows.json").write_text(json.dumps(table))
        return csv_path

    return make


def test_nab_rows_become_readings_in_file_order(nab_tree: Callable[..., Path]) -> None:
    """Rows become readings stamped as UTC, recv = source time, file order kept as is."""
    path = nab_tree(
        [
            "2013-12-02 21:15:00,73.96732207",
            "2013-12-02 21:20:00,74.5",
            "2013-12-02 21:20:00,74.6",
            "2013-12-02 21:10:00,-1",
        ]
    )
    got = list(iter_nab(path, log=ImportLog()))
    t0 = 1386018900 * 10**9
    assert got == [
        (t0, SensorReading(sensor_id="m", value=73.96732207, source_ts_ns=t0)),
        (t0 + 300 * 10**9, SensorReading(sensor_id="m", value=74.5, source_ts_ns=t0 + 300 * 10**9)),
        (t0 + 300 * 10**9, SensorReading(sensor_id="m", value=74.6, source_ts_ns=t0 + 300 * 10**9)),
        (t0 - 300 * 10**9, SensorReading(sensor_id="m", value=-1.0, source_ts_ns=t0 - 300 * 10**9)),
    ]


def test_nab_windows_go_into_feed_and_report(nab_tree: Callable[..., Path], tmp_path: Path) -> None:
    """Labelled windows land in the report and the feed's source info, inclusive ns ranges."""
    path = nab_tree(
        ["2013-12-02 21:15:00,1", "2013-12-02 21:10:00,2"],
        windows=[["2013-12-10 06:25:00.000000", "2013-12-12 05:35:00.000000"]],
    )
    out = tmp_path / "nab.parquet"
    report = import_nab([path], out)
    window = AnomalyWindow(
        key="m", start_ns=1386656700 * 10**9, end_ns=1386826500 * 10**9, label="nab"
    )
    assert report.anomalies == [window]
    assert report.recv_backwards == 1 and report.rows_written == 2
    assert anomaly_windows(out) == {"m": [(window.start_ns, window.end_ns)]}
    info = read_source_info(out)
    assert info is not None and info.params == {"labels": "combined_windows.json"}


def test_nab_without_labels_has_no_windows(nab_tree: Callable[..., Path], tmp_path: Path) -> None:
    """No labels file in NAB's layout: no windows, and the source info says so."""
    path = nab_tree(["2013-12-02 21:15:00,1"])
    report = import_nab([path], tmp_path / "o.parquet")
    assert report.anomalies == []
    info = read_source_info(tmp_path / "o.parquet")
    assert info is not None and info.params == {"labels": None}
    with pytest.raises(FeedError) as err:
        import_nab([path], tmp_path / "o.parquet", labels=tmp_path / "missing.json")
    assert str(err.value) == f"cannot read {tmp_path / 'missing.json'}: no such labels file"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2013-12-02 21:15:00,1,2", "expected 2 fields (timestamp,value), got 3"),
        ("yesterday,1", "expected YYYY-MM-DD HH:MM:SS, got 'yesterday'"),
        ("2013-12-02 21:15:00,abc", "expected a float value, got 'abc'"),
        ("2013-12-02 21:15:00,nan", "value 'nan' is outside [-1e12, 1e12]"),
        ("2013-12-02 21:15:00,2e12", "value '2e12' is outside [-1e12, 1e12]"),
        ("1969-12-31 23:00:00,1", "expected YYYY-MM-DD HH:MM:SS, got '1969-12-31 23:00:00'"),
    ],
)
def test_nab_bad_rows(nab_tree: Callable[..., Path], tmp_path: Path, row: str, reason: str) -> None:
    """A bad NAB row fails with file, line and reason; skip keeps the good rows."""
    path = nab_tree(["2013-12-02 21:10:00,1", row, "2013-12-02 21:20:00,3"])
    with pytest.raises(FeedError) as err:
        import_nab([path], tmp_path / "o.parquet")
    assert str(err.value) == f"m.csv:3: {reason}"
    report = import_nab([path], tmp_path / "o.parquet", on_error="skip")
    assert report.rows_written == 2 and report.bad_count == 1


def test_nab_wrong_header_fails(tmp_path: Path) -> None:
    """A CSV that is not timestamp,value is refused whatever the policy."""
    path = tmp_path / "x.csv"
    path.write_text("time,reading\n2013-12-02 21:10:00,1\n")
    with pytest.raises(FeedError) as err:
        import_nab([path], tmp_path / "o.parquet", on_error="skip")
    assert str(err.value) == "x.csv:1: expected header 'timestamp,value', got ['time', 'reading']"


# --- generic CSV / NDJSON --------------------------------------------------------------


def test_csv_sensor_with_decimal_seconds(tmp_path: Path) -> None:
    """A mapped CSV imports with decimal seconds kept exact to the nanosecond."""
    path = tmp_path / "plant.csv"
    path.write_text(
        "sensor,time,reading,extra\nboiler,1700000000.123456789,81.5,x\npump,1700000001,2,y\n"
    )
    cmap = ColumnMap.parse("key=sensor,ts=time,value=reading", kind="sensor", ts_unit="s")
    got = list(iter_csv(path, cmap, log=ImportLog()))
    ts = 1_700_000_000_123_456_789
    assert got == [
        (ts, SensorReading(sensor_id="boiler", value=81.5, source_ts_ns=ts)),
        (
            1_700_000_001 * 10**9,
            SensorReading(sensor_id="pump", value=2.0, source_ts_ns=1_700_000_001 * 10**9),
        ),
    ]


def test_csv_quotes_with_iso_time_and_receive_column(tmp_path: Path) -> None:
    """Quote rows take same-name columns, an ISO event time and a separate receive time."""
    path = tmp_path / "q.csv"
    path.write_text(
        "sym,time,arrived,bid_px,bid_qty,ask_px,ask_qty,update_id\n"
        "AAA,2024-01-01T00:00:00.5Z,2024-01-01T00:00:00.6Z,10.5,1,10.6,2,\n"
    )
    cmap = ColumnMap.parse("key=sym,ts=time,recv=arrived", kind="quote", ts_unit="iso")
    [(recv, quote)] = list(iter_csv(path, cmap, log=ImportLog()))
    assert recv == 1_704_067_200_600_000_000
    assert quote == Quote(
        symbol="AAA",
        bid_px=10.5,
        bid_qty=1.0,
        ask_px=10.6,
        ask_qty=2.0,
        source_ts_ns=1_704_067_200_500_000_000,
    )


def test_ndjson_mixed_kinds_from_a_kind_column(tmp_path: Path) -> None:
    """NDJSON rows pick their kind from a column; book levels come through as lists."""
    path = tmp_path / "ev.ndjson"
    rows = [
        {
            "type": "trade",
            "s": "AAA",
            "t": 1000,
            "trade_id": 7,
            "price": "1.5",
            "qty": 2,
            "buyer_is_maker": "true",
        },
        {
            "type": "book_diff",
            "s": "AAA",
            "t": 1001,
            "first_update_id": 1,
            "last_update_id": 2,
            "bids": [["1.4", "0"]],
            "asks": [],
        },
        {"type": "sensor", "s": 17, "t": 1002.5, "value": -3},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    cmap = ColumnMap.parse("key=s,ts=t,kind=type", ts_unit="ms")
    log = ImportLog()
    got = list(iter_ndjson(path, cmap, log=log))
    assert got == [
        (
            10**9,
            Trade(
                symbol="AAA",
                trade_id=7,
                price=1.5,
                qty=2.0,
                buyer_is_maker=True,
                source_ts_ns=10**9,
            ),
        ),
        (
            1_001_000_000,
            BookDiff(
                symbol="AAA",
                first_update_id=1,
                last_update_id=2,
                bids=[(1.4, 0.0)],
                asks=[],
                source_ts_ns=1_001_000_000,
            ),
        ),
        (1_002_500_000, SensorReading(sensor_id="17", value=-3.0, source_ts_ns=1_002_500_000)),
    ]
    assert log.skipped == {"blank line": 1}


@pytest.mark.parametrize(
    ("spec", "kind", "unit", "message"),
    [
        ("ts=t,value=v", "sensor", "s", "column map needs key=<column>"),
        ("key=k,value=v", "sensor", "s", "column map needs ts=<column> or recv=<column>"),
        ("key=k,ts=t", None, "s", "column map needs a kind: pass kind=... or map kind=<column>"),
        (
            "key=k,ts=t",
            "candle",
            "s",
            "unknown kind 'candle'; expected one of book_diff, book_snapshot, quote, sensor, trade",
        ),
        ("key=k,ts=t", "sensor", "h", "unknown ts unit 'h'; expected one of s, ms, us, ns, iso"),
        (
            "key=k,ts=t,price=p",
            "sensor",
            "s",
            "unknown target 'price' in column map; expected "
            "key, ts, recv, kind or a field of sensor: unit, value",
        ),
        ("key=k,ts", "sensor", "s", "bad column map entry 'ts': expected target=column"),
        ("key=k,key=j,ts=t", "sensor", "s", "column map names target 'key' twice"),
    ],
)
def test_column_map_errors(spec: str, kind: str | None, unit: str, message: str) -> None:
    """A column map that cannot work is refused with a message saying why."""
    with pytest.raises(FeedError) as err:
        ColumnMap.parse(spec, kind=kind, ts_unit=unit)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("a,1,abc", "Expected `float`, got `str` - at `$.value` (column 'v')"),
        ("a,1,", "Object missing required field `value` (column 'v')"),
        ("a,x,1", "expected seconds since the epoch in column 't', got 'x'"),
        ("a,-1,1", "time '-1' in column 't' is outside 1970..2262"),
        (",1,1", "missing key column 'k'"),
        ("a,1", "expected 3 fields, got 2"),
        ("a,1,1e13", "Expected `float` <= 1000000000000.0 - at `$.value` (column 'v')"),
    ],
)
def test_csv_bad_rows(tmp_path: Path, row: str, reason: str) -> None:
    """A bad CSV row fails with file, line and reason (naming the input column)."""
    path = tmp_path / "s.csv"
    path.write_text(f"k,t,v\na,1,1\n{row}\n")
    cmap = ColumnMap.parse("key=k,ts=t,value=v", kind="sensor", ts_unit="s")
    with pytest.raises(FeedError) as err:
        import_csv([path], tmp_path / "o.parquet", cmap)
    assert str(err.value) == f"s.csv:3: {reason}"


def test_csv_header_must_hold_mapped_columns(tmp_path: Path) -> None:
    """A mapped column missing from the header fails before any row."""
    path = tmp_path / "s.csv"
    path.write_text("k,t\na,1\n")
    cmap = ColumnMap.parse("key=k,ts=t,value=v", kind="sensor")
    with pytest.raises(FeedError) as err:
        import_csv([path], tmp_path / "o.parquet", cmap)
    assert str(err.value) == "s.csv:1: mapped column(s) 'v' not in the header k,t"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "JSON: Expected `object`, got `array`"),
        ('{"k": "a",', "JSON: Input data was truncated"),
        (
            '{"k": "a", "t": 1, "v": 1, "type": "candle"}',
            "unknown kind 'candle' in column "
            "'type'; expected one of book_diff, book_snapshot, quote, sensor, trade",
        ),
        (
            '{"k": "a", "t": true, "v": 1, "type": "sensor"}',
            "expected nanoseconds since the epoch in column 't', got True",
        ),
    ],
)
def test_ndjson_bad_lines(tmp_path: Path, line: str, reason: str) -> None:
    """A bad NDJSON line fails with file, line and reason; skip imports the rest."""
    path = tmp_path / "e.ndjson"
    good = '{"k": "a", "t": 1, "v": 1, "type": "sensor"}'
    path.write_text(f"{good}\n{line}\n{good}\n")
    cmap = ColumnMap.parse("key=k,ts=t,value=v,kind=type")
    with pytest.raises(FeedError) as err:
        import_ndjson([path], tmp_path / "o.parquet", cmap)
    assert str(err.value) == f"e.ndjson:2: {reason}"
    report = import_ndjson([path], tmp_path / "o.parquet", cmap, on_error="skip")
    assert report.rows_written == 2 and report.bad_count == 1
    assert report.counts == {"sensor": 2}
