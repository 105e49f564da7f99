"""weir's Kafka runtime: settings, pipeline, scheduler, state, brokers, CLI.

The seams are ``Record``/``Sink`` (``service.base``, fakes in ``service.memory``) and the
scheduler (``service.scheduler``). ``weir serve`` runs ``service.runtime.Runtime``.
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
