"""``build_decoder``: the ``[schema]`` settings pick the decoder; bad ones are named at start."""

from __future__ import annotations

import sys

import pytest

from schemas.confluent import ConfluentDecoder, MemorySchemas, SchemaType
from schemas.decoders import FieldMapDecoder, StructDecoder, WireDecoder
from service.errors import ConfigError
from service.inbound import build_decoder
from service.registry import RegistryClient
from service.settings import load_settings


def _settings(**env: str) -> object:
    return load_settings(env={f"WEIR_SCHEMA__{k.upper()}": v for k, v in env.items()})


SENSOR_MAP = {"key_field": "device", "values": '{ value = "temp" }'}


def test_default_is_weirs_wire_types() -> None:
    """Without a ``[schema]`` section the input is weir's own wire types."""
    assert isinstance(build_decoder(load_settings(env={})), WireDecoder)


def test_each_format_builds_its_decoder() -> None:
    """struct, fields, avro and json_schema each build their decoder from the settings."""
    pytest.importorskip("fastavro", reason="the registry extra is not installed")
    pytest.importorskip("jsonschema", reason="the registry extra is not installed")
    struct = build_decoder(
        _settings(format="struct", struct="schemas.events:SensorReading", key_field="sensor_id")
    )
    assert isinstance(struct, StructDecoder)
    assert isinstance(build_decoder(_settings(format="fields", **SENSOR_MAP)), FieldMapDecoder)
    avro = build_decoder(
        _settings(
            format="avro", registry_url="http://r:8081", registry_timeout_ms="250", **SENSOR_MAP
        )
    )
    assert isinstance(avro, ConfluentDecoder) and avro.schema_type is SchemaType.AVRO
    assert isinstance(avro.source, RegistryClient)
    assert avro.source.url == "http://r:8081" and avro.source.timeout_s == 0.25
    schemas = MemorySchemas()
    js = build_decoder(_settings(format="json_schema", **SENSOR_MAP), source=schemas)
    assert isinstance(js, ConfluentDecoder) and js.source is schemas
    assert js.schema_type is SchemaType.JSON


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"format": "struct"}, '[schema] format = "struct" needs struct = "module:Class"'),
        (
            {"format": "struct", "struct": "nowhere"},
            "[schema]: event struct 'nowhere' is not of the form module:Class",
        ),
        (
            {"format": "fields", "key_field": "d"},
            "[schema]: field map: sensor needs 'value'; map an input field to it",
        ),
        ({"format": "avro", **SENSOR_MAP}, '[schema] format = "avro" needs registry_url'),
        (
            {"format": "avro", "registry_url": "ftp://x", **SENSOR_MAP},
            "[schema]: schema registry URL 'ftp://x' is not http:// or https://",
        ),
        (
            {"format": "fields", "source_ts_unit": "h", **SENSOR_MAP},
            "[schema]: unknown time unit 'h'; expected one of ns, us, ms, s",
        ),
    ],
)
def test_bad_schema_settings_are_named(env: dict[str, str], message: str) -> None:
    """Each bad ``[schema]`` setting stops the start with a ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        build_decoder(_settings(**env))
    assert str(info.value) == message


def test_unknown_format_is_a_settings_error() -> None:
    """A format weir does not know is refused when the settings load."""
    with pytest.raises(ConfigError) as info:
        _settings(format="protobuf")
    assert str(info.value).startswith(
        "bad settings from defaults + environment (WEIR_SCHEMA__FORMAT)"
    )


@pytest.mark.parametrize(
    ("fmt", "module", "message"),
    [
        ("avro", "fastavro", "Avro input needs fastavro: pip install 'weir[registry]'"),
        (
            "json_schema",
            "jsonschema",
            "JSON Schema input needs jsonschema: pip install 'weir[registry]'",
        ),
    ],
)
def test_missing_schema_library_is_named_at_start(
    monkeypatch: pytest.MonkeyPatch, fmt: str, module: str, message: str
) -> None:
    """Without the registry extra, an Avro or JSON Schema input stops the start naming it."""
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigError) as info:
        build_decoder(_settings(format=fmt, **SENSOR_MAP), source=MemorySchemas())
    assert str(info.value) == f"[schema]: {message}"
