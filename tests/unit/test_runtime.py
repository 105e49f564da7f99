"""Runtime behaviour that needs no broker: signals and backpressure bookkeeping."""

from __future__ import annotations

import asyncio

import pytest

import service.runtime as runtime_mod
from engines.fake import FakeEngine
from engines.head import Head
from schemas.features import FeatureSpec, Task
from service.errors import ConfigError
from service.runtime import Runtime
from service.settings import load_settings


def _runtime(**env: str) -> Runtime:
    spec = FeatureSpec(task=Task.TRADING, window=2)
    engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4)
    engine.warm_up(2)
    return Runtime(
        load_settings(env=env),
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=spec,
        model_version="t",
    )


def test_first_signal_stops_second_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first SIGTERM/SIGINT asks for a drain; the second exits the process with 130."""
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)

    monkeypatch.setattr(runtime_mod.os, "_exit", fake_exit)
    rt = _runtime()
    rt._on_signal()
    assert rt._stop.is_set()
    assert exits == []
    rt._on_signal()
    assert exits == [130]


async def test_a_dead_background_task_stops_the_runtime() -> None:
    """A supervised task that fails stops the service, drops readiness and keeps the cause."""
    rt = _runtime()
    rt.ready = True

    async def boom() -> None:
        raise RuntimeError("watch broke")

    task = asyncio.create_task(boom(), name="weir-topic-watch")
    rt._supervise(task)
    await asyncio.wait_for(rt._stop.wait(), 10)
    assert not rt.ready
    assert rt._died is not None
    name, error = rt._died
    assert name == "weir-topic-watch"
    assert isinstance(error, RuntimeError) and str(error) == "watch broke"


async def test_a_cancelled_background_task_is_not_a_death() -> None:
    """Cancelling a supervised task at shutdown neither stops the service nor records a death."""
    rt = _runtime()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    rt._supervise(task)
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # ``_supervise``'s callback was added first, so it ran before this await resumed.
    assert not rt._stop.is_set()
    assert rt._died is None


def test_bad_schema_settings_stop_the_runtime_before_it_connects() -> None:
    """A ``[schema]`` setting that names no importable Struct fails at construction,
    before any Kafka client exists."""
    with pytest.raises(ConfigError) as info:
        _runtime(WEIR_SCHEMA__FORMAT="struct", WEIR_SCHEMA__STRUCT="weir_nowhere:Event")
    assert str(info.value) == (
        "[schema]: event struct 'weir_nowhere:Event': cannot import weir_nowhere: "
        "No module named 'weir_nowhere'"
    )
