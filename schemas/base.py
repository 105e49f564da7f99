"""The decoding seam: how a record's bytes become what the pipeline needs.

An ``EventDecoder`` turns one record's value (and headers) into an ``Inbound``: the event
object the feature code folds into its key's window, the key, and the event's own time.
It is built once at start from the settings (``service.inbound.build_decoder``) and called
once per record; the implementations are in ``schemas.decoders`` (weir's wire types, a
user ``msgspec.Struct``, JSON / MessagePack through a field map) and ``schemas.confluent``
(Avro and JSON Schema in the Confluent Schema Registry wire format).

Call contract of ``EventDecoder.decode``: called on the event loop, in partition order;
pure apart from the first record of a schema id, which asks the ``SchemaSource`` once
(that call may block for one registry round trip, bounded by its timeout). A record that
does not decode raises ``schemas.errors.DecodeError`` whose ``code`` is the dead-letter
reason and whose message names the bad value and the record's coordinates.

A ``SchemaSource`` answers a schema id with the registered schema, or ``None`` when the
registry does not know the id. It may block (HTTP); an unreachable registry raises an
error of its own package (``service.registry.RegistryError``), never ``DecodeError``:
the record is not at fault, so it is not dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

Headers = Sequence[tuple[str, bytes]]


Inbound = tuple[Any, str, int | None]
"""One decoded record, ``(event, key, source_ts_ns)``: what the feature code receives (a weir
wire type, or the user's own Struct), the partitioning and state key, and the event's own
wall time in ns since the epoch (``None`` when it has none). A plain tuple: one is made per
record, and the pipeline unpacks it at once.
"""


class EventDecoder(Protocol):
    """Turns a record's value into an ``Inbound`` (see the module docstring)."""

    def decode(
        self,
        value: bytes,
        headers: Headers,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Inbound:
        """Decode ``value``; raise ``DecodeError`` naming the bad value and coordinates."""
        ...


class RegisteredSchema(NamedTuple):
    """A schema as a registry stores it."""

    schema_type: str
    """``AVRO``, ``JSON`` or ``PROTOBUF`` (the Confluent API's ``schemaType``)."""
    schema: str
    """The schema text."""


class SchemaSource(Protocol):
    """Looks up a registered schema by id (see the module docstring)."""

    def schema(self, schema_id: int) -> RegisteredSchema | None:
        """The schema registered under ``schema_id``, or ``None`` when there is none."""
        ...
