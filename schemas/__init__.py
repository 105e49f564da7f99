"""weir's wire types, codecs and feed file format: the bottom layer, importing nothing of ours."""

from schemas.codec import Codec, Encoding, dead_letter_codec, decision_codec, event_codec
from schemas.decision import Anomaly, DeadLetter, Decision, Stamps, Status
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
    "DeadLetter",
    "Decision",
    "DecodeError",
    "Encoding",
    "Event",
    "FeatureSpec",
    "FeedError",
    "FeedReader",
    "FeedRecord",
    "FeedWriter",
    "KeyState",
    "Quote",
    "SchemaError",
    "SensorReading",
    "SensorState",
    "Stamps",
    "Status",
    "Task",
    "Trade",
    "TradingState",
    "WeirError",
    "dead_letter_codec",
    "decision_codec",
    "event_codec",
]
