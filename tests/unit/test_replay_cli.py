"""The ``weir replay`` command group: import, synth, inspect, progress line, exports."""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

import pytest

from replay.cli import ProgressLine, _commands, register
from schemas import FeedError, FeedReader

TICKER = (
    '{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT",'
    '"b":"100.5","B":"1","a":"100.6","A":"2"}}'
)
TRADE = (
    '{"stream":"btcusdt@trade","data":{"t":9,"p":"100.5","q":"0.1","T":1723161255342,"m":false}}'
)


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="weir")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    """A three-line spot capture: quote, malformed line, trade."""
    path = tmp_path / "btcusdt_20240808.gz"
    with gzip.open(path, "wt") as f:
        f.write(f"1000 {TICKER}\n2000 {{oops\n3000 {TRADE}\n")
    return path


def test_group_lists_its_subcommands() -> None:
    """The replay group registers every subcommand through _commands, in help order."""
    assert [name for name, _ in _commands] == [
        "import",
        "synth",
        "inspect",
        "record",
        "run",
        "report",
        "compare",
        "echo",
    ]
    parser = argparse.ArgumentParser(prog="weir")
    register(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["replay"])
    assert exc.value.code == 2


def test_import_fail_is_the_default(capture: Path, tmp_path: Path) -> None:
    """A bad line fails the import with file and line, and no feed is left behind."""
    out = tmp_path / "o.parquet"
    with pytest.raises(FeedError) as err:
        _run("replay", "import", "binance", str(capture), "--out", str(out))
    assert str(err.value) == (
        'btcusdt_20240808.gz:2: expected a combined-stream message {"stream", "data"} '
        'or a depth snapshot {"lastUpdateId", "bids", "asks"}'
    )
    assert not out.exists()


def test_import_skip_prints_summary(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--on-error skip imports the good lines and the summary lists the bad one."""
    out = tmp_path / "o.parquet"
    code = _run(
        "replay", "import", "binance", str(capture), "--out", str(out), "--on-error", "skip"
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "wrote 2 events from 3 lines of 1 file(s)" in text
    assert "kinds: quote 1, trade 1" in text
    assert "bad lines skipped: 1" in text
    assert "    btcusdt_20240808.gz:2: expected " in text
    assert FeedReader(out).num_rows == 2


def test_import_csv_with_map_and_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """csv import takes --map/--kind/--ts-unit and --json prints the report as JSON."""
    src = tmp_path / "plant.csv"
    src.write_text("sensor,time,reading\nboiler,1.5,3\npump,2,4\n")
    out = tmp_path / "o.parquet"
    argv = ["replay", "import", "csv", str(src), "-o", str(out), "--json", "--ts-unit", "s"]
    argv += ["--map", "key=sensor,ts=time,value=reading", "--kind", "sensor"]
    assert _run(*argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_written"] == 2 and report["counts"] == {"sensor": 2}
    assert report["first_recv_ns"] == 1_500_000_000


def test_synth_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """synth writes a feed and inspect summarizes it in text and as JSON."""
    out = tmp_path / "s.parquet"
    argv = ["replay", "synth", "--kind", "sensor", "--events", "900", "--seed", "3"]
    assert _run(*argv, "--out", str(out)) == 0
    assert "wrote 900 events (synthetic)" in capsys.readouterr().out
    assert _run("replay", "inspect", str(out)) == 0
    text = capsys.readouterr().out
    assert "rows: 900" in text and "kinds: sensor 900" in text
    assert "keys (3): synth-00 300, synth-01 300, synth-02 300" in text
    assert "payload msgpack" in text and "anomaly windows: 3" in text
    assert _run("replay", "inspect", str(out), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 900 and summary["recv_backwards"] == 0
    assert summary["source"]["importer"] == "synthetic"


def test_synth_needs_one_size(tmp_path: Path) -> None:
    """--seconds and --events are mutually exclusive and one is required."""
    base = ["replay", "synth", "--kind", "market", "--out", str(tmp_path / "m.parquet")]
    for extra in ([], ["--seconds", "1", "--events", "10"]):
        with pytest.raises(SystemExit) as exc:
            _run(*base, *extra)
        assert exc.value.code == 2


def test_inspect_missing_feed_fails(tmp_path: Path) -> None:
    """inspect of a file that is not a feed raises FeedError (weir prints it, exits 2)."""
    with pytest.raises(FeedError, match="cannot read feed"):
        _run("replay", "inspect", str(tmp_path / "none.parquet"))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_throttles_on_a_tty() -> None:
    """The progress line draws at most once per interval, only on a TTY, and clears."""
    now = [0.0]
    stream = _Tty()
    line = ProgressLine(stream, interval=0.2, clock=lambda: now[0])
    for i in range(10):
        now[0] = i * 0.05
        line(i * 1000)
    assert stream.getvalue().count("\r") == 3  # at 0.0, 0.2, 0.4
    assert stream.getvalue().endswith("\r8,000 events  20,000 events/s")
    line.done()
    assert stream.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    ProgressLine(quiet)(5)
    assert quiet.getvalue() == ""
