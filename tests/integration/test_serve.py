"""`weir serve` against a real broker: every input decided, nothing lost, commits honest."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from engines.fake import write_tiny_trading_bundle
from schemas.codec import dead_letter_codec, decision_codec, event_codec
from schemas.decision import Decision, Status
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.backpressure import Level
from service.errors import ServiceError, TopicError
from service.kafka import KafkaTopicAdmin
from service.runtime import Runtime
from service.settings import Settings, load_settings
from service.tasks import TaskDied
from service.topics import InputWatch

WINDOW = 4
KEYS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "b"
    write_tiny_trading_bundle(path, window=WINDOW, model_version="it-1")
    return path


@pytest.fixture
def make_settings(kafka_bootstrap: str, bundle_dir: Path) -> Callable[..., Settings]:
    def make(inp: str, out: str, dlq: str, group: str, **env: str) -> Settings:
        base = {
            "WEIR_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "WEIR_KAFKA__INPUT_TOPICS": f'["{inp}"]',
            "WEIR_KAFKA__DECISION_TOPIC": out,
            "WEIR_KAFKA__DLQ_TOPIC": dlq,
            "WEIR_KAFKA__GROUP_ID": group,
            "WEIR_KAFKA__FETCH_MAX_WAIT_MS": "5",
            "WEIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "WEIR_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "WEIR_ENGINE__BUNDLE": str(bundle_dir),
            "WEIR_ENGINE__MAX_BATCH": "16",
            "WEIR_ENGINE__WARMUP_ITERS": "20",
            "WEIR_SCHEDULER__BUDGET_MS": "200",
            "WEIR_DELIVERY__COMMIT_INTERVAL_MS": "50",
            "WEIR_LOG__LEVEL": "warning",
        }
        base.update(env)
        return load_settings(env=base)

    return make


@pytest.fixture
async def topics(topic_factory: Any) -> dict[str, str]:
    return {
        "inp": await topic_factory(3, prefix="in"),
        "out": await topic_factory(3, prefix="out"),
        "dlq": await topic_factory(1, prefix="dlq"),
        "group": f"g-{id(object())}",
    }


def _quote(i: int) -> tuple[bytes, bytes]:
    key = KEYS[i % len(KEYS)]
    q = Quote(symbol=key, bid_px=100.0 + (i % 5), bid_qty=1.0, ask_px=100.5 + (i % 5), ask_qty=1.0)
    return key.encode(), event_codec().encode(q)


async def _produce(
    bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]
) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        futs = [await producer.send(topic, value=v, key=k) for k, v in items]
        metas = await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


async def _read(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    timeout: float = 60.0,
    committed_only: bool = False,
    distinct: bool = False,
) -> list[Any]:
    """Records of ``topic`` until ``n`` (``distinct``: ``n`` different decided inputs)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    got: list[Any] = []
    coords: set[tuple[int, int]] = set()
    codec = decision_codec()
    try:
        async with asyncio.timeout(timeout):
            while (len(coords) if distinct else len(got)) < n:
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    got.extend(recs)
                    if distinct:
                        for r in recs:
                            d = codec.decode(r.value)
                            coords.add((d.partition, d.offset))
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return got


_END = b"weir-test-end"


