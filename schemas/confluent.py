"""Avro and JSON Schema records in the Confluent Schema Registry wire format.

A framed record is one magic byte ``0x00``, the schema id as a 4-byte big-endian integer,
then the payload (Avro binary, or JSON text) written with that schema. ``ConfluentDecoder``
reads the frame, asks its ``SchemaSource`` (``schemas.base``) for the schema the first time
it meets an id, builds that schema's reader once and keeps it (an id the registry does not
know is kept too; past ``MAX_REFUSED_IDS`` refused ids, new ones are refused unasked, so
garbage input costs no lookups and no memory), then feeds the record's fields
to a ``FieldMap`` (``schemas.decoders``). The lookup is the only I/O; it lives behind the
source (``service.registry.RegistryClient`` over HTTP).

Dead-letter reasons: ``bad_framing`` (too short, wrong magic byte), ``unknown_schema``
(the registry has no such id), ``wrong_schema_type`` (an id of another schema type),
``bad_schema`` (the registered schema does not parse), ``schema_mismatch`` (the payload
does not match its schema), then the field map's ``missing_field`` / ``invalid_value``.

Avro needs ``fastavro``, JSON Schema ``jsonschema`` (the ``registry`` extra); they are
imported when the decoder is built, so the rest of weir runs without them.
"""

from __future__ import annotations

import enum
import io
import json
import struct
from collections.abc import Callable

import msgspec

from schemas.base import Headers, Inbound, RegisteredSchema, SchemaSource
from schemas.decoders import FieldMap
from schemas.errors import DecodeError, SchemaError

MAGIC = 0
HEADER_BYTES = 5
MAX_REFUSED_IDS = 256
"""Schema ids a decoder refuses (unknown, unreadable) before it stops asking the registry
about new ones: random bytes after a zero byte would otherwise cost one lookup per record
and grow the cache without bound."""

Reader = Callable[[memoryview], object]
"""Reads one payload into a record of fields; raises ``_Mismatch`` when it does not fit."""


class SchemaType(enum.StrEnum):
    """The registry's ``schemaType`` values weir reads."""

    AVRO = "AVRO"
    JSON = "JSON"


class _Mismatch(Exception):
    """A payload that does not fit its schema (becomes a ``schema_mismatch`` DecodeError)."""


class _Refused:
    """A schema id that cannot be read: every record of it fails with the same reason."""

    __slots__ = ("code", "reason")

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


def frame(schema_id: int, payload: bytes) -> bytes:
    """``payload`` framed for ``schema_id`` (what a Confluent serializer writes)."""
    return bytes((MAGIC,)) + schema_id.to_bytes(4, "big") + payload


