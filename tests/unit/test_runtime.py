"""Runtime behaviour that needs no broker: signals and backpressure bookkeeping."""

from __future__ import annotations

import pytest

import service.runtime as runtime_mod
from engines.fake import FakeEngine
from engines.head import Head
from schemas.features import FeatureSpec, Task
from service.runtime import Runtime
from service.settings import load_settings


def _runtime() -> Runtime:
    spec = FeatureSpec(task=Task.TRADING, window=2)
    engine = FakeEngine(n_features=spec.n_features, n_outputs=3, max_batch=4)
    engine.warm_up(2)
    return Runtime(
        load_settings(env={}),
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
