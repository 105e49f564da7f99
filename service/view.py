"""What the ops side reads of one worker: the ``RuntimeView`` seam and its in-process fake.

``service.metrics``, readiness and ``/status`` (``service.status``) and the Prometheus
collector (``service.collector``) read a worker only through :class:`RuntimeView`;
``service.runtime.Runtime`` satisfies it, and :class:`InMemoryView` stands in for it where
a pipeline is served without Kafka (the in-process replay, benchmarks, tests).

Call contract: every property is read on the worker's event loop, at scrape or sample
time, never from the hot path; reads must not block. ``pipeline`` is ``None`` until the
worker has connected; ``consumer`` is ``None`` without Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engines.base import Engine
    from service.base import ConsumerLike
    from service.models import ModelControl
    from service.pipeline import Pipeline
    from service.settings import Settings


class RuntimeView(Protocol):
    """The parts of a worker the metrics, ``/readyz`` and ``/status`` read."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def pipeline(self) -> Pipeline | None: ...

    @property
    def consumer(self) -> ConsumerLike | None: ...

    @property
    def ready(self) -> bool:
        """Partitions are assigned (no rebalance in progress)."""
        ...

    @property
    def rebalances(self) -> int: ...

    @property
    def commits(self) -> int: ...

    @property
    def model_version(self) -> str: ...

    @property
    def worker_index(self) -> int: ...

    @property
    def models(self) -> ModelControl | None:
        """Live model swap (``service.models``); None where there is none."""
        ...


class InMemoryView:
    """A ``RuntimeView`` over a pipeline served without Kafka (replay in process, tests).

    Its fields are plain attributes: set ``pipeline`` once the pipeline exists (it needs
    the metrics as its observer first), flip ``ready`` to act out a rebalance.
    """

    def __init__(
        self, settings: Settings, engine: Engine, pipeline: Pipeline | None, model_version: str
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.pipeline = pipeline
        self.consumer: ConsumerLike | None = None
        self.ready = True
        self.rebalances = 0
        self.commits = 0
        self.model_version = model_version
        self.worker_index = 0
        self.models: ModelControl | None = None
