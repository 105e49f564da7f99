"""Every wire type survives a produce/consume round trip through both brokers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import (
    BookDiff,
    BookSnapshot,
    DeadLetter,
    Decision,
    Encoding,
    Quote,
    SensorReading,
    Stamps,
    Status,
    Trade,
    dead_letter_codec,
    decision_codec,
    event_codec,
)
from schemas.codec import Codec
from service.broker import Tansu

EVENTS: list[Any] = [
    Quote(
        symbol="BTCUSDT", bid_px=61234.01, bid_qty=0.5, ask_px=61234.02, ask_qty=1.25, update_id=9
    ),
    BookDiff(
        symbol="BTCUSDT",
        first_update_id=1,
        last_update_id=2,
        bids=[(61234.0, 0.0), (61233.5, 2.0)],
        asks=[(61234.5, 1.0)],
        source_ts_ns=1_723_075_200_000_000_000,
    ),
    BookSnapshot(symbol="ETHUSDT", last_update_id=7, bids=[(2500.0, 3.0)], asks=[(2501.0, 4.0)]),
    Trade(symbol="BTCUSDT", trade_id=3, price=61234.01, qty=0.001, buyer_is_maker=False),
    SensorReading(sensor_id="machine_temperature", value=71.5, source_ts_ns=5, unit="F"),
]
DECISION = Decision(
    topic="in",
    partition=1,
    offset=42,
    key="BTCUSDT",
    model_version="m-1",
    status=Status.OK,
    label="BUY",
    scores=[0.1, 0.2, 0.7],
    batch_size=8,
    stamps=Stamps(ingest_wall_ns=1, dispatch_wall_ns=2, infer_done_wall_ns=3, publish_wall_ns=4),
)
DEAD = DeadLetter(
    topic="in",
    partition=0,
    offset=5,
    reason="malformed",
    detail="decode failed: Input data was truncated",
    value=b"\x00\xff{",
    key=b"k",
    headers=[("trace", b"\x01")],
)


def _cases() -> list[tuple[Codec[Any], Any]]:
    cases: list[tuple[Codec[Any], Any]] = []
    for enc in Encoding:
        cases += [(event_codec(enc), e) for e in EVENTS]
        cases += [(decision_codec(enc), DECISION), (dead_letter_codec(enc), DEAD)]
    return cases


async def _round_trip(bootstrap: str) -> None:
    topic = f"weir-wire-{id(object())}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    cases = _cases()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for codec, obj in cases:
            await producer.send_and_wait(topic, codec.encode(obj), key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=20
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < len(cases):
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    got.extend(r.value for r in recs)
    finally:
        await consumer.stop()
    assert [codec.decode(raw) for (codec, _), raw in zip(cases, got, strict=True)] == [
        obj for _, obj in cases
    ]


async def test_every_wire_type_through_the_session_broker(kafka_bootstrap: str) -> None:
    """Events, decisions and dead letters, JSON and MessagePack, decode to equal values."""
    await _round_trip(kafka_bootstrap)


@pytest.fixture
async def tansu(tmp_path: Path) -> AsyncIterator[str]:
    broker = Tansu(state_dir=tmp_path / "tansu")
    bootstrap = await asyncio.to_thread(broker.start)
    try:
        yield bootstrap
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.mark.embedded
async def test_every_wire_type_through_the_embedded_broker(tansu: str) -> None:
    """The same round trip through the embedded Tansu broker gives equal values."""
    await _round_trip(tansu)
