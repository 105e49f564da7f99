"""Each package's public surface is exactly its sorted, importable ``__all__``."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "schemas": [
        "EVENT_KINDS",
        "EVENT_TYPES",
        "SCHEMA_VERSION",
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
    ],
    "service": [
        "Clients",
        "ConfigError",
        "MemoryKafka",
        "MemoryRecord",
        "MemorySink",
        "OffsetTracker",
        "Pipeline",
        "PublishError",
        "Record",
        "ServiceError",
        "Settings",
        "Sink",
        "StateStore",
        "TaskDied",
        "TaskSupervisor",
        "load_settings",
    ],
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_public_surface_pinned(package: str) -> None:
    """``__all__`` lists exactly the expected names, each importable from the package."""
    mod = importlib.import_module(package)
    assert mod.__all__ == EXPECTED[package]
    for name in mod.__all__:
        assert getattr(mod, name) is not None