async def _read_to_end(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of ``topic`` written so far: an end marker goes to each partition, and
    each partition is read up to its marker (Kafka keeps a partition's order)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p in range(partitions):
            await producer.send_and_wait(topic, value=_END, key=_END, partition=p)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    got: list[Any] = []
    ended: set[int] = set()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(30):
            while len(ended) < partitions:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, recs in batch.items():
                    for r in recs:
                        if r.key == _END:
                            ended.add(tp.partition)
                        elif tp.partition not in ended:
                            got.append(r)
    finally:
        await consumer.stop()
    return got


class _Observed(Runtime):
    """A Runtime whose rebalances notify ``changed``: tests wait on it instead of polling."""

    def __init__(self, *args: Any, changed: asyncio.Condition, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.changed = changed

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        await super()._on_assigned(assigned)
        async with self.changed:
            self.changed.notify_all()

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        await super()._on_revoked(revoked)
        async with self.changed:
            self.changed.notify_all()


async def _until(changed: asyncio.Condition, predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds, checked after each rebalance (at most 30 s)."""
    async with asyncio.timeout(30), changed:
        await changed.wait_for(predicate)


@contextlib.asynccontextmanager
async def _serving(
    settings: Settings, *, changed: asyncio.Condition | None = None, **kw: Any
) -> AsyncIterator[_Observed]:
    """A Runtime serving in a task, yielded once ready (or its start-up error, raised)."""
    rt = _Observed(settings, changed=changed or asyncio.Condition(), **kw)
    task = asyncio.create_task(rt.run(install_signals=False))
    ready = asyncio.create_task(_until(rt.changed, lambda: rt.ready))
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
            raise AssertionError(f"stopped before it was ready, status {task.result()}")
        ready.result()
        yield rt
    finally:
        rt.stop()
        status = await asyncio.wait_for(task, 30)
        assert status == 0


def _owned(rt: Runtime) -> int:
    """How many partitions ``rt`` has assigned (0 before it has a consumer)."""
    return len(rt.consumer.assignment()) if rt.consumer is not None else 0


def _decisions(records: list[Any]) -> list[Decision]:
    codec = decision_codec()
    return [codec.decode(r.value) for r in records]


async def test_n_in_n_out_in_key_order(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """Every input gets one decision whose coordinates match it, each key's in order."""
    s = make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"])
    n = 400
    async with _serving(s):
        coords = await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(n)])
        got = await _read(kafka_bootstrap, topics["out"], n)
    decisions = _decisions(got)
    assert len(decisions) >= n
    seen = {(d.partition, d.offset) for d in decisions}
    assert seen == set(coords)
    by_key: dict[str, list[int]] = {}
    for rec, d in zip(got, decisions, strict=True):
        assert rec.key == d.key.encode()
        assert dict(rec.headers)["weir-model"] == b"it-1"
        assert dict(rec.headers)["weir-status"] == d.status.value.encode()
        by_key.setdefault(f"{d.key}/{d.partition}", []).append(d.offset)
    for offs in by_key.values():
        assert offs == sorted(offs)
    odd = [d for d in decisions if d.status not in (Status.OK, Status.WARMING)]
    assert not odd, odd[:3]


async def test_bad_records_dead_lettered(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """Malformed inputs land on the DLQ with their reason; good ones around them are decided."""
    s = make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"])
    items = [_quote(i) for i in range(10)]
    items.insert(3, (b"BTCUSDT", b"{nope"))
    items.insert(7, (b"BTCUSDT", b'{"kind":"quote","symbol":"BTCUSDT","bid_px":NaN}'))
    items.insert(9, (b"BTCUSDT", b'{"kind":"sensor","sensor_id":"x","value":1e99}'))
    async with _serving(s):
        await _produce(kafka_bootstrap, topics["inp"], items)
        dead = await _read(kafka_bootstrap, topics["dlq"], 3)
        good = await _read(kafka_bootstrap, topics["out"], 10)
    letters = [dead_letter_codec().decode(r.value) for r in dead]
    assert sorted(d.reason for d in letters) == ["invalid_value", "malformed", "malformed"]
    assert {d.value for d in letters} == {items[3][1], items[7][1], items[9][1]}
    assert all(d.topic == topics["inp"] and d.detail.startswith("decode failed") for d in letters)
    assert len(_decisions(good)) == 10


async def test_restart_resumes_after_last_commit(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """A clean stop commits everything decided; a restart decides only what came after."""
    s = make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"])
    async with _serving(s):
        await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(100)])
        first = await _read(kafka_bootstrap, topics["out"], 100)
    assert len(first) == 100
    await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(100, 150)])
    async with _serving(s):
        everything = await _read(kafka_bootstrap, topics["out"], 150)
    decisions = _decisions(everything)
    assert len(decisions) == 150  # no reprocessing: the stop committed its tail
    assert len({(d.partition, d.offset) for d in decisions}) == 150


