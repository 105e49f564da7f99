"""The feed file: one columnar format for recorded and imported event streams.

A feed is a Parquet file, one row per event, in arrival order:

=============== ========= ===================================================
column          type      meaning
=============== ========= ===================================================
``recv_ns``     int64     local receive time, wall ns since epoch (replays pace on it)
``source_ts_ns`` int64?   the event's own time (exchange/sensor), wall ns
``key``         string    instrument or sensor id
``kind``        string    event kind (``quote``, ``trade``, ... see ``schemas.events``)
``payload``     binary    the event, encoded as the file's ``payload_encoding``
``topic``       string?   Kafka coordinates, when recorded from Kafka
``partition``   int32?
``offset``      int64?
``kafka_ts_ns`` int64?    Kafka record timestamp, wall ns
=============== ========= ===================================================

File metadata holds ``weir.feed_version``, ``weir.payload_encoding`` and a free-form
``weir.source``. Readers stream record batches; nothing loads a whole file unless asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.codec import Codec, Encoding, event_codec
from schemas.errors import FeedError
from schemas.events import Event

FEED_VERSION = "1"
DEFAULT_BATCH_ROWS = 65_536

FEED_SCHEMA = pa.schema(
    [
        pa.field("recv_ns", pa.int64(), nullable=False),
        pa.field("source_ts_ns", pa.int64()),
        pa.field("key", pa.string(), nullable=False),
        pa.field("kind", pa.dictionary(pa.int8(), pa.string()), nullable=False),
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("kafka_ts_ns", pa.int64()),
    ]
)
_COLUMNS = tuple(FEED_SCHEMA.names)


class FeedRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One decoded row of a feed."""

    recv_ns: int
    event: Event
    source_ts_ns: int | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    kafka_ts_ns: int | None = None


class FeedWriter:
    """Append events to a new feed file, flushing a row group every ``batch_rows`` rows.

    Use as a context manager; rows still buffered are written on ``close``. The file is
    written to ``PATH.tmp`` and renamed on a clean close, so a crash leaves no half feed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        encoding: Encoding | str = Encoding.MSGPACK,
        source: str = "",
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self.path = Path(path)
        self.codec: Codec[Event] = event_codec(encoding)
        self.batch_rows = batch_rows
        self.rows_written = 0
        meta = {
            b"weir.feed_version": FEED_VERSION.encode(),
            b"weir.payload_encoding": self.codec.encoding.value.encode(),
            b"weir.source": source.encode(),
        }
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                self._tmp, FEED_SCHEMA.with_metadata(meta), compression="zstd"
            )
        except OSError as exc:
            raise FeedError(f"cannot write feed {self.path}: {exc}") from exc
        self._cols: dict[str, list[Any]] = {name: [] for name in _COLUMNS}

    def write(
        self,
        event: Event,
        recv_ns: int,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        kafka_ts_ns: int | None = None,
    ) -> None:
        """Encode and append one event received at ``recv_ns`` (wall ns)."""
        self.write_encoded(
            self.codec.encode(event),
            recv_ns=recv_ns,
            key=event.key,
            kind=str(type(event).__struct_config__.tag),
            source_ts_ns=event.source_ts_ns,
            topic=topic,
            partition=partition,
            offset=offset,
            kafka_ts_ns=kafka_ts_ns,
        )

    def write_encoded(
        self,
        payload: bytes,
        *,
        recv_ns: int,
        key: str,
        kind: str,
        source_ts_ns: int | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        kafka_ts_ns: int | None = None,
    ) -> None:
        """Append one already-encoded payload (as recorded from Kafka)."""
        cols = self._cols
        cols["recv_ns"].append(recv_ns)
        cols["source_ts_ns"].append(source_ts_ns)
        cols["key"].append(key)
        cols["kind"].append(kind)
        cols["payload"].append(payload)
        cols["topic"].append(topic)
        cols["partition"].append(partition)
        cols["offset"].append(offset)
        cols["kafka_ts_ns"].append(kafka_ts_ns)
        if len(cols["recv_ns"]) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one row group."""
        n = len(self._cols["recv_ns"])
        if n == 0:
            return
        table = pa.Table.from_pydict(self._cols, schema=self._writer.schema)
        self._writer.write_table(table)
        self.rows_written += n
        for col in self._cols.values():
            col.clear()

    def close(self) -> None:
        """Flush, finish the file and move it into place."""
        self.flush()
        self._writer.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        """Drop the unfinished file."""
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FeedReader:
    """Read a feed file in record batches, or decoded record by record."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise FeedError(f"cannot read feed {self.path}: {exc}") from exc
        meta = self._file.schema_arrow.metadata or {}
        version = meta.get(b"weir.feed_version", b"").decode()
        if version != FEED_VERSION:
            raise FeedError(
                f"cannot read feed {self.path}: weir.feed_version is {version or 'missing'!r}, "
                f"expected {FEED_VERSION!r}"
            )
        missing = [c for c in _COLUMNS if c not in self._file.schema_arrow.names]
        if missing:
            raise FeedError(f"cannot read feed {self.path}: missing columns {missing}")
        self.encoding = Encoding(meta.get(b"weir.payload_encoding", b"msgpack").decode())
        self.source = meta.get(b"weir.source", b"").decode()
        self.codec: Codec[Event] = event_codec(self.encoding)

    @property
    def num_rows(self) -> int:
        """Rows in the file (from its footer, without reading data)."""
        return int(self._file.metadata.num_rows)

    def batches(
        self, batch_rows: int = DEFAULT_BATCH_ROWS, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream the file as Arrow record batches of at most ``batch_rows`` rows."""
        yield from self._file.iter_batches(batch_size=batch_rows, columns=columns)

    def records(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[FeedRecord]:
        """Stream decoded records in file order."""
        decode = self.codec.decode
        for batch in self.batches(batch_rows):
            cols = batch.to_pydict()
            for i in range(batch.num_rows):
                yield FeedRecord(
                    recv_ns=cols["recv_ns"][i],
                    event=decode(cols["payload"][i]),
                    source_ts_ns=cols["source_ts_ns"][i],
                    topic=cols["topic"][i],
                    partition=cols["partition"][i],
                    offset=cols["offset"][i],
                    kafka_ts_ns=cols["kafka_ts_ns"][i],
                )
