"""weir's Kafka runtime: settings, pipeline, scheduler, state, brokers, CLI.

The seams are ``Record``/``Sink`` (fakes in ``service.memory``), the pipeline's
``BatchObserver`` and ``BatchTracer`` (``service.otel``), the metrics' ``ConsumerLike``, the topic admin ``TopicAdmin`` and the
Kafka clients the runtime opens (``Clients``, fakes in ``service.memory_kafka``), all in
``service.base``; what the ops side reads of a worker (``service.view``, with its fake); and
the scheduler (``service.scheduler``). Background tasks run under a ``TaskSupervisor``.
``weir serve`` runs ``service.runtime.Runtime``, whose Prometheus side is ``service.metrics``.
"""

from service.base import Clients, Record, Sink
from service.errors import ConfigError, PublishError, ServiceError
from service.memory import MemoryRecord, MemorySink
from service.memory_kafka import MemoryKafka
from service.offsets import OffsetTracker
from service.pipeline import Pipeline
from service.settings import Settings, load_settings
from service.state import StateStore
from service.tasks import TaskDied, TaskSupervisor

__all__ = [
    "Clients",
    "ConfigError",
    "MemoryKafka",
    "MemoryRecord",
    "MemorySink",
    "OffsetTracker",
    "Pipeline",
    "PublishError",
    "Record",
    "ServiceError",
    "Settings",
    "Sink",
    "StateStore",
    "TaskDied",
    "TaskSupervisor",
    "load_settings",
]
