"""Avro input through a schema registry, served against the real broker.

The registry here is a STAND-IN: a minimal HTTP server in this test implementing the two
Confluent Schema Registry endpoints weir's client and a producer use (``POST
/subjects/{subject}/versions`` to register, ``GET /schemas/ids/{id}`` to look up). Apicurio
Registry (``io.apicurio:apicurio-registry-app``) cannot run from Maven Central here: 2.6.x
depends on Apicurio modules Central does not hold, 3.0.x's parent POM is not on Central,
3.3.x needs a Red Hat build of Quarkus that is not on Central, and every published app jar
is a Quarkus module before its build step (no runner jar), so there is nothing to start.
The broker is real; the records are Avro in the Confluent wire format, written by fastavro.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from engines.fake import write_tiny_trading_bundle
from schemas.codec import dead_letter_codec, decision_codec
from schemas.confluent import frame
from schemas.decision import Status
from service.settings import Settings, load_settings
from tests.kafka_io import read_records, service_env, serving

fastavro = pytest.importorskip("fastavro", reason="the registry extra is not installed")

WINDOW = 4
KEYS = ("BTCUSDT", "ETHUSDT")
TICK_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "instrument": {"type": "string"},
        "bid": {"type": "number"},
        "bid_size": {"type": "number"},
        "ask": {"type": "number"},
        "ask_size": {"type": "number"},
        "exchange_time": {"type": "integer"},
    },
    "required": ["instrument", "bid", "bid_size", "ask", "ask_size", "exchange_time"],
}
QUOTE_SCHEMA = {
    "type": "record",
    "name": "Tick",
    "namespace": "example.market",
    "fields": [
        {"name": "instrument", "type": "string"},
        {"name": "bid", "type": "double"},
        {"name": "bid_size", "type": "double"},
        {"name": "ask", "type": "double"},
        {"name": "ask_size", "type": "double"},
        {"name": "exchange_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


class StandInRegistry(ThreadingHTTPServer):
    """A stand-in Schema Registry (Confluent API subset), counting lookups per id."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.schemas: dict[int, dict[str, str]] = {}
        self.lookups: dict[int, int] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: StandInRegistry

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
        if match is None:
            self._answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
            return
        schema_id = int(match.group(1))
        with self.server.lock:
            self.server.lookups[schema_id] = self.server.lookups.get(schema_id, 0) + 1
            found = self.server.schemas.get(schema_id)
        if found is None:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})
        else:
            self._answer(200, found)

    def do_POST(self) -> None:
        if re.fullmatch(r"/subjects/[^/]+/versions", self.path) is None:
            self._answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            schema_id = len(self.server.schemas) + 1
            entry = {"schema": body["schema"]}
            if body.get("schemaType", "AVRO") != "AVRO":
                entry["schemaType"] = body["schemaType"]
            self.server.schemas[schema_id] = entry
        self._answer(200, {"id": schema_id})

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def registry() -> Iterator[StandInRegistry]:
    server = StandInRegistry()
    thread = threading.Thread(target=server.serve_forever, name="stand-in-registry", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _register(url: str, subject: str, schema: dict[str, Any], schema_type: str = "AVRO") -> int:
    """Register ``schema`` as a producer's serializer would; returns its id."""
    request = urllib.request.Request(  # noqa: S310 - loopback stand-in
        f"{url}/subjects/{subject}/versions",
        data=json.dumps({"schema": json.dumps(schema), "schemaType": schema_type}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return int(json.loads(response.read())["id"])


def _tick(schema_id: int, i: int) -> tuple[bytes, bytes]:
    key = KEYS[i % len(KEYS)]
    record = {
        "instrument": key,
        "bid": 100.0 + i % 5,
        "bid_size": 1.0,
        "ask": 100.5 + i % 5,
        "ask_size": 2.0,
        "exchange_time": 1_700_000_000_000 + i,
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(QUOTE_SCHEMA), record)
    return key.encode(), frame(schema_id, buf.getvalue())


def _settings(
    bootstrap: str, topics: tuple[str, str, str], bundle: Path, registry_url: str, fmt: str
) -> Settings:
    """Serve ``topics`` (input, decisions, dead letters) reading ``fmt`` ticks as quotes."""
    inp, out, dlq = topics
    return load_settings(
        env={
            **service_env(bootstrap, inp=inp, out=out, dlq=dlq, bundle=bundle),
            "WEIR_KAFKA__FETCH_MAX_WAIT_MS": "5",
            "WEIR_ENGINE__MAX_BATCH": "16",
            "WEIR_ENGINE__WARMUP_ITERS": "20",
            "WEIR_SCHEDULER__BUDGET_MS": "200",
            "WEIR_SCHEMA__FORMAT": fmt,
            "WEIR_SCHEMA__REGISTRY_URL": registry_url,
            "WEIR_SCHEMA__KIND": "quote",
            "WEIR_SCHEMA__KEY_FIELD": "instrument",
            "WEIR_SCHEMA__SOURCE_TS_FIELD": "exchange_time",
            "WEIR_SCHEMA__VALUES": (
                '{ bid_px = "bid", bid_qty = "bid_size", ask_px = "ask", ask_qty = "ask_size" }'
            ),
        }
    )


async def test_avro_input_decides_and_dead_letters(
    kafka_bootstrap: str, topic_factory: Any, registry: StandInRegistry, tmp_path: Path
) -> None:
    """Confluent-framed Avro ticks are decided per instrument with the Avro event time;
    wrong magic byte, unknown schema id and a truncated payload are dead-lettered with their
    reasons; the registry is asked once per schema id however many records carry it."""
    inp, out, dlq = [await topic_factory(1, prefix=p) for p in ("in", "out", "dlq")]
    write_tiny_trading_bundle(tmp_path / "b", window=WINDOW, model_version="avro-1")
    schema_id = await asyncio.to_thread(_register, registry.url, f"{inp}-value", QUOTE_SCHEMA)
    settings = _settings(kafka_bootstrap, (inp, out, dlq), tmp_path / "b", registry.url, "avro")
    items = [_tick(schema_id, i) for i in range(20)]
    truncated = items[5][1][:-6]
    bad = [
        (b"BTCUSDT", b"\x01" + items[0][1][1:]),
        (b"BTCUSDT", frame(schema_id + 41, items[0][1][5:])),
        (b"BTCUSDT", truncated),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for k, v in items[:10] + bad + items[10:]:
            await producer.send_and_wait(inp, value=v, key=k)
    finally:
        await producer.stop()
    async with serving(settings):
        dead = await read_records(kafka_bootstrap, dlq, 3, fetch_max_wait_ms=50)
        decided = await read_records(kafka_bootstrap, out, 20, fetch_max_wait_ms=50)
    decisions = [decision_codec().decode(r.value) for r in decided]
    assert sorted(d.offset for d in decisions) == [*range(10), *range(13, 23)]
    assert {d.key for d in decisions} == set(KEYS)
    assert {d.status for d in decisions} == {Status.OK, Status.WARMING}
    assert [d.status for d in decisions].count(Status.OK) == 20 - len(KEYS) * (WINDOW - 1)
    first = next(d for d in decisions if d.offset == 0)
    assert first.stamps.source_ts_ns == 1_700_000_000_000 * 1_000_000
    letters = [dead_letter_codec().decode(r.value) for r in dead]
    assert [(d.offset, d.reason) for d in letters] == [
        (10, "bad_framing"),
        (11, "unknown_schema"),
        (12, "schema_mismatch"),
    ]
    assert letters[1].detail == (
        f"decode failed: schema id {schema_id + 41} is not in the registry "
        f"- topic={inp} partition=0 offset=11"
    )
    assert letters[2].value == truncated and letters[2].key == b"BTCUSDT"
    assert letters[2].detail.startswith(
        f"decode failed: payload does not match AVRO schema id {schema_id}: "
    )
    assert registry.lookups == {schema_id: 1, schema_id + 41: 1}


async def test_json_schema_input_decides_and_dead_letters_mismatches(
    kafka_bootstrap: str, topic_factory: Any, registry: StandInRegistry, tmp_path: Path
) -> None:
    """Confluent-framed JSON ticks valid under their JSON Schema are decided; one that
    breaks the schema is dead-lettered as ``schema_mismatch`` naming the rule it broke."""
    inp, out, dlq = [await topic_factory(1, prefix=p) for p in ("in", "out", "dlq")]
    write_tiny_trading_bundle(tmp_path / "b", window=WINDOW, model_version="json-1")
    sid = await asyncio.to_thread(_register, registry.url, f"{inp}-value", TICK_JSON_SCHEMA, "JSON")
    settings = _settings(
        kafka_bootstrap, (inp, out, dlq), tmp_path / "b", registry.url, "json_schema"
    )

    def tick(i: int, bid: object = 100.0) -> bytes:
        record = {
            "instrument": KEYS[i % 2],
            "bid": bid,
            "bid_size": 1.0,
            "ask": 100.5,
            "ask_size": 2.0,
            "exchange_time": 1_700_000_000_000 + i,
        }
        return frame(sid, json.dumps(record).encode())

    values = [tick(i) for i in range(6)] + [tick(6, bid="cheap")] + [tick(i) for i in range(7, 12)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(inp, value=v, key=b"k")
    finally:
        await producer.stop()
    async with serving(settings):
        dead = await read_records(kafka_bootstrap, dlq, 1, fetch_max_wait_ms=50)
        decided = await read_records(kafka_bootstrap, out, 11, fetch_max_wait_ms=50)
    decisions = [decision_codec().decode(r.value) for r in decided]
    assert sorted(d.offset for d in decisions) == [*range(6), *range(7, 12)]
    statuses = {d.offset: d.status for d in decisions}
    assert statuses == {
        **dict.fromkeys(range(6), Status.WARMING),
        **dict.fromkeys(range(7, 12), Status.OK),
    }, [(d.offset, d.status, d.error) for d in decisions]
    (letter,) = [dead_letter_codec().decode(r.value) for r in dead]
    assert (letter.offset, letter.reason) == (6, "schema_mismatch")
    assert letter.detail == (
        f"decode failed: payload does not match JSON schema id {sid}: "
        f"'cheap' is not of type 'number' at $.bid - topic={inp} partition=0 offset=6"
    )
    assert registry.lookups == {sid: 1}
