"""Errors of weir.

One root, one subtree per package; a third-party error is wrapped at the seam and kept as
``__cause__``. ``retriable`` says whether trying the same call again may succeed.

    WeirError                       (schemas.errors)
    ├── SchemaError                 (schemas.errors)    wire types and feature spec
    │   ├── DecodeError                                 a payload that does not decode
    │   └── FeedError                                   a feed file or import that fails
    ├── EngineError                 (engines.errors)    compiled models and bundles
    │   ├── BundleError                                 missing, tampered or foreign bundle
    │   └── ProfileError                                malformed latency profile
    ├── ServiceError                (service.errors)    Kafka runtime, settings, brokers
    │   ├── ConfigError                                 a bad setting, named with its source
    │   ├── BrokerError             (retriable)         a broker not reachable or startable
    │   ├── ProcessError                                a child process not startable or stoppable
    │   ├── TopicError                                  a needed topic missing or not creatable
    │   ├── PublishError                                a decision the broker did not take
    │   ├── TaskDied                (service.tasks)     a background task raised or returned
    │   ├── RegistryError           (service.registry)  schema registry unreachable (retriable)
    │   ├── SchedulerError          (service.scheduler) the scheduler called off-contract
    │   └── OffsetError             (service.offsets)   offsets tracked out of order
    └── ReplayError                 (replay.errors)     record, replay, measure, report
        └── SloError                (replay.slo)        a bad SLO file
"""

from __future__ import annotations

from typing import ClassVar


class WeirError(Exception):
    """Root of every error weir raises on purpose."""

    retriable: ClassVar[bool] = False


class SchemaError(WeirError):
    """A wire type, codec or feature spec was used wrongly or met bad data."""


class DecodeError(SchemaError):
    """A payload did not decode into its wire type.

    The message names the field, what was expected, what came, and where the record
    came from, e.g. ``decode failed: Expected `int`, got `str` - at `$.bid_qty` -
    topic=quotes partition=3 offset=1200``.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: str = "decode",
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.code = code
        """Dead-letter reason code: ``malformed``, ``invalid_value``, ``unknown_kind``, ..."""
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = ""
        if topic is not None:
            where = f" - topic={topic} partition={partition} offset={offset}"
        super().__init__(f"decode failed: {reason}{where}")


class FeedError(SchemaError):
    """A feed file could not be read or written, or an import met a bad line."""
