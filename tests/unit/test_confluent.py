"""Confluent-framed Avro and JSON Schema records: framing, one lookup per id, every failure."""

from __future__ import annotations

import io
import json

import pytest

from schemas.confluent import ConfluentDecoder, MemorySchemas, SchemaType, frame, unframe
from schemas.decoders import FieldMap
from schemas.errors import DecodeError
from schemas.events import SensorReading

fastavro = pytest.importorskip("fastavro", reason="the registry extra is not installed")
pytest.importorskip("jsonschema", reason="the registry extra is not installed")

WHERE = {"topic": "t", "partition": 1, "offset": 4}
AVRO = json.dumps(
    {
        "type": "record",
        "name": "Reading",
        "fields": [
            {"name": "device", "type": "string"},
            {"name": "temp_c", "type": "double"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
)
JSON_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"device": {"type": "string"}, "temp_c": {"type": "number"}},
        "required": ["device", "temp_c"],
    }
)


def _avro(record: dict[str, object], schema: str = AVRO) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(schema)), record)
    return buf.getvalue()


def _decoder(
    schemas: MemorySchemas, schema_type: SchemaType = SchemaType.AVRO, ts: str = "at"
) -> ConfluentDecoder:
    fm = FieldMap(kind="sensor", key_field="device", values={"value": "temp_c"}, source_ts_field=ts)
    return ConfluentDecoder(schemas, fm, schema_type)


def _fails(dec: ConfluentDecoder, value: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        dec.decode(value, [], **WHERE)
    return info.value


def test_frame_round_trips_the_schema_id() -> None:
    """``frame`` writes magic byte 0 and the id big-endian; ``unframe`` reads them back."""
    value = frame(258, b"abc")
    assert value == b"\x00\x00\x00\x01\x02abc"
    schema_id, payload = unframe(value)
    assert schema_id == 258 and bytes(payload) == b"abc"


def test_avro_record_decodes_into_the_mapped_event() -> None:
    """An Avro record becomes the field map's wire event, its time from the logical type."""
    schemas = MemorySchemas()
    sid = schemas.register("AVRO", AVRO)
    dec = _decoder(schemas)
    got = dec.decode(
        frame(sid, _avro({"device": "d1", "temp_c": 20.5, "at": 1_700_000_000_123})), []
    )
    ts = 1_700_000_000_123_000_000
    assert got == (SensorReading(sensor_id="d1", value=20.5, source_ts_ns=ts), "d1", ts)


def test_each_schema_id_is_looked_up_once() -> None:
    """Many records of one id, and of an unknown id, cost one lookup per id."""
    schemas = MemorySchemas()
    sid = schemas.register("AVRO", AVRO)
    dec = _decoder(schemas)
    for i in range(50):
        dec.decode(frame(sid, _avro({"device": "d", "temp_c": float(i), "at": i})), [])
        with pytest.raises(DecodeError):
            dec.decode(frame(99, b"x"), [])
    assert schemas.lookups == 2 and dec.known_ids == [sid, 99]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00\x00\x01", "record of 3 bytes is shorter than the 5-byte Confluent header"),
        (b'{"device":"d"}', "magic byte is 0x7b, expected 0x00 (Confluent wire format)"),
    ],
)
def test_bad_framing_is_named(value: bytes, reason: str) -> None:
    """A record too short for the header, or with another magic byte, is ``bad_framing``."""
    err = _fails(_decoder(MemorySchemas()), value)
    assert err.code == "bad_framing"
    assert str(err) == f"decode failed: {reason} - topic=t partition=1 offset=4"


def test_unknown_schema_id_is_named() -> None:
    """An id the registry does not know is ``unknown_schema`` with the id."""
    err = _fails(_decoder(MemorySchemas()), frame(7, b"\x02"))
    assert err.code == "unknown_schema"
    assert str(err) == (
        "decode failed: schema id 7 is not in the registry - topic=t partition=1 offset=4"
    )


def test_schema_of_another_type_is_refused() -> None:
    """A JSON schema id met by the Avro decoder is ``wrong_schema_type``."""
    schemas = MemorySchemas()
    sid = schemas.register("JSON", JSON_SCHEMA)
    err = _fails(_decoder(schemas), frame(sid, b"{}"))
    assert err.code == "wrong_schema_type"
    assert err.reason == "schema id 1 is a JSON schema, expected AVRO"


