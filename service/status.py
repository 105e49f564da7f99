"""Readiness, deadline misses and the ``/status`` document of one worker.

Plain functions of a :class:`service.view.RuntimeView`, read at scrape time on the
worker's event loop: ``/readyz`` and the ``weir_ready`` gauge answer :func:`readiness`,
the ``weir_deadline_misses_total`` counter and the live series count :func:`misses`, and
``/status`` serves :func:`status_document`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from engines.errors import EngineError
from service.lag import TP
from service.view import RuntimeView

RECENT_POINTS = 10
"""Live points per series that ``/status`` repeats (the last ten seconds)."""


def readiness(view: RuntimeView) -> tuple[bool, str]:
    """Whether the worker is ready (engine warm, partitions assigned) and why not."""
    pipe = view.pipeline
    try:
        view.engine.profile  # noqa: B018 - raises until warmed up
    except EngineError:
        return False, "engine not warmed up"
    if pipe is None:
        return False, "not started: connecting to Kafka"
    if pipe.failed is not None:
        return False, str(pipe.failed)
    if not view.ready:
        return False, "rebalancing: no partitions assigned yet"
    consumer = view.consumer
    if consumer is not None and not consumer.assignment():
        return False, "no partitions assigned (more consumers than partitions?)"
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "coordinator_id", 0) is None:
        # aiokafka drops the coordinator when the broker goes away; it is found again
        # once the broker answers (there is no public accessor for this).
        return False, "broker unreachable: no group coordinator"
    return True, "ready"


def misses(view: RuntimeView) -> dict[str, int]:
    """Deadline misses so far by outcome: expired, shed, late."""
    pipe = view.pipeline
    if pipe is None:
        return {"expired": 0, "shed": 0, "late": 0}
    c = pipe.counters
    d = {s.value: n for s, n in c.decisions.items()}
    return {"expired": d.get("expired", 0), "shed": d.get("shed", 0), "late": c.late}


def status_document(
    view: RuntimeView,
    lag: Mapping[TP, tuple[int, float]],
    live: Mapping[str, Sequence[float | None]],
) -> dict[str, Any]:
    """The ``/status`` document: settings (redacted), engine, assignment with ``lag`` per
    partition, counters, misses and the last :data:`RECENT_POINTS` of each ``live`` series."""
    ok, reason = readiness(view)
    engine: dict[str, Any] = msgspec.to_builtins(view.engine.describe())
    try:
        profile = [msgspec.to_builtins(s) for s in view.engine.profile.stats()]
    except EngineError:
        profile = []
    return {
        "worker": view.worker_index,
        "model_version": view.model_version,
        "model": view.models.status() if view.models is not None else None,
        "ready": {"ok": ok, "reason": reason},
        "rebalances": view.rebalances,
        "commits": view.commits,
        "engine": engine,
        "profile": profile,
        "assignment": _assignment(view, lag),
        "counters": _counters(view),
        "misses": misses(view),
        "recent": {k: list(col[-RECENT_POINTS:]) for k, col in live.items()},
        "settings": view.settings.redacted(),
    }


def _counters(view: RuntimeView) -> dict[str, Any]:
    pipe = view.pipeline
    if pipe is None:
        return {}
    c = pipe.counters
    return {
        "events_in": c.events_in,
        "decisions": {s.value: n for s, n in c.decisions.items()},
        "dead_letters": dict(c.dead),
        "batches": c.batches,
        "batch_rows": c.batch_rows,
        "engine_errors": c.engine_errors,
        "produce_errors": c.produce_errors,
        "late": c.late,
        "queued": pipe.queued,
        "model_loads": dict(c.model_loads),
        "shadow_batches": dict(c.shadow),
    }


def _assignment(view: RuntimeView, lag: Mapping[TP, tuple[int, float]]) -> list[dict[str, Any]]:
    consumer = view.consumer
    if consumer is None:
        return []
    paused = {(tp.topic, tp.partition) for tp in consumer.paused()}
    assigned = sorted((tp.topic, tp.partition) for tp in consumer.assignment())
    return [
        {
            "topic": t,
            "partition": p,
            "paused": (t, p) in paused,
            "lag_records": lag.get((t, p), (None, None))[0],
            "lag_seconds": lag.get((t, p), (None, None))[1],
        }
        for t, p in assigned
    ]
