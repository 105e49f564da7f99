"""The input's event decoder, built once at start from ``[schema]`` (``SchemaSettings``).

``build_decoder`` picks the ``schemas.base.EventDecoder`` the settings name and checks
its settings before the first record: a struct path that does not import, a field map
that leaves a field of its wire type unfed, or an Avro format without a registry URL is a
``ConfigError`` naming the setting. The Schema Registry client (``service.registry``) is
made here, the only I/O a decoder does; ``source`` replaces it (tests pass
``schemas.confluent.MemorySchemas`` or a client of their own).
"""

from __future__ import annotations

from schemas.base import EventDecoder, SchemaSource
from schemas.confluent import ConfluentDecoder, SchemaType
from schemas.decoders import FieldMap, FieldMapDecoder, StructDecoder, WireDecoder, load_struct
from schemas.errors import SchemaError
from service.errors import ConfigError
from service.registry import RegistryClient, RegistryError
from service.settings import InputFormat, Settings

_CONFLUENT = {InputFormat.AVRO: SchemaType.AVRO, InputFormat.JSON_SCHEMA: SchemaType.JSON}


def build_decoder(settings: Settings, *, source: SchemaSource | None = None) -> EventDecoder:
    """The decoder ``settings.schema`` names; a bad setting is a ConfigError."""
    s = settings.schema
    encoding = settings.kafka.input_encoding
    fmt = s.format
    try:
        if fmt is InputFormat.WEIR:
            return WireDecoder(encoding)
        if fmt is InputFormat.STRUCT:
            if not s.struct:
                raise ConfigError('[schema] format = "struct" needs struct = "module:Class"')
            return StructDecoder(
                load_struct(s.struct),
                encoding,
                key_field=s.key_field,
                source_ts_field=s.source_ts_field,
                source_ts_unit=s.source_ts_unit,
            )
        field_map = FieldMap(
            kind=s.kind,
            key_field=s.key_field,
            values=s.values,
            source_ts_field=s.source_ts_field,
            source_ts_unit=s.source_ts_unit,
        )
        if fmt is InputFormat.FIELDS:
            return FieldMapDecoder(field_map, encoding)
        if source is None:
            if not s.registry_url:
                raise ConfigError(f'[schema] format = "{fmt}" needs registry_url')
            source = RegistryClient(s.registry_url, timeout_s=s.registry_timeout_ms / 1000)
        return ConfluentDecoder(source, field_map, _CONFLUENT[fmt])
    except (SchemaError, RegistryError) as exc:
        raise ConfigError(f"[schema]: {exc}") from exc
