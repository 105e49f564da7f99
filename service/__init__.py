"""weir's Kafka runtime: settings, pipeline, scheduler, state, brokers, CLI.

The seams are ``Record``/``Sink`` (fakes in ``service.memory``), the pipeline's
``BatchObserver`` and the metrics' ``ConsumerLike``, all in ``service.base``; what the ops
side reads of a worker (``service.view``, with its fake); and the scheduler
(``service.scheduler``). ``weir serve`` runs ``service.runtime.Runtime``, whose Prometheus
side is ``service.metrics``.
"""

from service.base import Record, Sink
from service.errors import ConfigError, ServiceError
from service.memory import MemoryRecord, MemorySink
from service.offsets import OffsetTracker
from service.pipeline import Pipeline
from service.settings import Settings, load_settings
from service.state import StateStore

__all__ = [
    "ConfigError",
    "MemoryRecord",
    "MemorySink",
    "OffsetTracker",
    "Pipeline",
    "Record",
    "ServiceError",
    "Settings",
    "Sink",
    "StateStore",
    "load_settings",
]
