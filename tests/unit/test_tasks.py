"""Supervised background tasks: a death is kept with its cause, counted, reported at once,
and fails the pipeline (and so readiness) in the same loop turn."""

from __future__ import annotations

import asyncio

from engines.fake import FakeEngine
from engines.head import Head
from schemas.codec import event_codec
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.http import OpsServer
from service.memory import MemoryRecord, MemorySink
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import load_settings
from service.tasks import TaskDied, TaskSupervisor
from service.view import InMemoryView


async def _fail(message: str) -> None:
    raise RuntimeError(message)


async def _forever() -> None:
    await asyncio.Event().wait()


async def _return() -> None:
    return None


async def test_a_raising_task_is_kept_counted_and_reported_once() -> None:
    """The first death is the failure (its error the cause), each death is counted by
    name, and ``on_death`` hears of each at once."""
    heard: list[TaskDied] = []
    tasks = TaskSupervisor(on_death=heard.append)
    first = tasks.spawn(_fail("boom"), "worker-a")
    await asyncio.wait([first])
    second = tasks.spawn(_fail("again"), "worker-a")
    await asyncio.wait([second])
    assert tasks.failure is heard[0]
    assert str(tasks.failure) == "background task 'worker-a' died: RuntimeError: boom"
    assert tasks.failure.task == "worker-a"
    assert isinstance(tasks.failure.__cause__, RuntimeError)
    assert len(heard) == 2 and tasks.deaths == {"worker-a": 2}
    assert tasks.running == 0


async def test_a_cancelled_task_is_not_a_death() -> None:
    """Stopping a task by cancelling it is the normal end: no failure, no count."""
    heard: list[TaskDied] = []
    tasks = TaskSupervisor(on_death=heard.append)
    task = tasks.spawn(_forever(), "sampler")
    assert tasks.running == 1
    task.cancel()
    await asyncio.wait([task])
    assert tasks.failure is None and heard == [] and tasks.deaths == {}


async def test_a_task_that_returns_is_a_death() -> None:
    """A background task runs until it is stopped: returning on its own is a failure too."""
    tasks = TaskSupervisor()
    await asyncio.wait([tasks.spawn(_return(), "timer")])
    assert str(tasks.failure) == "background task 'timer' ended while the service runs"
    assert tasks.failure is not None and tasks.failure.__cause__ is None


async def test_dispatcher_death_fails_the_pipeline_and_readiness_at_once() -> None:
    """An engine raising something other than ``EngineError`` kills the dispatcher; when
    the supervisor reports it, the pipeline has failed and readiness says why; drain gives
    up at once and close does not raise."""
    armed = [False]

    def crash(call: int, bucket: int) -> bool:
        if armed[0]:
            raise RuntimeError("driver lost")
        return False

    spec = FeatureSpec(task=Task.TRADING, window=2)
    engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4, fail=crash)
    engine.warm_up(2)
    armed[0] = True
    settings = load_settings(env={"WEIR_SCHEDULER__BUDGET_MS": "10000"})
    seen: list[tuple[bool, str]] = []
    died = asyncio.Event()

    def on_death(death: TaskDied) -> None:
        seen.append(metrics.readiness())
        died.set()

    pipe = Pipeline(
        settings=settings,
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=spec,
        sink=MemorySink(),
        model_version="t",
        tasks=TaskSupervisor(on_death=on_death),
    )
    metrics = Metrics(InMemoryView(settings, engine, pipe, "t"))
    pipe.start()
    codec = event_codec()
    records = [
        MemoryRecord(
            "weir.events",
            0,
            i,
            codec.encode(Quote(symbol="K", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0)),
        )
        for i in range(4)
    ]
    await pipe.ingest(records)
    await died.wait()
    reason = "background task 'weir-dispatch' died: RuntimeError: driver lost"
    assert seen == [(False, reason)]
    assert str(pipe.failed) == reason
    assert not await pipe.drain(60.0)
    await pipe.close()
    page = metrics.render().decode()
    assert 'weir_task_deaths_total{task="weir-dispatch"} 1.0' in page


class _BrokenConsumer:
    def assignment(self) -> set[object]:
        raise RuntimeError("consumer gone")


async def test_metrics_sampler_death_is_reported_through_the_supervisor() -> None:
    """The once-a-second sampler of the HTTP endpoints is a supervised task: when it dies
    the worker's supervisor has the death with its cause."""
    spec = FeatureSpec(task=Task.TRADING, window=2)
    engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4)
    engine.warm_up(2)
    view = InMemoryView(load_settings(env={}), engine, None, "t")
    view.consumer = _BrokenConsumer()
    died = asyncio.Event()
    tasks = TaskSupervisor(on_death=lambda death: died.set())
    server = OpsServer(Metrics(view), "127.0.0.1", 0, sample_interval_s=0.001, tasks=tasks)
    await server.start()
    await died.wait()
    await server.close()
    assert str(tasks.failure) == (
        "background task 'weir-metrics-sampler' died: RuntimeError: consumer gone"
    )
