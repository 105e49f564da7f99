"""The per-second series ``/live`` serves: rates and latency quantiles of the last seconds.

Once a second the metrics sampler calls :meth:`LiveSeries.sample`, which snapshots the
pipeline's counters and the stage histograms' bucket counts and appends one point per
series computed from the difference to the previous snapshot: rates per second from the
counters, quantiles in ms from the histogram deltas (only the observations of that
second), the mean and p99 batch size, consumer lag and queue depth. The first sample is
the baseline and appends nothing. A ring keeps the last ``points`` seconds.

Everything runs on the worker's event loop; :meth:`LiveSeries.next_sample` lets a reader
(a test, a push to a dashboard) wait for the next sample instead of guessing its time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from service.histogram import bucket_quantile
from service.lag import ConsumerLag
from service.stages import StageHistograms
from service.status import misses
from service.view import RuntimeView

LIVE_SERIES: tuple[str, ...] = (
    "t",
    "events_per_s",
    "decisions_per_s",
    "misses_per_s",
    "dead_per_s",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "e2e_p999_ms",
    "e2e_source_p99_ms",
    "queue_wait_p99_ms",
    "inference_p99_ms",
    "batch_mean",
    "batch_p99",
    "lag_records",
    "lag_seconds",
    "queued",
)
"""The per-second series ``/live`` serves, in order."""


class LiveSeries:
    """A ring of the last ``points`` per-second points of every :data:`LIVE_SERIES`."""

    def __init__(self, points: int, wall: Callable[[], int]) -> None:
        self.rows: deque[tuple[float | None, ...]] = deque(maxlen=points)
        self._wall = wall
        self._prev: dict[str, Any] = {}
        self._sampled = asyncio.Event()

    def series(self) -> dict[str, list[float | None]]:
        """Each series by name, oldest point first, all the same length."""
        cols = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(LIVE_SERIES)
        return {name: list(col) for name, col in zip(LIVE_SERIES, cols, strict=True)}

    def next_sample(self) -> Awaitable[bool]:
        """An awaitable done at the first :meth:`sample` after this call (the baseline
        sample counts); it is bound now, so a sample before it is first awaited counts."""
        return self._sampled.wait()

    def sample(self, view: RuntimeView, stages: StageHistograms, lag: ConsumerLag) -> None:
        """Snapshot the figures now and append the point since the previous snapshot."""
        self._append(view, stages, lag)
        sampled, self._sampled = self._sampled, asyncio.Event()
        sampled.set()

    def _append(self, view: RuntimeView, stages: StageHistograms, lag: ConsumerLag) -> None:
        pipe = view.pipeline
        now = self._wall() / 1e9
        c = pipe.counters if pipe is not None else None
        cur: dict[str, Any] = {
            "t": now,
            "events": c.events_in if c else 0,
            "decisions": sum(c.decisions.values()) if c else 0,
            "misses": sum(misses(view).values()),
            "dead": sum(c.dead.values()) if c else 0,
            "e2e": list(stages.e2e_kafka.counts),
            "e2e_source": list(stages.e2e_source.counts),
            "queue_wait": list(stages.queue_wait.counts),
            "inference": list(stages.inference.counts),
            "batch": list(stages.batch_rows.counts),
            "batch_sum": stages.batch_rows.sum,
        }
        prev = self._prev
        self._prev = cur
        if not prev:
            return
        dt = max(now - float(prev["t"]), 1e-3)
        bounds = stages.queue_wait.bounds  # every latency histogram's

        def rate(k: str) -> float:
            return round(float(cur[k] - prev[k]) / dt, 3)

        def ms(k: str, q: float) -> float | None:
            delta = [a - b for a, b in zip(cur[k], prev[k], strict=True)]
            got = bucket_quantile(bounds, 1e-9, delta, q)
            return None if got is None else round(got * 1e3, 4)

        batches = sum(cur["batch"]) - sum(prev["batch"])
        lags = lag.lag.values()
        self.rows.append(
            (
                round(now, 3),
                rate("events"),
                rate("decisions"),
                rate("misses"),
                rate("dead"),
                ms("e2e", 0.5),
                ms("e2e", 0.99),
                ms("e2e", 0.999),
                ms("e2e_source", 0.99),
                ms("queue_wait", 0.99),
                ms("inference", 0.99),
                round((cur["batch_sum"] - prev["batch_sum"]) / batches, 2) if batches else None,
                stages.batch_rows.quantile(0.99, prev["batch"]),
                float(sum(r for r, _ in lags)),
                round(max((s for _, s in lags), default=0.0), 3),
                float(pipe.queued) if pipe is not None else 0.0,
            )
        )
