"""Shadow mode in memory: a candidate decides copies of the primary's batches on the shadow
topic, drops (and counts) batches when it falls behind, and never touches the primary's
decisions, offsets or health."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from engines.fake import FakeEngine, LatencyModel
from engines.head import Head
from engines.version import ModelVersion
from schemas.codec import decision_codec, event_codec
from schemas.decision import Decision, Status
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.errors import ModelRefused, ServiceError
from service.memory import MemoryRecord, MemorySink, SentMessage
from service.models import ModelControl
from service.pipeline import Pipeline
from service.settings import load_settings
from service.shadow import Shadow

WINDOW = 4
TOPIC = "weir.events"
SHADOW_TOPIC = "weir.decisions.shadow"
Fail = Callable[[int, int], bool]


def _version(name: str, *, window: int = WINDOW, fail: Fail | None = None) -> ModelVersion:
    spec = FeatureSpec(task=Task.TRADING, window=window)
    engine = FakeEngine(
        n_features=spec.n_features,
        n_outputs=3,
        max_batch=8,
        latency=LatencyModel(base_ns=20_000, per_row_ns=0),
        fail=fail,
        seed=7 if name == "v2" else 0,
    )
    engine.warm_up(3)
    return ModelVersion(
        version=name, engine=engine, head=Head("trading", ["SELL", "HOLD", "BUY"]), features=spec
    )


def _record(i: int) -> MemoryRecord:
    q = Quote(symbol=f"K{i % 3}", bid_px=100.0 + i % 7, bid_qty=1.0, ask_px=100.5, ask_qty=2.0)
    return MemoryRecord(TOPIC, 0, i, event_codec().encode(q), timestamp=1_700_000_000_000 + i)


def _decoded(messages: list[SentMessage]) -> list[Decision]:
    codec = decision_codec()
    return [codec.decode(m.value) for m in messages]


class Shadowed:
    """A started pipeline serving v1, its ModelControl, and (after ``start``) a shadow."""

    def __init__(self, sink: MemorySink, shadow_queue: int) -> None:
        self.sink = sink
        settings = load_settings(
            env={
                "WEIR_SCHEDULER__BUDGET_MS": "10000",
                "WEIR_MODEL__SHADOW_QUEUE": str(shadow_queue),
            }
        )
        v1 = _version("v1")
        self.pipe = Pipeline(
            settings=settings,
            engine=v1.engine,
            head=v1.head,
            spec=FeatureSpec(task=Task.TRADING, window=WINDOW),
            sink=sink,
            model_version="v1",
        )
        self.candidates: dict[str, ModelVersion] = {}
        self.control = ModelControl(settings, v1, self.pipe, loader=self.candidates.__getitem__)
        self.pipe.start()

    async def start(self, candidate: ModelVersion) -> Shadow:
        self.candidates["cand"] = candidate
        return await self.control.start_shadow("cand", self.sink, self.pipe.tasks)

    async def feed(self, start: int, n: int, chunk: int = 6, shadow: Shadow | None = None) -> None:
        """Ingest in chunks, each decided before the next (and, given ``shadow``, each
        decided by the shadow too: at most ``chunk`` batches wait for it then)."""
        for i in range(start, start + n, chunk):
            await self.pipe.ingest([_record(j) for j in range(i, min(i + chunk, start + n))])
            assert await self.pipe.drain(5.0)
            if shadow is not None:
                await shadow.drained()

    def primary(self) -> list[Decision]:
        return _decoded(self.sink.on("weir.decisions"))

    def shadow(self) -> list[Decision]:
        return _decoded(self.sink.on(SHADOW_TOPIC))


@pytest.fixture
async def shadowed() -> AsyncIterator[Callable[..., Shadowed]]:
    made: list[Shadowed] = []

    def make(*, sink: MemorySink | None = None, shadow_queue: int = 4) -> Shadowed:
        s = Shadowed(sink or MemorySink(), shadow_queue)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.pipe.close()
        await s.control.aclose()


async def test_the_shadow_decides_every_batch_on_its_topic(shadowed: Any) -> None:
    """Each ok primary decision has a shadow twin (same coordinates, version v2) on the
    shadow topic; the primary's decisions, version and offsets are as without a shadow."""
    s = shadowed(shadow_queue=8)
    shadow = await s.start(_version("v2"))
    await s.feed(0, 60, shadow=shadow)
    primary, twins = s.primary(), s.shadow()
    assert len(primary) == 60 and {d.model_version for d in primary} == {"v1"}
    ok = [(d.partition, d.offset, d.key) for d in primary if d.status is Status.OK]
    assert sorted((d.partition, d.offset, d.key) for d in twins) == sorted(ok)
    assert {d.model_version for d in twins} == {"v2"} and {d.status for d in twins} == {Status.OK}
    assert all(("weir-shadow", b"1") in m.headers for m in s.sink.on(SHADOW_TOPIC))
    assert [d.scores for d in twins] != [d.scores for d in primary if d.status is Status.OK]
    assert s.pipe.tracker.to_commit() == {(TOPIC, 0): 60}
    counts = s.pipe.counters.shadow
    assert counts["run"] == s.pipe.counters.batches and counts["dropped"] == counts["failed"] == 0
    assert s.control.status()["shadow"] == "v2"


