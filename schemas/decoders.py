"""Event decoders for plain payloads: weir's wire types, a user Struct, a field map.

- ``WireDecoder``: weir's own tagged wire types (``schemas.events``), as before.
- ``StructDecoder``: the user's ``msgspec.Struct``, named by import path (``module:Class``),
  handed to the feature code as it is; its key and time are read from named attributes.
- ``FieldMapDecoder``: any JSON object or MessagePack map; a ``FieldMap`` names the key
  field, the time field (and its unit) and which input field feeds each value of one of
  weir's wire types, so weir's own models read foreign payloads. ``schemas.confluent``
  feeds the same ``FieldMap`` from Avro and JSON Schema records.

Every decoder is built once at start (msgspec decoders are fastest reused); each decode
failure is a ``DecodeError`` whose ``code`` is the dead-letter reason.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from schemas.base import Headers, Inbound
from schemas.codec import Codec, Encoding, event_codec
from schemas.errors import DecodeError, SchemaError
from schemas.events import EVENT_KINDS, EVENT_TYPES, Event, SensorReading

UNIT_NS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
"""Nanoseconds per unit of a source-time field."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _unit(unit: str) -> int:
    try:
        return UNIT_NS[unit]
    except KeyError:
        raise SchemaError(
            f"unknown time unit {unit!r}; expected one of {', '.join(UNIT_NS)}"
        ) from None


def _to_ns(raw: object, unit_ns: int) -> int | None:
    """A time value in ``unit_ns`` (or an Avro logical-type datetime) as wall ns; else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw * unit_ns
    if isinstance(raw, float) and raw == raw:  # not NaN
        return int(raw * unit_ns)
    if isinstance(raw, dt.datetime) and raw.tzinfo is not None:
        return (raw - _EPOCH) // dt.timedelta(microseconds=1) * 1_000
    return None


RAW_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What ``WireDecoder.raw`` raises for a value that does not decode (unworded)."""


