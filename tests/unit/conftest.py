"""Factory fixtures the unit tests share: a warmed fake engine, the in-memory pipeline over
it, and that pipeline observed by a ``Metrics`` with its view. Each call states only what
it changes; everything else has the default below."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from engines.fake import FakeEngine, LatencyModel
from engines.head import Head
from schemas.base import EventDecoder
from schemas.features import FeatureSpec, Task
from service.base import BatchObserver
from service.memory import MemorySink
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.scheduler.base import Scheduler
from service.settings import Settings, load_settings
from service.view import InMemoryView

WINDOW = 4
"""Events per key window in the fixtures' feature spec."""

LABELS = ["SELL", "HOLD", "BUY"]

MakeEngine = Callable[..., FakeEngine]
MakePipeline = Callable[..., tuple[Pipeline, MemorySink, FakeEngine]]
MakeServed = Callable[..., tuple[Pipeline, Metrics, InMemoryView]]


def default_settings() -> Settings:
    """Defaults with a 50 ms deadline budget."""
    return load_settings(env={"WEIR_SCHEDULER__BUDGET_MS": "50"})


@pytest.fixture
def make_engine() -> MakeEngine:
    """A fake engine for the task's features, warmed up (so it has a latency profile);
    with ``fail_every=N`` every N-th call after warm-up raises."""

    def make(
        *,
        task: Task = Task.TRADING,
        window: int = WINDOW,
        max_batch: int = 8,
        latency_ns: int = 50_000,
        fail_every: int = 0,
        warmup_iters: int = 5,
    ) -> FakeEngine:
        armed = False

        def fail(call: int, bucket: int) -> bool:
            return armed and fail_every > 0 and call % fail_every == 0

        engine = FakeEngine(
            n_features=FeatureSpec(task=task, window=window).n_features,
            n_outputs=3 if task is Task.TRADING else 1,
            max_batch=max_batch,
            latency=LatencyModel(base_ns=latency_ns, per_row_ns=0),
            fail=fail,
        )
        engine.warm_up(warmup_iters)
        armed = True
        return engine

    return make


@pytest.fixture
def make_pipeline(make_engine: MakeEngine) -> MakePipeline:
    """An in-memory pipeline (not started) on a fresh ``make_engine(**engine_kw)`` unless
    ``engine`` is given, publishing to a ``MemorySink``: ``(pipeline, sink, engine)``;
    ``decoder`` replaces the one the settings build; ``clock`` is its monotonic clock;
    ``scheduler`` builds the pipeline's scheduler from the engine (default: the settings')."""

    def make(
        *,
        settings: Settings | None = None,
        task: Task = Task.TRADING,
        engine: FakeEngine | None = None,
        sink: MemorySink | None = None,
        observer: BatchObserver | None = None,
        model_version: str = "test-1",
        decoder: EventDecoder | None = None,
        head: Head | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        scheduler: Callable[[FakeEngine], Scheduler[int]] | None = None,
        **engine_kw: int,
    ) -> tuple[Pipeline, MemorySink, FakeEngine]:
        engine = engine or make_engine(task=task, **engine_kw)
        sink = sink or MemorySink()
        pipe = Pipeline(
            settings=settings or default_settings(),
            engine=engine,
            head=head or Head(task.value, LABELS),
            spec=FeatureSpec(task=task, window=WINDOW),
            sink=sink,
            model_version=model_version,
            observer=observer,
            decoder=decoder,
            clock=clock,
            scheduler=None if scheduler is None else scheduler(engine),
        )
        return pipe, sink, engine

    return make


@pytest.fixture
def make_served(make_engine: MakeEngine, make_pipeline: MakePipeline) -> MakeServed:
    """A ``make_pipeline`` pipeline observed by a ``Metrics`` over an ``InMemoryView``
    (ready, no consumer): ``(pipeline, metrics, view)``."""

    def make(
        *,
        settings: Settings | None = None,
        model_version: str = "test-1",
        **engine_kw: int,
    ) -> tuple[Pipeline, Metrics, InMemoryView]:
        settings = settings or default_settings()
        engine = make_engine(**engine_kw)
        view = InMemoryView(settings, engine, None, model_version)
        metrics = Metrics(view)
        pipe, _, _ = make_pipeline(
            settings=settings, engine=engine, observer=metrics, model_version=model_version
        )
        view.pipeline = pipe
        return pipe, metrics, view

    return make
