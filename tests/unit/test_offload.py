"""``[engine] offload``: where the engine runs, inline on the event loop or in the worker
thread, chosen from the model's measured profile with ``auto``; decisions the same."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from engines.fake import FakeEngine, LatencyModel
from engines.head import Head
from engines.version import ModelVersion
from schemas.decision import Status
from schemas.features import FeatureSpec, Task
from service.settings import load_settings
from tests.pipeline_io import quote_record, run_pipeline, sink_decisions

WINDOW = 4  # the window of the conftest fixtures
LABELS = ("SELL", "HOLD", "BUY")


class _Where(FakeEngine):
    """A fake engine that notes the thread of each ``infer``."""

    def __init__(self, latency_ns: int) -> None:
        super().__init__(
            n_features=FeatureSpec(task=Task.TRADING, window=WINDOW).n_features,
            n_outputs=3,
            max_batch=8,
            latency=LatencyModel(base_ns=latency_ns, per_row_ns=0),
        )
        self.threads: set[str] = set()

    def infer(self, bucket: int, n: int | None = None) -> Any:
        self.threads.add(threading.current_thread().name)
        return super().infer(bucket, n)


def _engine(latency_ns: int) -> _Where:
    engine = _Where(latency_ns)
    engine.warm_up(3)
    engine.threads.clear()
    return engine


def _settings(offload: str) -> Any:
    return load_settings(env={"WEIR_SCHEDULER__BUDGET_MS": "500", "WEIR_ENGINE__OFFLOAD": offload})


@pytest.mark.parametrize(
    ("offload", "latency_ns", "offloaded"),
    [
        ('"auto"', 50_000, False),  # largest bucket well under 1 ms: inline
        ('"auto"', 3_000_000, True),  # 3 ms: the worker thread
        ("true", 50_000, True),
        ("false", 3_000_000, False),
    ],
)
async def test_offload_runs_the_engine_where_the_setting_says(
    make_pipeline: Any, offload: str, latency_ns: int, offloaded: bool
) -> None:
    """``auto`` puts a model whose largest bucket's p99 is over ``offload_above_ms`` in the
    worker thread and keeps a faster one on the loop; ``true``/``false`` force it. Either
    way every input gets one decision, each key's in offset order."""
    engine = _engine(latency_ns)
    pipe, sink, _ = make_pipeline(settings=_settings(offload), engine=engine)
    assert pipe.offloaded is offloaded
    records = [quote_record(i, key=f"K{i % 2}", timestamp=1_700_000_000_000 + i) for i in range(40)]
    await run_pipeline(pipe, records, chunk=8)
    loop_thread = threading.current_thread().name
    assert engine.threads == ({"weir-engine_0"} if offloaded else {loop_thread})
    got = sink_decisions(sink)
    assert len(got) == 40
    for key in ("K0", "K1"):
        offs = [d.offset for d in got if d.key == key]
        assert offs == sorted(offs)
    assert {d.status for d in got} <= {Status.OK, Status.WARMING}


async def test_auto_decides_again_for_each_model_installed(make_pipeline: Any) -> None:
    """Swapping in a slow model moves ``infer`` to the worker thread; swapping a fast one
    back brings it inline again."""
    fast = _engine(50_000)
    pipe, _, _ = make_pipeline(settings=_settings('"auto"'), engine=fast)
    assert not pipe.offloaded
    spec = FeatureSpec(task=Task.TRADING, window=WINDOW)
    head = Head("trading", LABELS)
    pipe.install(ModelVersion(version="slow", engine=_engine(3_000_000), head=head, features=spec))
    assert pipe.offloaded
    pipe.install(ModelVersion(version="fast", engine=_engine(50_000), head=head, features=spec))
    assert not pipe.offloaded
    await pipe.close()


def test_offload_refuses_a_word_other_than_auto() -> None:
    """A typo is refused at load, naming the setting."""
    with pytest.raises(Exception, match="offload"):
        _settings('"sometimes"')
    assert np.isclose(load_settings(env={}).engine.offload_above_ms, 1.0)


class _Turns(FakeEngine):
    """A fake engine that notes, at each ``infer``, how many loop turns a probe task saw."""

    def __init__(self) -> None:
        super().__init__(
            n_features=FeatureSpec(task=Task.TRADING, window=WINDOW).n_features,
            n_outputs=3,
            max_batch=8,
            latency=LatencyModel(base_ns=50_000, per_row_ns=0),
        )
        self.turns = 0
        self.seen: list[int] = []

    def infer(self, bucket: int, n: int | None = None) -> Any:
        self.seen.append(self.turns)
        return super().infer(bucket, n)


@pytest.mark.parametrize("turns", [1, 4])
async def test_the_dispatcher_gives_the_loop_its_turns_between_batches(
    make_pipeline: Any, turns: int
) -> None:
    """Batches queued back to back still let the loop turn ``turns_after_batch`` times
    between engine calls (each step of a decision's way to the broker takes a turn)."""
    import asyncio

    engine = _Turns()
    engine.warm_up(3)
    settings = load_settings(
        env={
            "WEIR_SCHEDULER__BUDGET_MS": "60000",
            "WEIR_SCHEDULER__TURNS_AFTER_BATCH": str(turns),
            "WEIR_ENGINE__OFFLOAD": "false",
        }
    )
    pipe, sink, _ = make_pipeline(settings=settings, engine=engine)

    async def probe() -> None:
        while True:
            await asyncio.sleep(0)
            engine.turns += 1

    ticking = asyncio.get_running_loop().create_task(probe())
    engine.seen.clear()
    records = [quote_record(i, key="K0", timestamp=1_700_000_000_000 + i) for i in range(80)]
    await run_pipeline(pipe, records, chunk=80)  # one ingest: the batches queue back to back
    ticking.cancel()
    gaps = [b - a for a, b in zip(engine.seen, engine.seen[1:], strict=False)]
    assert len(gaps) >= 5 and min(gaps) >= turns
    assert len(sink_decisions(sink)) == 80


@pytest.mark.parametrize(
    ("setting", "latency_ns", "turns"),
    [('"auto"', 50_000, 1), ('"auto"', 3_000_000, 4), ("2", 50_000, 2), ("2", 3_000_000, 2)],
)
def test_auto_turns_follow_the_engine_speed(
    make_pipeline: Any, setting: str, latency_ns: int, turns: int
) -> None:
    """``turns_after_batch = "auto"`` gives a slow engine (largest bucket over
    ``offload_above_ms``) 4 turns after each batch and a fast one 1; a number is kept."""
    settings = load_settings(env={"WEIR_SCHEDULER__TURNS_AFTER_BATCH": setting})
    pipe, _, _ = make_pipeline(settings=settings, engine=_engine(latency_ns))
    assert pipe.turns == turns