class WireDecoder:
    """weir's own wire types (``schemas.events.Event``) in JSON or MessagePack.

    ``raw`` is the msgspec decoder's bound ``decode``: for a value that decodes, the same
    event as ``decode`` (whose key and source time are the event's ``key`` and
    ``source_ts_ns``), with no wrapper call and no tuple; for one that does not, one of
    ``RAW_ERRORS``, unworded: the caller then calls ``decode``, which words it.
    """

    __slots__ = ("_codec", "raw")

    def __init__(self, encoding: Encoding | str = Encoding.JSON) -> None:
        self._codec = event_codec(encoding)
        self.raw: Callable[[bytes], Event] = (
            msgspec.json.Decoder(Event)
            if self._codec.encoding is Encoding.JSON
            else msgspec.msgpack.Decoder(Event)
        ).decode

    def decode(
        self,
        value: bytes,
        headers: Headers,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Inbound:
        """Decode one wire event (see ``schemas.base.EventDecoder``)."""
        try:
            event = self.raw(value)
        except RAW_ERRORS:
            # The codec words the failure (and raises it): only failures pay for that.
            event = self._codec.decode(value, topic=topic, partition=partition, offset=offset)
        return (event, event.key, event.source_ts_ns)


def load_struct(path: str) -> type[msgspec.Struct]:
    """The ``msgspec.Struct`` class named ``module:Class``; a bad path is a SchemaError."""
    module_name, sep, name = path.partition(":")
    if not sep or not module_name or not name:
        raise SchemaError(f"event struct {path!r} is not of the form module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SchemaError(f"event struct {path!r}: cannot import {module_name}: {exc}") from exc
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
        raise SchemaError(f"event struct {path!r} is not a msgspec.Struct class")
    return cls


class StructDecoder:
    """The user's own ``msgspec.Struct``; the event reaches the feature code as decoded.

    ``key_field`` names the attribute holding the key (default ``key``: a field or a
    property); ``source_ts_field`` the one holding the event's own time in
    ``source_ts_unit`` (empty: the event has none).
    """

    __slots__ = ("_codec", "_key", "_ts", "_unit_ns")

    def __init__(
        self,
        struct: type[msgspec.Struct],
        encoding: Encoding | str = Encoding.JSON,
        *,
        key_field: str = "",
        source_ts_field: str = "",
        source_ts_unit: str = "ms",
    ) -> None:
        self._key = key_field or "key"
        self._ts = source_ts_field
        self._unit_ns = _unit(source_ts_unit)
        for attr in (self._key, self._ts):
            if attr and not hasattr(struct, attr) and attr not in struct.__struct_fields__:
                raise SchemaError(f"event struct {struct.__qualname__} has no field {attr!r}")
        self._codec: Codec[msgspec.Struct] = Codec(struct, encoding)

    def decode(
        self,
        value: bytes,
        headers: Headers,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Inbound:
        """Decode one user event (see ``schemas.base.EventDecoder``)."""
        event = self._codec.decode(value, topic=topic, partition=partition, offset=offset)
        key = getattr(event, self._key)
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str) or not key:
            raise DecodeError(
                f"key field `{self._key}` is {key!r}, expected a non-empty string",
                code="invalid_value",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        ts: int | None = None
        if self._ts:
            raw = getattr(event, self._ts)
            ts = None if raw is None else _to_ns(raw, self._unit_ns)
            if ts is None and raw is not None:
                raise DecodeError(
                    f"time field `{self._ts}` is {raw!r}, expected a number",
                    code="invalid_value",
                    topic=topic,
                    partition=partition,
                    offset=offset,
                )
        return (event, key, ts)


class FieldMap:
    """Builds one of weir's wire types (``kind``) from a record of named fields.

    ``values`` maps each field of the wire type to the input field that feeds it
    (``{"value": "temperature"}``); ``key_field`` feeds the type's key (``symbol`` or
    ``sensor_id``) and ``source_ts_field`` its ``source_ts_ns`` (in ``source_ts_unit``;
    Avro ``timestamp-*`` logical types are read as they are). The wire type's own bounds
    apply, so a NaN or an absurd value fails here, named by its input field.
    """

    __slots__ = (
        "_from",
        "_key_attr",
        "_unit_ns",
        "_values",
        "key_field",
        "kind",
        "ts_field",
        "type",
    )

    def __init__(
        self,
        *,
        kind: str,
        key_field: str,
        values: Mapping[str, str],
        source_ts_field: str = "",
        source_ts_unit: str = "ms",
    ) -> None:
        types = dict(zip(EVENT_KINDS, EVENT_TYPES, strict=True))
        if kind not in types:
            raise SchemaError(f"unknown event kind {kind!r}; expected one of {', '.join(types)}")
        if not key_field:
            raise SchemaError("a field map needs key_field (the input field holding the key)")
        self.kind = kind
        self.type: type[Any] = types[kind]
        self.key_field = key_field
        self.ts_field = source_ts_field
        self._unit_ns = _unit(source_ts_unit)
        self._key_attr = "sensor_id" if self.type is SensorReading else "symbol"
        own = {f.name: f for f in msgspec.structs.fields(self.type)}
        for name in values:
            if name not in own or name in (self._key_attr, "source_ts_ns"):
                raise SchemaError(f"field map: {kind} has no value field {name!r}")
        for name, field in own.items():
            if field.required and name != self._key_attr and name not in values:
                raise SchemaError(f"field map: {kind} needs {name!r}; map an input field to it")
        self._values = tuple(values.items())
        self._from = dict(values)
        self._from[self._key_attr] = key_field
        if source_ts_field:
            self._from["source_ts_ns"] = source_ts_field

    def apply(
        self,
        record: object,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Inbound:
        """The wire event built from ``record``; a missing or bad field is a DecodeError."""

        def fail(reason: str, code: str) -> DecodeError:
            return DecodeError(reason, code=code, topic=topic, partition=partition, offset=offset)

        if not isinstance(record, Mapping):
            raise fail(f"expected an object of fields, got {type(record).__name__}", "malformed")
        data: dict[str, Any] = {}
        for weir, src in ((self._key_attr, self.key_field), *self._values):
            try:
                data[weir] = record[src]
            except KeyError:
                raise fail(f"missing field `{src}` (for `{weir}`)", "missing_field") from None
        key = data[self._key_attr]
        if isinstance(key, int) and not isinstance(key, bool):
            data[self._key_attr] = str(key)
        if self.ts_field:
            try:
                raw = record[self.ts_field]
            except KeyError:
                raise fail(
                    f"missing field `{self.ts_field}` (for `source_ts_ns`)", "missing_field"
                ) from None
            ts = None if raw is None else _to_ns(raw, self._unit_ns)
            if ts is None and raw is not None:
                raise fail(f"field `{self.ts_field}` is {raw!r}, expected a time", "invalid_value")
            data["source_ts_ns"] = ts
        try:
            event = msgspec.convert(data, self.type)
        except msgspec.ValidationError as exc:
            raise fail(self._name_input(str(exc)), "invalid_value") from exc
        return (event, event.key, event.source_ts_ns)

    def _name_input(self, message: str) -> str:
        """msgspec's message with the wire field's path replaced by the input field."""
        head, sep, path = message.rpartition(" - at `$.")
        if not sep:
            return message
        weir = path.rstrip("`").split(".", 1)[0].split("[", 1)[0]
        src = self._from.get(weir)
        return message if src is None else f"{head} - at `{src}` (for `{weir}`)"


class FieldMapDecoder:
    """A JSON object or MessagePack map, turned into a wire event by a ``FieldMap``."""

    __slots__ = ("_codec", "field_map")

    def __init__(self, field_map: FieldMap, encoding: Encoding | str = Encoding.JSON) -> None:
        self.field_map = field_map
        self._codec: Codec[dict[str, Any]] = Codec(dict, encoding)

    def decode(
        self,
        value: bytes,
        headers: Headers,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Inbound:
        """Decode one record of fields (see ``schemas.base.EventDecoder``)."""
        record = self._codec.decode(value, topic=topic, partition=partition, offset=offset)
        return self.field_map.apply(record, topic=topic, partition=partition, offset=offset)