@pytest.mark.requires_kafka(reason="two consumers in one group need real rebalances")
async def test_two_workers_split_and_hand_over(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """Two workers share the partitions; when one stops, the other takes over and nothing is lost."""
    s = make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"])
    changed = asyncio.Condition()
    async with _serving(s, worker_index=0, changed=changed) as a:
        async with _serving(s, worker_index=1, changed=changed) as b:
            await _until(
                changed, lambda: _owned(a) + _owned(b) == 3 and min(_owned(a), _owned(b)) > 0
            )
            await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(200)])
            first = await _read(kafka_bootstrap, topics["out"], 200, distinct=True)
            assert len({(d.partition, d.offset) for d in _decisions(first)}) == 200
        # b stopped (drained and committed); a must own all partitions now
        await _until(changed, lambda: _owned(a) == 3)
        await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(200, 300)])
        got = await _read(kafka_bootstrap, topics["out"], 300)
    decisions = _decisions(got)
    assert len({(d.partition, d.offset) for d in decisions}) == 300
    assert a.rebalances >= 1


@pytest.mark.requires_transactions
async def test_exactly_once_with_abort(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """In exactly-once mode a read_committed reader sees exactly one decision per input, even after an aborted transaction."""
    s = make_settings(
        topics["inp"],
        topics["out"],
        topics["dlq"],
        topics["group"],
        WEIR_DELIVERY__MODE="exactly_once",
        WEIR_DELIVERY__FLUSH_INTERVAL_MS="100",
    )
    aborted = []

    def fail_once(point: str) -> None:
        if not aborted:
            aborted.append(point)
            raise ServiceError("injected failure before commit_transaction")

    n = 120
    await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(n)])
    async with _serving(s, fail_hook=fail_once) as rt:
        got = await _read(kafka_bootstrap, topics["out"], n, committed_only=True, timeout=40)
        assert rt.commits >= 1
    assert aborted == ["commit_transaction"]
    decisions = _decisions(got)
    coords = [(d.partition, d.offset) for d in decisions]
    assert len(coords) == n
    assert len(set(coords)) == n
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=topics["group"])
    await consumer.start()
    try:
        tps = [TopicPartition(topics["inp"], p) for p in range(3)]
        committed = sum([(await consumer.committed(tp)) or 0 for tp in tps])
    finally:
        await consumer.stop()
    assert committed == n


def _config_file(tmp_path: Path, settings: Settings) -> Path:
    k = settings.kafka
    text = f"""
[kafka]
bootstrap_servers = "{k.bootstrap_servers}"
input_topics = ["{k.input_topics[0]}"]
decision_topic = "{k.decision_topic}"
dlq_topic = "{k.dlq_topic}"
group_id = "{k.group_id}"
fetch_max_wait_ms = 5
session_timeout_ms = 6000
heartbeat_interval_ms = 500

[engine]
bundle = "{settings.engine.bundle}"
max_batch = 16
warmup_iters = 20

[delivery]
commit_interval_ms = 50

[log]
level = "info"
"""
    path = tmp_path / "weir.toml"
    path.write_text(text)
    return path


