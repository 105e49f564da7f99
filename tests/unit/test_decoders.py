"""Plain-payload decoders: weir's wire types, a user Struct by import path, a field map."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from schemas.codec import event_codec
from schemas.decoders import (
    RAW_ERRORS,
    FieldMap,
    FieldMapDecoder,
    StructDecoder,
    WireDecoder,
    load_struct,
)
from schemas.errors import DecodeError, SchemaError
from schemas.events import Quote, SensorReading

WHERE = {"topic": "t", "partition": 2, "offset": 9}


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """A user's own event type (found by ``load_struct`` through this module's name)."""

    device: str
    temp_c: float
    at_ms: int | None = None


class Keyed(msgspec.Struct, frozen=True, kw_only=True):
    """A user event whose key is a property."""

    site: int
    level: float

    @property
    def key(self) -> int:
        return self.site


def _sensor_map(**kw: str) -> FieldMap:
    args = {"kind": "sensor", "key_field": "device", "values": {"value": "temp_c"}}
    return FieldMap(**{**args, **kw})  # type: ignore[arg-type]


def test_wire_decoder_gives_the_event_its_key_and_time() -> None:
    """weir's own wire types decode as before, with key and source time from the event."""
    q = Quote(symbol="ETH", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0, source_ts_ns=5)
    got = WireDecoder("msgpack").decode(event_codec("msgpack").encode(q), [])
    assert got == (q, "ETH", 5)


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_wire_decoder_raw_gives_the_same_event_and_leaves_the_wording_to_decode(
    encoding: str,
) -> None:
    """``raw`` (the pipeline's fast path) decodes a good value to the event ``decode``
    gives; a bad one raises one of ``RAW_ERRORS``, unworded, for ``decode`` to word."""
    q = Quote(symbol="ETH", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0, source_ts_ns=5)
    dec = WireDecoder(encoding)
    value = event_codec(encoding).encode(q)
    event = dec.raw(value)
    assert (event, event.key, event.source_ts_ns) == dec.decode(value, [])
    for bad in (b"\xff{", value[:-3]):
        with pytest.raises(RAW_ERRORS):
            dec.raw(bad)
        with pytest.raises(DecodeError, match=r"decode failed: .* topic=t partition=2 offset=9"):
            dec.decode(bad, [], **WHERE)


def test_wire_decoder_error_names_the_field_and_coordinates() -> None:
    """A bad wire event fails with msgspec's message and the record's coordinates."""
    with pytest.raises(DecodeError) as info:
        WireDecoder().decode(b'{"kind":"sensor","sensor_id":"s","value":"x"}', [], **WHERE)
    assert str(info.value) == (
        "decode failed: Expected `float`, got `str` - at `$.value` - topic=t partition=2 offset=9"
    )
    assert info.value.code == "invalid_value"


def test_load_struct_finds_a_class_by_import_path() -> None:
    """``module:Class`` names a msgspec.Struct class."""
    assert load_struct(f"{__name__}:Reading") is Reading


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon", "event struct 'no_colon' is not of the form module:Class"),
        (f"{__name__}:WHERE", f"event struct '{__name__}:WHERE' is not a msgspec.Struct class"),
        (f"{__name__}:Missing", f"event struct '{__name__}:Missing' is not a msgspec.Struct class"),
        (
            "weir_no_such_module:X",
            "event struct 'weir_no_such_module:X': cannot import weir_no_such_module: "
            "No module named 'weir_no_such_module'",
        ),
    ],
)
def test_load_struct_names_a_bad_path(path: str, message: str) -> None:
    """A path that is malformed, not importable or not a Struct is refused with its name."""
    with pytest.raises(SchemaError) as info:
        load_struct(path)
    assert str(info.value) == message


def test_struct_decoder_passes_the_users_event_through() -> None:
    """The user's Struct reaches the caller as decoded, keyed and timed by named fields."""
    dec = StructDecoder(Reading, key_field="device", source_ts_field="at_ms")
    got = dec.decode(b'{"device":"d1","temp_c":21.5,"at_ms":1700000000000}', [])
    assert got == (
        Reading(device="d1", temp_c=21.5, at_ms=1_700_000_000_000),
        "d1",
        1_700_000_000_000_000_000,
    )


def test_struct_decoder_reads_a_key_property_and_stringifies_ints() -> None:
    """Without key_field the ``key`` attribute is the key; an int key becomes its text."""
    got = StructDecoder(Keyed, "msgpack").decode(
        msgspec.msgpack.encode({"site": 7, "level": 1.0}), []
    )
    assert got == (Keyed(site=7, level=1.0), "7", None)


def test_struct_decoder_refuses_unknown_fields_at_build() -> None:
    """A key or time field the Struct lacks is an error at start, not per record."""
    with pytest.raises(SchemaError) as info:
        StructDecoder(Reading, key_field="serial")
    assert str(info.value) == "event struct Reading has no field 'serial'"
    with pytest.raises(SchemaError) as info:
        StructDecoder(Reading, key_field="device", source_ts_unit="weeks")
    assert str(info.value) == "unknown time unit 'weeks'; expected one of ns, us, ms, s"


def test_struct_decoder_rejects_an_empty_key() -> None:
    """An empty key is an invalid value naming the key field and coordinates."""
    with pytest.raises(DecodeError) as info:
        StructDecoder(Reading, key_field="device").decode(b'{"device":"","temp_c":1}', [], **WHERE)
    assert str(info.value) == (
        "decode failed: key field `device` is '', expected a non-empty string "
        "- topic=t partition=2 offset=9"
    )
    assert info.value.code == "invalid_value"


