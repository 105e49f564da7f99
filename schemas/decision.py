"""Outbound types: the decision published for every event, and the dead-letter record.

A decision carries its input's coordinates (topic, partition, offset, key), the model
version, a status, the label and scores, the stage stamps, and (from an anomaly head) the
likelihood and threshold the label was judged by. Stamps that cross process
boundaries are wall-clock ns since the Unix epoch (``*_wall_ns``); the service converts
its monotonic stamps once per batch, never per field read.
"""

from __future__ import annotations

import enum

import msgspec

from schemas.events import SCHEMA_VERSION


class Status(enum.StrEnum):
    """What happened to an event."""

    OK = "ok"
    """Decided by the model in time (or late, when ``late`` is set)."""
    EXPIRED = "expired"
    """Its deadline could not be met even alone; published without inference."""
    SHED = "shed"
    """Dropped from the queue under overload; published without inference."""
    WARMING = "warming"
    """Its key's feature window is not full yet; no model decision."""
    ERROR = "error"
    """The engine failed on its batch; ``error`` says why."""


class Stamps(msgspec.Struct, frozen=True, kw_only=True):
    """When each stage happened, wall-clock ns; ``None`` for a stage never reached."""

    source_ts_ns: int | None = None
    kafka_ts_ns: int | None = None
    ingest_wall_ns: int | None = None
    dispatch_wall_ns: int | None = None
    infer_done_wall_ns: int | None = None
    publish_wall_ns: int | None = None
    deadline_wall_ns: int | None = None


class Anomaly(msgspec.Struct, frozen=True, kw_only=True):
    """How an ``anomaly`` head judged one event: the evidence behind its label."""

    error: float
    """The raw anomaly score: ``|target - forecast|``."""
    likelihood: float | None
    """The key's anomaly likelihood of ``error``; ``None`` while it still warms up."""
    log_likelihood: float | None
    """``likelihood`` spread over [0, 1] (``engines.likelihood.log_likelihood``)."""
    threshold: float
    """The log-likelihood at or above which the label is ``ALERT`` (the package's)."""


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The one decision published for one input event."""

    topic: str
    partition: int
    offset: int
    key: str
    model_version: str
    status: Status
    label: str = ""
    scores: list[float] = msgspec.field(default_factory=list)
    late: bool = False
    batch_size: int = 0
    error: str | None = None
    stamps: Stamps = msgspec.field(default_factory=Stamps)
    schema_version: int = SCHEMA_VERSION
    anomaly: Anomaly | None = None
    """Set by an ``anomaly`` head on ``ok`` decisions; appended last so old readers decode."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An input that could not be used, kept whole with why and where it came from."""

    topic: str
    partition: int
    offset: int
    reason: str
    """Short code: ``decode``, ``invalid_value``, ``unknown_kind``, ``oversized``, ..."""
    detail: str
    """The full message, e.g. the decode error naming the field."""
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = msgspec.field(default_factory=list)
    kafka_ts_ns: int | None = None
    dead_wall_ns: int = 0
    schema_version: int = SCHEMA_VERSION