async def _weir_serve(cfg: Path, *extra: str) -> asyncio.subprocess.Process:
    """`weir serve --config CFG [EXTRA...]` in a subprocess, its stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--config",
        str(cfg),
        *extra,
        stderr=asyncio.subprocess.PIPE,
    )


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum([(await consumer.committed(tp)) or 0 for tp in tps])
    finally:
        await consumer.stop()


async def test_sigterm_drains_commits_and_exits_zero(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any, tmp_path: Path
) -> None:
    """`weir serve` on SIGTERM stops fetching, publishes, commits every decided offset, exits 0."""
    s = make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"])
    cfg = _config_file(tmp_path, s)
    proc = await _weir_serve(cfg)
    try:
        await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(200)])
        got = await _read(kafka_bootstrap, topics["out"], 200)
        assert len(got) == 200
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert status == 0
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert '"event":"stopped"' in log and '"status":0' in log
    assert await _committed(kafka_bootstrap, topics["group"], topics["inp"], 3) == 200


@pytest.mark.requires_kafka(reason="two worker processes in one group need real rebalances")
async def test_workers_supervisor_restarts_a_killed_worker(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any, tmp_path: Path
) -> None:
    """With --workers 2, a worker killed with SIGKILL is restarted and every input is decided."""
    s = make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"])
    cfg = _config_file(tmp_path, s)
    proc = await _weir_serve(cfg, "--workers", "2")
    assert proc.stderr is not None
    pids: list[int] = []
    restarted = asyncio.Event()

    async def watch() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            text = line.decode()
            if '"event":"worker_started"' in text:
                pids.append(int(text.split('"pid":')[1].split(",")[0].split("}")[0]))
                if len(pids) == 3:
                    restarted.set()

    watcher = asyncio.create_task(watch())
    try:
        await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(100)])
        first = await _read(kafka_bootstrap, topics["out"], 100)
        assert len({(r.partition, r.offset) for r in first}) == 100
        assert len(pids) == 2
        import os

        os.kill(pids[0], signal.SIGKILL)
        await asyncio.wait_for(restarted.wait(), 30)
        await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(100, 200)])
        got = await _read(kafka_bootstrap, topics["out"], 200, timeout=60, distinct=True)
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(proc.wait(), 40)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        watcher.cancel()
    assert status == 0
    coords = {(d.partition, d.offset) for d in _decisions(got)}
    assert len(coords) == 200  # at-least-once: duplicates allowed, none missing


async def test_backpressure_pauses_and_nothing_is_lost(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """A slow engine fills the queue: partitions are paused and resumed, every input decided."""
    from engines.fake import FakeEngine, LatencyModel
    from engines.head import Head

    s = make_settings(
        topics["inp"],
        topics["out"],
        topics["dlq"],
        topics["group"],
        WEIR_SCHEDULER__MAX_QUEUE="200",
        WEIR_SCHEDULER__BUDGET_MS="5000",
        WEIR_KAFKA__MAX_POLL_RECORDS="40",
    )
    spec = FeatureSpec(task=Task.TRADING, window=WINDOW)
    engine = FakeEngine(
        n_features=spec.n_features,
        n_outputs=3,
        max_batch=4,
        latency=LatencyModel(base_ns=2_000_000, per_row_ns=0),
        wait="sleep",
    )
    engine.warm_up(3)
    head = Head("trading", ["SELL", "HOLD", "BUY"])
    n = 1500
    await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(n)])
    async with _serving(s, engine=engine, head=head, spec=spec, model_version="slow") as rt:
        got = await _read(kafka_bootstrap, topics["out"], n, timeout=90, distinct=True)
        assert rt.pauses >= 1
        assert rt._bp.level is Level.NONE  # resumed once drained
    decisions = _decisions(got)
    assert len({(d.partition, d.offset) for d in decisions}) == n
    assert {d.status for d in decisions} <= {Status.OK, Status.WARMING, Status.SHED}


async def test_seek_back_rebuilds_windows_without_deciding_twice(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """With warmup = "seek", a restart folds the last records into the windows: no warming, no re-decisions."""
    env = {"WEIR_STATE__WARMUP": "seek", "WEIR_STATE__SEEK_BACK": "10"}
    s = make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"], **env)
    one_key = [(b"BTCUSDT", _quote(4 * i)[1]) for i in range(30)]
    async with _serving(s):
        await _produce(kafka_bootstrap, topics["inp"], one_key)
        first = _decisions(await _read(kafka_bootstrap, topics["out"], 30))
    assert sum(d.status is Status.WARMING for d in first) == WINDOW - 1
    more = [(b"BTCUSDT", _quote(4 * i)[1]) for i in range(30, 45)]
    coords = await _produce(kafka_bootstrap, topics["inp"], more)
    async with _serving(s):
        await _read(kafka_bootstrap, topics["out"], 45)
    # Stopped, so drained: the decision topic is complete; a re-decided record would be in it.
    everything = _decisions(await _read_to_end(kafka_bootstrap, topics["out"], 3))
    later = [d for d in everything if (d.partition, d.offset) in set(coords)]
    assert len(everything) == 45
    assert len({(d.partition, d.offset) for d in everything}) == 45
    assert sorted((d.partition, d.offset) for d in later) == sorted(coords)
    assert [d.status for d in later] == [Status.OK] * 15  # windows rebuilt: no warming


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_broker_down_at_start_retries_then_stops_on_signal(
    tmp_path: Path, bundle_dir: Path
) -> None:
    """With no broker, `weir serve` retries with backoff; SIGTERM ends it at once with a clear error."""
    cfg = tmp_path / "weir.toml"
    cfg.write_text(
        f'[kafka]\nbootstrap_servers = "127.0.0.1:{_free_port()}"\n'
        f'[engine]\nbundle = "{bundle_dir}"\nwarmup_iters = 5\n[http]\nenabled = false\n'
    )
    proc = await _weir_serve(cfg)
    assert proc.stderr is not None
    seen = b""
    async with asyncio.timeout(30):
        while seen.count(b"kafka_unreachable_retrying") < 2:
            seen += await proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    status = await asyncio.wait_for(proc.wait(), 10)
    rest = seen + await proc.stderr.read()
    assert status == 2
    assert b"weir: error: stopped before Kafka at 127.0.0.1:" in rest


@pytest.mark.requires_kafka(reason="static membership needs real group coordination")
async def test_static_membership_gives_each_worker_its_own_id(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """With group_instance_id set, two workers join as distinct static members and split the work."""
    s = make_settings(
        topics["inp"],
        topics["out"],
        topics["dlq"],
        topics["group"],
        WEIR_KAFKA__GROUP_INSTANCE_ID="weir-static",
    )
    changed = asyncio.Condition()
    async with (
        _serving(s, worker_index=0, changed=changed) as a,
        _serving(s, worker_index=1, changed=changed) as b,
    ):
        await _until(changed, lambda: _owned(a) + _owned(b) == 3 and min(_owned(a), _owned(b)) > 0)
        await _produce(kafka_bootstrap, topics["inp"], [_quote(i) for i in range(100)])
        got = await _read(kafka_bootstrap, topics["out"], 100, distinct=True)
        assert a.rebalances + b.rebalances <= 4  # no fencing storm
    assert len({(d.partition, d.offset) for d in _decisions(got)}) == 100


# -- missing topics -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client; deletes at the end the topics the test added to ``admin.made``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="weir-tests")
    await admin.start()
    made: list[str] = []
    admin.made = made  # type: ignore[attr-defined]
    try:
        yield admin
    finally:
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(admin.delete_topics(made), 10)
        await admin.close()


def _fresh(role: str) -> str:
    return f"weir-{role}-{uuid.uuid4().hex[:8]}"


async def test_input_topic_created_after_start_is_warned_about_then_consumed(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any, tmp_path: Path
) -> None:
    """`weir serve` started before its input topic warns naming it, then decides its events at once."""
    late = _fresh("late-in")
    s = make_settings(late, topics["out"], topics["dlq"], topics["group"])
    proc = await _weir_serve(_config_file(tmp_path, s))
    assert proc.stderr is not None
    seen = b""
    async with _admin(kafka_bootstrap) as admin:
        admin.made.append(late)  # type: ignore[attr-defined]
        try:
            async with asyncio.timeout(60):
                while b'"event":"input_topic_missing"' not in seen:
                    line = await proc.stderr.readline()
                    assert line, seen.decode()
                    seen += line
            warning = seen.decode().splitlines()[-1]
            assert f'"topic":"{late}"' in warning
            assert f'"bootstrap":"{kafka_bootstrap}"' in warning
            # A broker that auto-creates topics made it when the service subscribed.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(late, 3, 1)])
            await _produce(kafka_bootstrap, late, [_quote(i) for i in range(30)])
            # aiokafka alone picks the topic up after metadata_max_age_ms (300 s).
            got = await _read(kafka_bootstrap, topics["out"], 30, timeout=30)
            proc.send_signal(signal.SIGTERM)
            status = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert len({(d.partition, d.offset) for d in _decisions(got)}) == 30
    assert status == 0


async def test_create_makes_missing_topics_with_the_given_partitions(
    kafka_bootstrap: str, make_settings: Any
) -> None:
    """With [topics] create = true, missing input, decision and dead-letter topics are created and served."""
    inp, out, dlq = _fresh("made-in"), _fresh("made-out"), _fresh("made-dlq")
    env = {"WEIR_TOPICS__CREATE": "true", "WEIR_TOPICS__PARTITIONS": "2"}
    s = make_settings(inp, out, dlq, f"g-{uuid.uuid4().hex[:8]}", **env)
    async with _admin(kafka_bootstrap) as admin:
        admin.made.extend([inp, out, dlq])  # type: ignore[attr-defined]
        async with _serving(s):
            described = await admin.describe_topics([inp, out, dlq])
            await _produce(kafka_bootstrap, inp, [_quote(i) for i in range(20)])
            got = await _read(kafka_bootstrap, out, 20, timeout=30)
    assert {d["topic"]: len(d["partitions"]) for d in described} == {inp: 2, out: 2, dlq: 2}
    assert len({(d.partition, d.offset) for d in _decisions(got)}) == 20


@pytest.mark.parametrize("absent", ["decision", "dead-letter"])
async def test_missing_output_topic_stops_the_start(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any, absent: str
) -> None:
    """A missing decision or dead-letter topic ends the start with an error naming it and the broker."""
    gone = _fresh("absent")
    out = gone if absent == "decision" else topics["out"]
    dlq = gone if absent == "dead-letter" else topics["dlq"]
    rt = Runtime(make_settings(topics["inp"], out, dlq, topics["group"]))
    with pytest.raises(TopicError) as info:
        await asyncio.wait_for(rt.run(install_signals=False), 60)
    assert str(info.value) == (
        f"{absent} topic {gone!r} does not exist on Kafka at {kafka_bootstrap}: create it, "
        "or set [topics] create = true (WEIR_TOPICS__CREATE=true)"
    )
    async with _admin(kafka_bootstrap) as admin:
        assert gone not in await admin.list_topics()  # looking did not create it


@pytest.mark.requires_kafka(reason="Tansu accepts any replication factor")
async def test_create_refused_by_the_broker_stops_the_start(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """A replication factor the cluster cannot hold ends the start naming the topic, its shape and the broker."""
    gone = _fresh("refused")
    env = {"WEIR_TOPICS__CREATE": "true", "WEIR_TOPICS__REPLICATION_FACTOR": "3"}
    rt = Runtime(make_settings(topics["inp"], topics["out"], gone, topics["group"], **env))
    with pytest.raises(TopicError) as info:
        await asyncio.wait_for(rt.run(install_signals=False), 60)
    assert str(info.value).startswith(
        f"cannot create dead-letter topic {gone!r} (1 partition, replication factor 3) on "
        f"Kafka at {kafka_bootstrap}: [Error 38] InvalidReplicationFactorError"
    )


async def test_creating_a_topic_that_exists_is_not_an_error(
    kafka_bootstrap: str, topics: dict[str, str], make_settings: Any
) -> None:
    """Two workers racing to create one topic: the one that loses is told it existed, not failed."""
    admin = KafkaTopicAdmin(make_settings(topics["inp"], topics["out"], topics["dlq"], "g").kafka)
    await admin.start()
    try:
        assert await admin.create(topics["dlq"], 1, 1) is False
        assert await admin.has_leaders(topics["dlq"])
    finally:
        await admin.close()


async def test_a_dead_topic_watch_stops_serving_with_its_cause(
    topics: dict[str, str], make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The topic watch is supervised: its death fails readiness and ends `run` with the cause."""

    def broken(self: InputWatch) -> list[str]:
        raise RuntimeError("injected watch failure")

    monkeypatch.setattr(InputWatch, "tick", broken)
    rt = Runtime(make_settings(topics["inp"], topics["out"], topics["dlq"], topics["group"]))
    with pytest.raises(TaskDied) as info:
        await asyncio.wait_for(rt.run(install_signals=False), 60)
    assert str(info.value) == (
        "background task 'weir-topic-watch' died: RuntimeError: injected watch failure"
    )
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not rt.ready and rt.tasks.deaths == {"weir-topic-watch": 1}
