"""The feed file: write, stream back, refuse what is not a feed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import FeedError, FeedReader, FeedWriter, Quote, SensorReading, Trade


def _quote(i: int) -> Quote:
    return Quote(
        symbol="BTCUSDT",
        bid_px=100.0 + i,
        bid_qty=1.0,
        ask_px=100.5 + i,
        ask_qty=2.0,
        update_id=i,
        source_ts_ns=1_000 + i,
    )


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_round_trip_in_order(tmp_path: Path, encoding: str) -> None:
    """Events come back equal, in order, with their times and coordinates, across row groups."""
    path = tmp_path / "f.parquet"
    with FeedWriter(path, encoding=encoding, source="unit", batch_rows=7) as w:
        for i in range(20):
            w.write(_quote(i), recv_ns=10_000 + i, topic="q", partition=i % 3, offset=i)
        w.write(SensorReading(sensor_id="s1", value=2.5), recv_ns=20_000)
    reader = FeedReader(path)
    assert reader.num_rows == 21
    assert reader.encoding == encoding
    assert reader.source == "unit"
    records = list(reader.records(batch_rows=5))
    assert [r.event for r in records[:20]] == [_quote(i) for i in range(20)]
    assert [r.recv_ns for r in records] == [10_000 + i for i in range(20)] + [20_000]
    assert records[3].partition == 0 and records[3].offset == 3 and records[3].topic == "q"
    assert records[3].source_ts_ns == 1_003
    assert records[20].topic is None and records[20].source_ts_ns is None


def test_columns_readable_without_decoding(tmp_path: Path) -> None:
    """Key and kind columns are plain Arrow columns a reader can scan without payloads."""
    path = tmp_path / "f.parquet"
    with FeedWriter(path) as w:
        w.write(_quote(1), recv_ns=1)
        w.write(
            Trade(symbol="ETHUSDT", trade_id=1, price=2.0, qty=1.0, buyer_is_maker=False), recv_ns=2
        )
    batch = next(FeedReader(path).batches(columns=["key", "kind"]))
    assert batch.column("key").to_pylist() == ["BTCUSDT", "ETHUSDT"]
    assert batch.column("kind").to_pylist() == ["quote", "trade"]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    """An exception inside the writer's block leaves neither the feed nor its temp file."""
    path = tmp_path / "f.parquet"
    with pytest.raises(RuntimeError), FeedWriter(path) as w:
        w.write(_quote(1), recv_ns=1)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_not_a_feed_refused(tmp_path: Path) -> None:
    """A Parquet file without the feed version is refused with the file named."""
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1]}), path)
    with pytest.raises(FeedError) as info:
        FeedReader(path)
    assert str(info.value) == (
        f"cannot read feed {path}: weir.feed_version is 'missing', expected '1'"
    )


def test_missing_file_refused(tmp_path: Path) -> None:
    """A path that does not exist is named in the error."""
    with pytest.raises(FeedError, match=r"cannot read feed .*nope\.parquet"):
        FeedReader(tmp_path / "nope.parquet")