def test_struct_decoder_error_is_msgspecs() -> None:
    """A payload that does not fit the user's Struct names the field."""
    with pytest.raises(DecodeError) as info:
        StructDecoder(Reading, key_field="device").decode(b'{"device":"d"}', [], **WHERE)
    assert str(info.value) == (
        "decode failed: Object missing required field `temp_c` - topic=t partition=2 offset=9"
    )


def test_field_map_builds_a_wire_event() -> None:
    """Input fields feed the wire type's key, value and source time (ms scaled to ns)."""
    dec = FieldMapDecoder(_sensor_map(source_ts_field="ts"))
    got = dec.decode(b'{"device":"d1","temp_c":3.5,"ts":1000,"extra":true}', [])
    assert got == (SensorReading(sensor_id="d1", value=3.5, source_ts_ns=10**9), "d1", 10**9)


def test_field_map_reads_msgpack_int_keys_and_datetimes() -> None:
    """An int key becomes text; a timezone-aware datetime (Avro logical type) is read as is."""
    fm = FieldMap(
        kind="quote",
        key_field="id",
        values={"bid_px": "b", "bid_qty": "bq", "ask_px": "a", "ask_qty": "aq"},
        source_ts_field="t",
    )
    at = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    got = fm.apply({"id": 42, "b": 1.0, "bq": 2.0, "a": 1.5, "aq": 3.0, "t": at})
    event, key, ts = got
    assert key == "42" and ts == 1_704_067_200 * 10**9
    assert event == Quote(
        symbol="42", bid_px=1.0, bid_qty=2.0, ask_px=1.5, ask_qty=3.0, source_ts_ns=ts
    )


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b'{"temp_c":1.0,"ts":1}', "missing_field", "missing field `device` (for `sensor_id`)"),
        (b'{"device":"d","ts":1}', "missing_field", "missing field `temp_c` (for `value`)"),
        (
            b'{"device":"d","temp_c":1.0}',
            "missing_field",
            "missing field `ts` (for `source_ts_ns`)",
        ),
        (
            b'{"device":"d","temp_c":1.0,"ts":"x"}',
            "invalid_value",
            "field `ts` is 'x', expected a time",
        ),
        (
            b'{"device":"d","temp_c":"hot","ts":1}',
            "invalid_value",
            "Expected `float`, got `str` - at `temp_c` (for `value`)",
        ),
        (
            b'{"device":"d","temp_c":1e13,"ts":1}',
            "invalid_value",
            "Expected `float` <= 1000000000000.0 - at `temp_c` (for `value`)",
        ),
        (b"[1,2]", "invalid_value", "Expected `object`, got `array`"),
        (
            b'{"device":"d","temp_c":1.0,"ts":true}',
            "invalid_value",
            "field `ts` is True, expected a time",
        ),
        (b"{", "malformed", "Input data was truncated"),
    ],
)
def test_field_map_errors_name_the_input_field(payload: bytes, code: str, reason: str) -> None:
    """Each bad record fails with its dead-letter code and the input field's own name."""
    with pytest.raises(DecodeError) as info:
        FieldMapDecoder(_sensor_map(source_ts_field="ts")).decode(payload, [], **WHERE)
    assert info.value.code == code
    assert str(info.value) == f"decode failed: {reason} - topic=t partition=2 offset=9"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"kind": "weather"},
            "unknown event kind 'weather'; expected one of quote, book_diff, "
            "book_snapshot, trade, sensor",
        ),
        ({"key_field": ""}, "a field map needs key_field (the input field holding the key)"),
        ({"values": {}}, "field map: sensor needs 'value'; map an input field to it"),
        (
            {"values": {"value": "v", "colour": "c"}},
            "field map: sensor has no value field 'colour'",
        ),
        (
            {"values": {"value": "v", "sensor_id": "s"}},
            "field map: sensor has no value field 'sensor_id'",
        ),
    ],
)
def test_field_map_is_checked_at_build(kw: dict[str, object], message: str) -> None:
    """A field map that names an unknown kind or field, or leaves one unfed, is refused."""
    with pytest.raises(SchemaError) as info:
        _sensor_map(**kw)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\xff", "malformed", "invalid UTF-8 at byte 0"),
        (
            b'{"kind":"quote","symbol":"A","x":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
            "malformed",
            "nested too deeply",
        ),
        (b'{"kind":"weather"}', "unknown_kind", "Invalid value 'weather' - at `$.kind`"),
    ],
)
def test_wire_decoder_failures_are_worded_by_the_codec(
    payload: bytes, code: str, reason: str
) -> None:
    """Every way the fast path fails is re-decoded by the codec, which names it."""
    with pytest.raises(DecodeError) as info:
        WireDecoder().decode(payload, [], **WHERE)
    assert info.value.code == code
    assert str(info.value) == f"decode failed: {reason} - topic=t partition=2 offset=9"


def test_field_map_scales_float_and_null_times() -> None:
    """A float time is scaled by its unit; a null time means the event has none."""
    fm = _sensor_map(source_ts_field="ts", source_ts_unit="s")
    assert fm.apply({"device": "d", "temp_c": 1.0, "ts": 1.5})[2] == 1_500_000_000
    assert fm.apply({"device": "d", "temp_c": 1.0, "ts": None})[2] is None


class Stamped(msgspec.Struct, frozen=True, kw_only=True):
    """A user event whose time field is text."""

    key: str
    at: str


def test_struct_decoder_rejects_a_time_that_is_not_a_number() -> None:
    """A user event whose time field holds text is an invalid value naming the field."""
    with pytest.raises(DecodeError) as info:
        StructDecoder(Stamped, source_ts_field="at").decode(b'{"key":"k","at":"noon"}', [], **WHERE)
    assert info.value.code == "invalid_value"
    assert str(info.value) == (
        "decode failed: time field `at` is 'noon', expected a number - topic=t partition=2 offset=9"
    )
