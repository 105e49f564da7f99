"""The pipeline's counters: plain ints and dicts updated in place on the hot path, read by
the metrics collector at scrape time (``service.collector``), so counting costs no more
than an addition.
"""

from __future__ import annotations

from schemas.decision import Status

__all__ = ["Counters"]


class Counters:
    """Plain counters the metrics endpoint reads (ints, updated in place)."""

    __slots__ = (
        "batch_rows",
        "batches",
        "dead",
        "decisions",
        "engine_errors",
        "events_in",
        "kinds",
        "late",
        "model_loads",
        "probes",
        "produce_errors",
        "shadow",
        "superseded",
        "trace_malformed",
    )

    def __init__(self) -> None:
        self.events_in = 0
        """Records handed to the pipeline (``Pipeline.ingest`` counts each call's at once)."""
        self.superseded = 0
        """Records of ``events_in`` left undecided because their partition was revoked or
        rewound while their fetch was ingested (``Pipeline.ingest``)."""
        self.decisions: dict[Status, int] = dict.fromkeys(Status, 0)
        self.dead: dict[str, int] = {}
        self.batches = 0
        self.batch_rows = 0
        self.engine_errors = 0
        self.produce_errors = 0
        self.probes = 0
        self.late = 0
        self.trace_malformed = 0
        """Input records whose ``traceparent`` was malformed (``service.tracing``)."""
        self.kinds: dict[tuple[str, type | None], int] = {}
        """Records in by (topic, event type); ``None``: dead-lettered."""
        self.model_loads: dict[str, int] = {"loaded": 0, "refused": 0}
        """Model versions swapped in or refused (``service.models``)."""
        self.shadow: dict[str, int] = {"run": 0, "dropped": 0, "failed": 0}
        """Shadow batches run, dropped (the shadow was behind) or failed (``service.shadow``)."""