async def test_a_shadow_that_falls_behind_drops_batches_not_the_primary(shadowed: Any) -> None:
    """While the shadow's engine is stuck, the primary decides everything; the shadow holds
    at most shadow_queue batches (plus the one in its thread) and counts the rest dropped."""
    entered, release = threading.Event(), threading.Event()
    armed = [False]

    def stuck(call: int, bucket: int) -> bool:
        if armed[0]:
            entered.set()
            release.wait(10)
        return False

    s = shadowed(shadow_queue=2)
    shadow = await s.start(_version("v2", fail=stuck))
    await s.feed(0, 3 * WINDOW)  # every key past warming: each later batch runs
    await shadow.drained()
    armed[0] = True
    ran = s.pipe.counters.shadow["run"]
    batches = s.pipe.counters.batches
    await s.feed(100, 60)
    assert await asyncio.to_thread(entered.wait, 10)
    assert len(s.primary()) == 3 * WINDOW + 60  # all decided while the shadow is stuck
    new_batches = s.pipe.counters.batches - batches
    dropped = s.pipe.counters.shadow["dropped"]
    assert new_batches >= 5 and dropped == new_batches - 3  # 1 in the thread + 2 queued
    release.set()
    await shadow.drained()
    assert s.pipe.counters.shadow["run"] == ran + 3
    assert s.pipe.failed is None


async def test_a_failing_shadow_engine_is_counted_and_harmless(shadowed: Any) -> None:
    """Every shadow inference raises: each batch counts failed, one warning is logged, the
    primary decides everything and stays healthy."""
    s = shadowed()
    armed = [False]
    shadow = await s.start(_version("v2", fail=lambda call, bucket: armed[0]))
    armed[0] = True
    with capture_logs() as logs:
        await s.feed(0, 30, shadow=shadow)
    assert len(s.primary()) == 30 and s.shadow() == []
    assert s.pipe.counters.shadow["failed"] == s.pipe.counters.batches > 0
    warnings = [e for e in logs if e["event"] == "shadow_engine_error"]
    assert len(warnings) == 1 and warnings[0]["version"] == "v2"
    assert s.pipe.failed is None


async def test_a_refused_shadow_publish_does_not_fail_the_service(shadowed: Any) -> None:
    """The broker refuses every shadow decision: counted failed once per batch; the
    pipeline's health and offsets are the primary's alone."""

    def refuse(msg: SentMessage) -> BaseException | None:
        return RuntimeError("no such topic") if msg.topic == SHADOW_TOPIC else None

    s = shadowed(sink=MemorySink(fail=refuse))
    shadow = await s.start(_version("v2"))
    await s.feed(0, 30)
    await shadow.drained()
    assert s.pipe.failed is None and s.pipe.counters.produce_errors == 0
    assert s.pipe.counters.shadow["failed"] == s.pipe.counters.shadow["run"] > 0
    assert s.pipe.tracker.to_commit() == {(TOPIC, 0): 30}
    assert shadow.inflight == 0


async def test_a_shadow_with_another_feature_contract_is_refused(shadowed: Any) -> None:
    """A candidate over another window cannot decide the primary's inputs: refused, logged
    with role shadow, and no shadow runs."""
    s = shadowed()
    with capture_logs() as logs, pytest.raises(ModelRefused) as info:
        await s.start(_version("v2", window=WINDOW + 1))
    assert info.value.reason.endswith("(the shadow decides the primary's inputs)")
    assert [e["role"] for e in logs if e["event"] == "model_refused"] == ["shadow"]
    assert s.pipe.shadow is None and s.control.counts["refused"] == 1


class _NoShadowTopic(MemorySink):
    """A sink that has no shadow topic: sending there raises, as KafkaSink does."""

    async def send(self, topic: str, *args: Any) -> None:
        if topic == SHADOW_TOPIC:
            raise ServiceError(f"no partitions for decision topic {topic!r}: timed out")
        await super().send(topic, *args)


async def test_a_missing_shadow_topic_stops_the_shadow_not_the_service(shadowed: Any) -> None:
    """The first shadow send fails: the shadow stops (logged once with the reason), later
    batches count dropped, and the primary serves on, healthy."""
    s = shadowed(sink=_NoShadowTopic())
    shadow = await s.start(_version("v2"))
    with capture_logs() as logs:
        await s.feed(0, 3 * WINDOW + 30)
        await shadow.drained()
    assert shadow.stopped == "no partitions for decision topic 'weir.decisions.shadow': timed out"
    assert [e["event"] for e in logs if e["event"].startswith("shadow")] == ["shadow_stopped"]
    counts = s.pipe.counters.shadow
    assert counts["run"] == 0 and counts["failed"] == 1
    assert counts["dropped"] == s.pipe.counters.batches - 1 > 0
    assert len(s.primary()) == 3 * WINDOW + 30 and s.pipe.failed is None
    assert s.pipe.tasks.failure is None


async def test_the_shadow_waits_while_the_primary_is_busy(shadowed: Any) -> None:
    """A queued shadow batch starts only while the primary is idle: while it is busy the
    shadow publishes nothing, and once the dispatcher wakes it idle the batches run."""
    s = shadowed()
    busy = True
    shadow = Shadow(
        _version("v2"),
        sink=s.sink,
        topic=SHADOW_TOPIC,
        counters=s.pipe.counters,
        queue=8,
        primary_idle=lambda: not busy,
    )
    s.pipe.shadow = shadow
    task = asyncio.get_running_loop().create_task(shadow.run())
    try:
        await s.feed(0, 24)  # primary decisions out; shadow batches queued behind "busy"
        # Ungated, the shadow would finish these in milliseconds; held, it never does.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(shadow.drained(), 0.5)
        assert len(s.primary()) == 24 and s.shadow() == []
        busy = False
        shadow.wake()  # what the dispatcher does each time it goes idle
        await asyncio.wait_for(shadow.drained(), 5)
        assert len(s.shadow()) == len([d for d in s.primary() if d.status is Status.OK])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        shadow.close()
