"""Probing the engine while every event expires.

When the latency profile says even one event cannot make its deadline (after a latency
spike), every event expires without inference (at submit, or at a poll) and the profile
would never see the engine recover. A probe run (its output discarded; the events stay
``expired``) feeds it fresh samples, at most once per ``PROBE_INTERVAL_NS``, on the bucket
that blocks every batch: the smallest whose p99 misses the tightest budget (a batch of ``b``
rows is planned only when every bucket up to ``b`` fits). The profile recomputes after
``PROBE_REFRESH`` probe samples of a bucket, so a finished spike is dropped in about 200 ms.

Owned by the pipeline's event loop; the caller gathers the probe's rows into the bucket's
input buffer between ``due`` and ``run``.
"""

from __future__ import annotations

from engines.base import Engine
from engines.errors import EngineError
from engines.profile import LatencyProfile
from service.counters import Counters
from service.scheduler.deadline import Budgets

__all__ = ["PROBE_INTERVAL_NS", "PROBE_REFRESH", "Prober"]

PROBE_INTERVAL_NS = 50_000_000
"""At most one probe run per 50 ms while everything expires."""
PROBE_REFRESH = 4
"""Probe samples of a bucket after which its quantiles are recomputed (not the profile's
usual 64): a finished spike is dropped after this many fast probes."""


class Prober:
    """Decides when and on which bucket to time the engine, and records the sample."""

    __slots__ = ("_budgets", "_counters", "_engine", "_last", "_profile")

    def __init__(
        self, engine: Engine, profile: LatencyProfile, budgets: Budgets, counters: Counters
    ) -> None:
        self._engine = engine
        self._profile = profile
        self._budgets = budgets
        self._counters = counters
        self._last = -PROBE_INTERVAL_NS

    def due(self, now_ns: int, rows: int) -> int | None:
        """The bucket to probe now with up to ``rows`` expired rows (the blocking one, else
        the one those rows fill), or None when the last probe was under an interval ago."""
        if now_ns - self._last < PROBE_INTERVAL_NS:
            return None
        self._last = now_ns
        engine = self._engine
        return self.blocking_bucket() or engine.bucket_for(min(rows, engine.max_batch))

    def blocking_bucket(self) -> int | None:
        """The smallest bucket whose p99 misses the tightest budget; None when every bucket
        fits (the events expired waiting in the queue instead)."""
        profile = self._profile
        budget = self._budgets.smallest_budget_ns
        for bucket in profile.buckets:
            if profile.p99_ns(bucket) > budget:
                return bucket
        return None

    def run(self, bucket: int, n: int) -> None:
        """Run the engine on the ``n`` rows gathered into ``bucket``; record its latency."""
        engine = self._engine
        try:
            engine.infer(bucket, n)
        except EngineError:
            self._counters.engine_errors += 1
            return
        self._profile.observe(bucket, engine.last_latency_ns, refresh_every=PROBE_REFRESH)
        self._counters.probes += 1
