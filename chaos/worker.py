"""``python -m chaos.worker``: one ``weir serve`` worker whose engine is a scripted fake.

The real ``service.runtime.Runtime`` (Kafka consumer, pipeline, producer, commits) around a
:class:`engines.fake.FakeEngine` that sleeps its drawn latency (so the profile measures
real time), with a fault plan: from ``at_s`` for ``for_s`` seconds after the worker is
ready, every batch fails (``fail``), its latency is multiplied (``slow``, ``factor``), the
engine raises something other than ``EngineError`` so the dispatcher dies (``crash``), or
the produce path takes at most ``rate`` messages a second (``throttle``: the producer the
runtime's client factory makes waits before handing each batch over, as a slow or
partitioned broker would). Every ``sample_s`` it appends one JSON line to ``--stats``:
readiness, whether partitions are paused, queue length, counters, the sink's in-flight
messages and bytes, the engine profile's p99 of every bucket, and its resident memory;
and one last line (``"final": true``) when the runtime has returned or raised.

    python -m chaos.worker --config weir.toml --plan plan.json --stats stats.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from chaos.procs import rss_kb
from engines.bundle import Bundle
from engines.errors import EngineError
from engines.fake import FakeEngine, LatencyModel, WaitMode
from engines.package import package_of
from service.kafka import KafkaClients, producer_kwargs
from service.logs import configure_logging
from service.runtime import Runtime
from service.settings import KafkaSettings, load_settings

__all__ = ["Fault", "Plan", "main"]


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault window, in seconds after the worker is ready."""

    kind: str
    """``fail`` (every batch raises), ``slow`` (latency times ``factor``), ``crash`` (the
    engine raises ``RuntimeError``) or ``throttle`` (``rate`` produced messages a second)."""
    at_s: float
    for_s: float
    factor: float = 10.0
    rate: float = 100.0


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The fake engine's latency and the faults to inject."""

    latency: LatencyModel = LatencyModel()
    wait: WaitMode = "sleep"
    faults: list[Fault] = []
    sample_s: float = 0.1


class _ThrottledProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A producer that, while ``rate_of()`` is positive, waits ``messages / rate`` seconds
    before handing each batch over (the sink's submitter awaits it, one batch at a time)."""

    def __init__(self, rate_of: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rate_of = rate_of

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        rate = self._rate_of()
        if rate > 0:
            await asyncio.sleep(batch.record_count() / rate)
        return await super().send_batch(batch, topic, partition=partition)


class _ChaosClients(KafkaClients):
    """aiokafka clients whose producer is throttled while a ``throttle`` fault is on."""

    def __init__(self, rate_of: Callable[[], float]) -> None:
        self._rate_of = rate_of

    def producer(self, k: KafkaSettings, *, transactional_id: str | None) -> AIOKafkaProducer:
        kwargs = producer_kwargs(k, transactional_id=transactional_id)
        return _ThrottledProducer(self._rate_of, **kwargs)


def _crash_or(failing: list[bool], crashing: list[bool]) -> Callable[[int, int], bool]:
    def fail(call: int, bucket: int) -> bool:
        if crashing[0]:
            raise RuntimeError(f"chaos: engine crashed on call {call}")
        return failing[0]

    return fail


def _scaled(model: LatencyModel, factor: float) -> LatencyModel:
    return msgspec.structs.replace(
        model,
        base_ns=int(model.base_ns * factor),
        per_row_ns=int(model.per_row_ns * factor),
        per_bucket_ns={b: int(v * factor) for b, v in model.per_bucket_ns.items()},
    )


async def _run(config: str, plan: Plan, stats_path: Path) -> int:
    settings = load_settings(config)
    configure_logging(settings.log.level, settings.log.format)
    bundle = Bundle.load(settings.engine.bundle)
    package = package_of(bundle, threshold=settings.engine.alert_threshold)
    failing = [False]
    crashing = [False]
    throttle = [0.0]
    engine = FakeEngine.from_bundle(
        bundle,
        max_batch=settings.engine.max_batch,
        latency=plan.latency,
        wait=plan.wait,
        fail=_crash_or(failing, crashing),
    )
    engine.warm_up(settings.engine.warmup_iters)
    rt = Runtime(
        settings,
        engine=engine,
        head=package.head,
        spec=package.features,
        model_version=bundle.metadata.model_version,
        clients=_ChaosClients(lambda: throttle[0]),
    )
    task = asyncio.create_task(rt.run())
    state: dict[str, Any] = {"pauses": 0, "paused": False, "fault": ""}
    ready_at: float | None = None

    def p99_ms() -> dict[str, float]:
        try:
            prof = engine.profile
        except EngineError:
            return {}
        return {str(b): round(prof.p99_ns(b) / 1e6, 3) for b in prof.buckets}

    with stats_path.open("ab") as out:
        while not task.done():
            now = time.monotonic()
            if ready_at is None and rt.ready:
                ready_at = now
            active: Fault | None = None
            if ready_at is not None:
                for f in plan.faults:
                    if f.at_s <= now - ready_at < f.at_s + f.for_s:
                        active = f
                        break
            fault = active.kind if active is not None else ""
            if fault != state["fault"]:
                failing[0] = fault == "fail"
                crashing[0] = fault == "crash"
                throttle[0] = active.rate if active is not None and fault == "throttle" else 0.0
                engine.latency = (
                    _scaled(plan.latency, active.factor)
                    if active is not None and active.kind == "slow"
                    else plan.latency
                )
                state["fault"] = fault
            line = _line(rt, state, fault, p99_ms())
            out.write(msgspec.json.encode(line) + b"\n")
            out.flush()
            await asyncio.wait([task], timeout=plan.sample_s)
        line = _line(rt, state, state["fault"], p99_ms())
        line["final"] = True
        out.write(msgspec.json.encode(line) + b"\n")
    return task.result()


def _line(rt: Runtime, state: dict[str, Any], fault: str, p99: dict[str, float]) -> dict[str, Any]:
    consumer = rt.consumer
    paused = bool(consumer is not None and consumer.paused())
    if paused and not state["paused"]:
        state["pauses"] += 1
    state["paused"] = paused
    pipe = rt.pipeline
    c = pipe.counters if pipe is not None else None
    sink = rt.sink
    ready, reason = rt.metrics.readiness()
    return {
        "wall_ns": time.time_ns(),
        "ready": rt.ready,
        "readiness": [ready, reason],
        "fault": fault,
        "paused": paused,
        "pauses": state["pauses"],
        "queued": pipe.queued if pipe is not None else 0,
        "events_in": c.events_in if c is not None else 0,
        "decisions": {s.value: n for s, n in c.decisions.items()} if c else {},
        "engine_errors": c.engine_errors if c is not None else 0,
        "sink_inflight": sink.inflight if sink is not None else 0,
        "sink_bytes": sink.inflight_bytes if sink is not None else 0,
        "sink_waits": sink.waits if sink is not None else 0,
        "task_deaths": dict(rt.tasks.deaths),
        "p99_ms": p99,
        "rss_kb": rss_kb_self(),
    }


def rss_kb_self() -> int:
    """This process's VmRSS in KiB."""
    import os

    return rss_kb(os.getpid())[0]


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m chaos.worker", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args(argv)
    plan = msgspec.json.decode(Path(args.plan).read_bytes(), type=Plan)
    try:
        import uvloop

        return int(uvloop.run(_run(args.config, plan, Path(args.stats))))
    except ImportError:  # pragma: no cover
        return int(asyncio.run(_run(args.config, plan, Path(args.stats))))


if __name__ == "__main__":
    raise SystemExit(main())