@pytest.mark.parametrize(
    ("schema_type", "text", "reason"),
    [
        (
            "AVRO",
            "{not json",
            "schema id 1: not a valid Avro schema: JSONDecodeError: Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (
            "AVRO",
            '{"type": "nonsense"}',
            "schema id 1: not a valid Avro schema: UnknownType: {'type': 'nonsense'}",
        ),
        (
            "JSON",
            '{"type": 5}',
            "schema id 1: not a valid JSON Schema: 5 is not valid under any of the given schemas",
        ),
    ],
)
def test_unreadable_registered_schema_is_bad_schema(
    schema_type: str, text: str, reason: str
) -> None:
    """A registered schema that does not parse dead-letters its records as ``bad_schema``."""
    schemas = MemorySchemas()
    sid = schemas.register(schema_type, text)
    err = _fails(_decoder(schemas, SchemaType(schema_type)), frame(sid, b"{}"))
    assert err.code == "bad_schema"
    assert err.reason == reason


def test_truncated_avro_payload_is_a_schema_mismatch() -> None:
    """Avro bytes that end inside the record are ``schema_mismatch`` naming the schema id."""
    schemas = MemorySchemas()
    sid = schemas.register("AVRO", AVRO)
    payload = _avro({"device": "d1", "temp_c": 1.0, "at": 5})
    err = _fails(_decoder(schemas), frame(sid, payload[:-3]))
    assert err.code == "schema_mismatch"
    assert err.reason.startswith("payload does not match AVRO schema id 1: ")


def test_trailing_bytes_after_an_avro_record_are_a_mismatch() -> None:
    """A record written with a longer schema leaves bytes over: ``schema_mismatch``."""
    schemas = MemorySchemas()
    sid = schemas.register("AVRO", AVRO)
    payload = _avro({"device": "d1", "temp_c": 1.0, "at": 5}) + b"\x02\x04"
    err = _fails(_decoder(schemas), frame(sid, payload))
    assert err.reason == "payload does not match AVRO schema id 1: 2 bytes left after the record"


def test_avro_record_without_a_mapped_field_is_missing_field() -> None:
    """A schema that lacks a field the map needs gives ``missing_field`` naming it."""
    schemas = MemorySchemas()
    other = json.dumps(
        {"type": "record", "name": "R", "fields": [{"name": "device", "type": "string"}]}
    )
    sid = schemas.register("AVRO", other)
    err = _fails(_decoder(schemas, ts=""), frame(sid, _avro({"device": "d"}, other)))
    assert err.code == "missing_field"
    assert err.reason == "missing field `temp_c` (for `value`)"


def test_json_schema_record_decodes_and_is_checked() -> None:
    """A JSON record valid under its schema decodes; one that breaks it names the rule."""
    schemas = MemorySchemas()
    sid = schemas.register("JSON", JSON_SCHEMA)
    dec = _decoder(schemas, SchemaType.JSON, ts="")
    got = dec.decode(frame(sid, b'{"device":"d2","temp_c":3}'), [])
    assert got == (SensorReading(sensor_id="d2", value=3.0), "d2", None)
    err = _fails(dec, frame(sid, b'{"device":"d2","temp_c":"hot"}'))
    assert err.code == "schema_mismatch"
    assert err.reason == (
        "payload does not match JSON schema id 1: 'hot' is not of type 'number' at $.temp_c"
    )
    err = _fails(dec, frame(sid, b'{"device":'))
    assert err.code == "schema_mismatch"
    assert (
        err.reason == "payload does not match JSON schema id 1: not JSON: Input data was truncated"
    )


def test_refused_ids_are_bounded() -> None:
    """Past ``max_refused_ids`` refused ids a new id is refused without a lookup, while
    ids met before still decode: random framed bytes cannot cost a lookup per record."""
    schemas = MemorySchemas()
    sid = schemas.register("AVRO", AVRO)
    fm = FieldMap(kind="sensor", key_field="device", values={"value": "temp_c"})
    dec = ConfluentDecoder(schemas, fm, "AVRO", max_refused_ids=2)
    good = frame(sid, _avro({"device": "d", "temp_c": 1.0, "at": 1}))
    assert dec.decode(good, [])[1] == "d"
    for bad in (50, 51, 52, 53, 50):
        with pytest.raises(DecodeError) as info:
            dec.decode(frame(bad, b""), [])
        assert info.value.code == "unknown_schema"
    assert info.value.reason == "schema id 50 is not in the registry"
    with pytest.raises(DecodeError) as info:
        dec.decode(frame(52, b""), [], **WHERE)
    assert str(info.value) == (
        "decode failed: schema id 52 not looked up: 2 schema ids were refused already "
        "- topic=t partition=1 offset=4"
    )
    assert schemas.lookups == 3 and dec.known_ids == [sid, 50, 51]
    assert dec.decode(good, [])[1] == "d" and schemas.lookups == 3
