"""Every wire type survives a produce/consume round trip through both brokers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import (
    Encoding,
    dead_letter_codec,
    decision_codec,
    event_codec,
)
from schemas.codec import Codec
from service.broker import Tansu
from tests.kafka_io import read_records
from tests.wire_samples import DEAD, DECISION, SAMPLES


def _cases() -> list[tuple[Codec[Any], Any]]:
    cases: list[tuple[Codec[Any], Any]] = []
    for enc in Encoding:
        cases += [(event_codec(enc), e) for e in SAMPLES]
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
    records = await read_records(bootstrap, topic, len(cases), timeout_s=30, fetch_max_wait_ms=20)
    got = [r.value for r in records]
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
