"""Wire types: round trips, evolution, bounds and exact decode errors."""

from __future__ import annotations

import math

import msgspec
import pytest

from schemas import (
    Codec,
    DecodeError,
    Encoding,
    Quote,
    SchemaError,
    dead_letter_codec,
    decision_codec,
    event_codec,
)
from schemas.events import SCHEMA_VERSION, Event
from tests.wire_samples import DEAD, DECISION, SAMPLES


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_event_round_trip(encoding: Encoding, event: Event) -> None:
    """Every event type decodes back to an equal value in both encodings."""
    codec = event_codec(encoding)
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize("encoding", list(Encoding))
def test_decision_and_dead_letter_round_trip(encoding: Encoding) -> None:
    """Decisions and dead letters (with raw bytes) decode back to equal values."""
    assert decision_codec(encoding).decode(decision_codec(encoding).encode(DECISION)) == DECISION
    assert dead_letter_codec(encoding).decode(dead_letter_codec(encoding).encode(DEAD)) == DEAD


@pytest.mark.parametrize("encoding", list(Encoding))
def test_a_codecs_encoder_writes_what_encode_writes(encoding: Encoding) -> None:
    """The msgspec encoder a hot loop binds gives the same bytes as ``encode``."""
    codec = decision_codec(encoding)
    assert codec.encoder.encode(DECISION) == codec.encode(DECISION)
    assert codec.decode(codec.encoder.encode(DECISION)) == DECISION


def test_codecs_are_built_once() -> None:
    """Asking twice for a codec returns the same object, not a new decoder."""
    assert event_codec("json") is event_codec(Encoding.JSON)
    assert decision_codec("msgpack") is decision_codec(Encoding.MSGPACK)


def test_kind_tag_on_the_wire() -> None:
    """The union is tagged by a `kind` field with the documented names."""
    raw = msgspec.json.decode(event_codec().encode(SAMPLES[1]))
    assert raw["kind"] == "book_diff"
    assert raw["schema_version"] == SCHEMA_VERSION


def test_decode_error_names_field_and_coordinates() -> None:
    """A wrong type names the field, expected and actual types, and the coordinates."""
    bad = b'{"kind":"quote","symbol":"B","bid_px":1,"bid_qty":"x","ask_px":1,"ask_qty":1}'
    with pytest.raises(DecodeError) as info:
        event_codec().decode(bad, topic="quotes", partition=3, offset=1200)
    assert str(info.value) == (
        "decode failed: Expected `float`, got `str` - at `$.bid_qty` "
        "- topic=quotes partition=3 offset=1200"
    )
    assert info.value.code == "invalid_value"
    assert (info.value.topic, info.value.partition, info.value.offset) == ("quotes", 3, 1200)


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (b'{"kind":"zz"}', "unknown_kind", "Invalid value 'zz' - at `$.kind`"),
        (b'{"symbol":"B"}', "unknown_kind", "Object missing required field `kind`"),
        (b'{"kind":"quote",', "malformed", "Input data was truncated"),
        (b"[1,2]", "invalid_value", "Expected `object`, got `array`"),
        (
            b'{"kind":"sensor","sensor_id":"s","value":1e300}',
            "invalid_value",
            "Expected `float` <= 1000000000000.0 - at `$.value`",
        ),
        (
            b'{"kind":"trade","symbol":"B","trade_id":1,"price":-1,"qty":1,"buyer_is_maker":true}',
            "invalid_value",
            "Expected `float` > 0.0 - at `$.price`",
        ),
        (
            b'{"kind":"sensor","sensor_id":"","value":1}',
            "invalid_value",
            "Expected `str` of length >= 1 - at `$.sensor_id`",
        ),
    ],
)
def test_decode_error_codes(payload: bytes, code: str, message: str) -> None:
    """Each class of bad payload gets its dead-letter code and msgspec's precise message."""
    with pytest.raises(DecodeError) as info:
        event_codec().decode(payload)
    assert info.value.code == code
    assert str(info.value) == f"decode failed: {message}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_rejected(value: float) -> None:
    """NaN and infinities never decode (MessagePack can carry them; the bounds refuse them)."""
    raw = msgspec.msgpack.encode({"kind": "sensor", "sensor_id": "s", "value": value})
    with pytest.raises(DecodeError) as info:
        event_codec("msgpack").decode(raw)
    assert info.value.code == "invalid_value"
    assert "at `$.value`" in str(info.value)


def test_too_many_levels_rejected() -> None:
    """A book message with more levels than the bound is refused, not stored."""
    levels = [[1.0 + i, 1.0] for i in range(5001)]
    raw = msgspec.json.encode(
        {"kind": "book_snapshot", "symbol": "B", "last_update_id": 1, "bids": levels, "asks": []}
    )
    with pytest.raises(DecodeError, match=r"Expected `array` of length <= 5000 - at `\$.bids`"):
        event_codec().decode(raw)


class QuoteV2(msgspec.Struct, frozen=True, kw_only=True, tag="quote", tag_field="kind"):
    """A newer producer's quote: one more field, with a default."""

    symbol: str
    bid_px: float
    bid_qty: float
    ask_px: float
    ask_qty: float
    update_id: int = 0
    source_ts_ns: int | None = None
    schema_version: int = 2
    venue: str = "binance"


@pytest.mark.parametrize("encoding", list(Encoding))
def test_old_reader_new_writer(encoding: Encoding) -> None:
    """A reader of version 1 ignores fields a newer writer appended."""
    new = QuoteV2(symbol="B", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0, venue="x")
    old = event_codec(encoding).decode(Codec(QuoteV2, encoding).encode(new))
    assert old == Quote(
        symbol="B", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0, schema_version=2
    )


@pytest.mark.parametrize("encoding", list(Encoding))
def test_new_reader_old_writer(encoding: Encoding) -> None:
    """A newer reader fills appended fields with their defaults from an old payload."""
    old = Quote(symbol="B", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0)
    new = Codec(QuoteV2, encoding).decode(event_codec(encoding).encode(old))
    assert new.venue == "binance"
    assert new.schema_version == SCHEMA_VERSION


def test_unknown_encoding_named() -> None:
    """Asking for an encoding weir does not know names it and the choices."""
    with pytest.raises(
        SchemaError, match=r"unknown encoding 'avro'; expected one of json, msgpack"
    ):
        Codec(Quote, "avro")


def test_event_keys() -> None:
    """Every event exposes its partitioning key."""
    assert [e.key for e in SAMPLES] == [
        "BTCUSDT",
        "BTCUSDT",
        "ETHUSDT",
        "BTCUSDT",
        "machine_temperature",
    ]
