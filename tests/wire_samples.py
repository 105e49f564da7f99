"""Wire samples shared by the schema unit tests and the broker round-trip tests: one of
every event kind, a decision and a dead letter, with every optional field exercised."""

from __future__ import annotations

from schemas import (
    Anomaly,
    BookDiff,
    BookSnapshot,
    DeadLetter,
    Decision,
    Quote,
    SensorReading,
    Stamps,
    Status,
    Trade,
)
from schemas.events import Event

SAMPLES: list[Event] = [
    Quote(
        symbol="BTCUSDT",
        bid_px=61234.01,
        bid_qty=0.5,
        ask_px=61234.02,
        ask_qty=1.25,
        update_id=42,
        source_ts_ns=1_723_075_200_000_000_000,
    ),
    BookDiff(
        symbol="BTCUSDT",
        first_update_id=10,
        last_update_id=12,
        bids=[(61234.0, 0.0), (61233.5, 2.0)],
        asks=[(61234.5, 1.0)],
        source_ts_ns=1_723_075_200_100_000_000,
    ),
    BookSnapshot(symbol="ETHUSDT", last_update_id=9, bids=[(2500.0, 3.0)], asks=[(2501.0, 4.0)]),
    Trade(
        symbol="BTCUSDT",
        trade_id=7,
        price=61234.01,
        qty=0.001,
        buyer_is_maker=True,
        source_ts_ns=1,
    ),
    SensorReading(sensor_id="machine_temperature", value=-3.5, source_ts_ns=5, unit="C"),
]

DECISION = Decision(
    topic="quotes",
    partition=3,
    offset=1200,
    key="BTCUSDT",
    model_version="student-abc123",
    status=Status.OK,
    label="BUY",
    scores=[0.1, 0.2, 0.7],
    batch_size=16,
    stamps=Stamps(source_ts_ns=1, kafka_ts_ns=2, ingest_wall_ns=3, publish_wall_ns=9),
    anomaly=Anomaly(error=2.5, likelihood=0.999995, log_likelihood=0.53, threshold=0.5),
)

DEAD = DeadLetter(
    topic="quotes",
    partition=0,
    offset=5,
    reason="invalid_value",
    detail="decode failed: ...",
    value=b"\xff\x00 not json",
    key=b"BTCUSDT",
    headers=[("trace", b"\x01\x02")],
    kafka_ts_ns=10,
    dead_wall_ns=11,
)