def unframe(
    value: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> tuple[int, memoryview]:
    """The schema id and payload of a framed record; bad framing is a DecodeError."""
    if len(value) < HEADER_BYTES:
        raise DecodeError(
            f"record of {len(value)} bytes is shorter than the 5-byte Confluent header",
            code="bad_framing",
            topic=topic,
            partition=partition,
            offset=offset,
        )
    if value[0] != MAGIC:
        raise DecodeError(
            f"magic byte is {value[0]:#04x}, expected 0x00 (Confluent wire format)",
            code="bad_framing",
            topic=topic,
            partition=partition,
            offset=offset,
        )
    return int.from_bytes(value[1:HEADER_BYTES], "big"), memoryview(value)[HEADER_BYTES:]


def avro_reader(schema_text: str) -> Reader:
    """A reader of Avro binary payloads written with ``schema_text``."""
    try:
        import fastavro
    except ImportError as exc:
        raise SchemaError("Avro input needs fastavro: pip install 'weir[registry]'") from exc
    try:
        parsed = fastavro.parse_schema(json.loads(schema_text))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(f"not a valid Avro schema: {type(exc).__name__}: {exc}") from exc
    read = fastavro.schemaless_reader

    def reader(payload: memoryview) -> object:
        buf = io.BytesIO(payload)
        try:
            record = read(buf, parsed, None)
        except (EOFError, ValueError, IndexError, TypeError, struct.error, OverflowError) as exc:
            raise _Mismatch(f"{type(exc).__name__}: {exc}") from exc
        left = len(payload) - buf.tell()
        if left:
            raise _Mismatch(f"{left} bytes left after the record")
        return record

    return reader


def json_schema_reader(schema_text: str) -> Reader:
    """A reader of JSON payloads checked against the JSON Schema ``schema_text``."""
    try:
        import jsonschema
    except ImportError as exc:
        raise SchemaError(
            "JSON Schema input needs jsonschema: pip install 'weir[registry]'"
        ) from exc
    try:
        schema = json.loads(schema_text)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except ValueError as exc:
        raise SchemaError(f"not a valid JSON Schema: {exc}") from exc
    except jsonschema.SchemaError as exc:
        raise SchemaError(f"not a valid JSON Schema: {exc.message}") from exc
    validator = cls(schema)
    decode = msgspec.json.Decoder().decode

    def reader(payload: memoryview) -> object:
        try:
            record = decode(payload)
        except msgspec.DecodeError as exc:
            raise _Mismatch(f"not JSON: {exc}") from exc
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            raise _Mismatch(f"{error.message} at {error.json_path}")
        return record

    return reader


_PROBE = {SchemaType.AVRO: '"null"', SchemaType.JSON: "{}"}
"""A trivial schema of each type, read at construction to import its library."""

_READERS: dict[SchemaType, Callable[[str], Reader]] = {
    SchemaType.AVRO: avro_reader,
    SchemaType.JSON: json_schema_reader,
}


class ConfluentDecoder:
    """Framed Avro or JSON Schema records through a schema registry (module docstring)."""

    __slots__ = ("_readers", "_refused", "field_map", "max_refused_ids", "schema_type", "source")

    def __init__(
        self,
        source: SchemaSource,
        field_map: FieldMap,
        schema_type: SchemaType | str,
        *,
        max_refused_ids: int = MAX_REFUSED_IDS,
    ) -> None:
        self.source = source
        self.field_map = field_map
        self.schema_type = SchemaType(schema_type)
        self.max_refused_ids = max_refused_ids
        self._readers: dict[int, Reader | _Refused] = {}
        self._refused = 0
        # Import the schema library now: its first import takes hundreds of milliseconds,
        # which would otherwise fall on the first record's deadline budget.
        _READERS[self.schema_type](_PROBE[self.schema_type])

    def decode(
        self,
        value: bytes,
        headers: Headers,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Inbound:
        """Decode one framed record (see ``schemas.base.EventDecoder``)."""
        schema_id, payload = unframe(value, topic=topic, partition=partition, offset=offset)
        reader = self._readers.get(schema_id)
        if reader is None:
            reader = self._first(schema_id)
        if isinstance(reader, _Refused):
            raise DecodeError(
                reader.reason, code=reader.code, topic=topic, partition=partition, offset=offset
            )
        try:
            record = reader(payload)
        except _Mismatch as exc:
            raise DecodeError(
                f"payload does not match {self.schema_type} schema id {schema_id}: {exc}",
                code="schema_mismatch",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc
        return self.field_map.apply(record, topic=topic, partition=partition, offset=offset)

    @property
    def known_ids(self) -> list[int]:
        """Schema ids met so far (each looked up once), in order of first use."""
        return list(self._readers)

    def _first(self, schema_id: int) -> Reader | _Refused:
        """The reader of a schema id met for the first time, kept unless the bound of
        refused ids is reached (then the id is refused without asking the registry)."""
        if self._refused >= self.max_refused_ids:
            return _Refused(
                "unknown_schema",
                f"schema id {schema_id} not looked up: {self._refused} schema ids "
                "were refused already",
            )
        reader = self._readers[schema_id] = self._build(schema_id)
        if isinstance(reader, _Refused):
            self._refused += 1
        return reader

    def _build(self, schema_id: int) -> Reader | _Refused:
        found = self.source.schema(schema_id)
        if found is None:
            return _Refused("unknown_schema", f"schema id {schema_id} is not in the registry")
        if found.schema_type != self.schema_type:
            return _Refused(
                "wrong_schema_type",
                f"schema id {schema_id} is a {found.schema_type} schema, "
                f"expected {self.schema_type}",
            )
        try:
            return _READERS[self.schema_type](found.schema)
        except SchemaError as exc:
            return _Refused("bad_schema", f"schema id {schema_id}: {exc}")


class MemorySchemas:
    """A ``SchemaSource`` in memory (the fake of the registry): ``register``, then look up.

    ``lookups`` counts calls of ``schema``, so tests can see a decoder asks once per id.
    """

    __slots__ = ("_schemas", "lookups")

    def __init__(self) -> None:
        self._schemas: dict[int, RegisteredSchema] = {}
        self.lookups = 0

    def register(self, schema_type: str, schema: str) -> int:
        """Store ``schema`` under the next id (from 1) and return the id."""
        schema_id = len(self._schemas) + 1
        self._schemas[schema_id] = RegisteredSchema(schema_type, schema)
        return schema_id

    def schema(self, schema_id: int) -> RegisteredSchema | None:
        """The schema under ``schema_id``, or ``None``."""
        self.lookups += 1
        return self._schemas.get(schema_id)
