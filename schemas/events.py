"""Inbound event types: market data and sensor readings.

Every event is a frozen ``msgspec.Struct`` tagged by ``kind``; ``Event`` is their union,
dispatched with ``match``. Value ranges are part of the type (``Meta`` bounds), so a NaN,
an infinity or an absurd number fails decoding before any state is touched.

Times are integer nanoseconds with the clock in the name: ``source_ts_ns`` is the
source's own wall clock (exchange or sensor time, ns since the Unix epoch), or ``None``
when the source gives none. Newer producers may append fields with defaults; readers
ignore fields they do not know (no ``forbid_unknown_fields`` on payloads).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

SCHEMA_VERSION = 1

MAX_LEVELS = 5000
"""Most price levels one book message may carry (Binance sends at most 5000 per side)."""

MAX_KEY_LEN = 128

Price = Annotated[float, msgspec.Meta(gt=0.0, lt=1e12)]
Qty = Annotated[float, msgspec.Meta(ge=0.0, lt=1e15)]
Reading = Annotated[float, msgspec.Meta(ge=-1e12, le=1e12)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LEN)]
TimestampNs = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
UpdateId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Level = tuple[Price, Qty]
Levels = Annotated[list[Level], msgspec.Meta(max_length=MAX_LEVELS)]


class Quote(msgspec.Struct, frozen=True, kw_only=True, tag="quote", tag_field="kind"):
    """Best bid and ask of one instrument (Binance ``bookTicker``)."""

    symbol: Key
    bid_px: Price
    bid_qty: Qty
    ask_px: Price
    ask_qty: Qty
    update_id: UpdateId = 0
    source_ts_ns: TimestampNs | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Partitioning and state key: the instrument."""
        return self.symbol


class BookDiff(msgspec.Struct, frozen=True, kw_only=True, tag="book_diff", tag_field="kind"):
    """Order-book changes; a level with quantity 0 is deleted (Binance ``depth``)."""

    symbol: Key
    first_update_id: UpdateId
    last_update_id: UpdateId
    bids: Levels
    asks: Levels
    source_ts_ns: TimestampNs | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Partitioning and state key: the instrument."""
        return self.symbol


class BookSnapshot(
    msgspec.Struct, frozen=True, kw_only=True, tag="book_snapshot", tag_field="kind"
):
    """A full order book at ``last_update_id`` (Binance REST depth snapshot)."""

    symbol: Key
    last_update_id: UpdateId
    bids: Levels
    asks: Levels
    source_ts_ns: TimestampNs | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Partitioning and state key: the instrument."""
        return self.symbol


class Trade(msgspec.Struct, frozen=True, kw_only=True, tag="trade", tag_field="kind"):
    """One trade print (Binance ``trade``)."""

    symbol: Key
    trade_id: UpdateId
    price: Price
    qty: Qty
    buyer_is_maker: bool
    source_ts_ns: TimestampNs | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Partitioning and state key: the instrument."""
        return self.symbol


class SensorReading(msgspec.Struct, frozen=True, kw_only=True, tag="sensor", tag_field="kind"):
    """One reading of one sensor (NAB series, plant telemetry)."""

    sensor_id: Key
    value: Reading
    source_ts_ns: TimestampNs | None = None
    unit: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Partitioning and state key: the sensor."""
        return self.sensor_id


Event = Quote | BookDiff | BookSnapshot | Trade | SensorReading
"""Any inbound event; ``kind`` tells which."""

EVENT_TYPES: tuple[type[Event], ...] = (Quote, BookDiff, BookSnapshot, Trade, SensorReading)
EVENT_KINDS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in EVENT_TYPES)
