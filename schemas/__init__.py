"""weir's wire types, codecs and feed file format: the bottom layer, importing nothing of ours."""

from schemas.base import EventDecoder, Inbound, RegisteredSchema, SchemaSource
from schemas.codec import Codec, Encoding, dead_letter_codec, decision_codec, event_codec
from schemas.confluent import ConfluentDecoder, MemorySchemas
from schemas.decision import Anomaly, DeadLetter, Decision, Stamps, Status
from schemas.decoders import FieldMap, FieldMapDecoder, StructDecoder, WireDecoder
from schemas.errors import DecodeError, FeedError, SchemaError, WeirError
from schemas.events import (
    EVENT_KINDS,
    EVENT_TYPES,
    SCHEMA_VERSION,
    BookDiff,
    BookSnapshot,
    Event,
    Quote,
    SensorReading,
    Trade,
)
from schemas.features import FeatureSpec, KeyState, SensorState, Task, TradingState
from schemas.feed import FeedReader, FeedRecord, FeedWriter

__all__ = [
    "EVENT_KINDS",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "Anomaly",
    "BookDiff",
    "BookSnapshot",
    "Codec",
    "ConfluentDecoder",
    "DeadLetter",
    "Decision",
    "DecodeError",
    "Encoding",
    "Event",
    "EventDecoder",
    "FeatureSpec",
    "FeedError",
    "FeedReader",
    "FeedRecord",
    "FeedWriter",
    "FieldMap",
    "FieldMapDecoder",
    "Inbound",
    "KeyState",
    "MemorySchemas",
    "Quote",
    "RegisteredSchema",
    "SchemaError",
    "SchemaSource",
    "SensorReading",
    "SensorState",
    "Stamps",
    "Status",
    "StructDecoder",
    "Task",
    "Trade",
    "TradingState",
    "WeirError",
    "WireDecoder",
    "dead_letter_codec",
    "decision_codec",
    "event_codec",
]
