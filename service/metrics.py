"""Prometheus metrics of one worker, kept off the hot path.

Each ``Runtime`` owns one :class:`Metrics` with its own ``CollectorRegistry`` (never the
process-global one, so two workers in one process, or a test, never share series).
:class:`Metrics` ties together the parts, each in its own module:

=======================  =================================================================
``service.stages``       the stage histograms, the pipeline's batch observer
``service.histogram``    the loop-owned histogram and its latency buckets
``service.lag``          per-partition consumer lag, refreshed once a second
``service.status``       readiness, deadline misses and the ``/status`` document
``service.live``         the per-second series of ``/live``
``service.collector``    every ``weir_`` family, read at scrape time (the list is there)
``service.view``         ``RuntimeView``: what all of them read of the worker
``service.pauses``       GC pauses and event-loop lag of the process
=======================  =================================================================

Cost model
----------
- Counters (events in, decisions, dead letters, misses) are the pipeline's plain ints
  (``Pipeline.counters``), read by a custom ``Collector`` at scrape time: zero hot-path cost.
- Gauges (queue depth, lag, paused partitions, ready, engine profile) are read at scrape
  time too; consumer lag is refreshed once a second by :meth:`Metrics.tick`.
- Histograms are loop-owned (no lock, an observation is one ``bisect`` and two additions).
  The pipeline calls the observer twice per *batch* (:meth:`Metrics.on_batch`,
  :meth:`Metrics.on_published`); the per-event stage latencies of that batch are observed
  there in one loop. Scrapes run on the same loop (the ``service.http`` server), so a
  scrape never sees a half-made observation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest

from service.collector import WeirCollector, render_async
from service.histogram import LoopHistogram
from service.lag import ConsumerLag
from service.live import LiveSeries
from service.pauses import GcPauses, LoopLag
from service.stages import StageHistograms
from service.status import misses, readiness, status_document
from service.view import RuntimeView

if TYPE_CHECKING:
    from service.scheduler.base import Item


class Metrics:
    """One worker's metrics: registry, stage histograms, lag, live series.

    Also the pipeline's batch observer (``on_batch`` / ``on_published``). Everything runs
    on the worker's event loop; nothing here is thread-safe.
    """

    def __init__(
        self,
        view: RuntimeView,
        *,
        wall: Callable[[], int] = time.time_ns,
        live_points: int = 300,
        loop_lag_interval_s: float = 0.01,
    ) -> None:
        self.view = view
        self.registry = CollectorRegistry(auto_describe=False)
        self.stages = StageHistograms(view.engine.buckets)
        self.lag = ConsumerLag(wall)
        self._live = LiveSeries(live_points, wall)
        self._interval_s = 1.0
        self.gc = GcPauses()
        """This process's collections (``service.pauses``); the runtime installs it."""
        self.loop_lag = LoopLag(loop_lag_interval_s)
        """The event-loop lag probe; the runtime runs it (``[gc] loop_lag_interval_ms``)."""
        self._collector = WeirCollector(
            view, self.stages, self.lag, gc=self.gc, loop_lag=self.loop_lag
        )
        self.registry.register(self._collector)

    # -- the pipeline's observer (once per batch each) ------------------------------------

    def on_batch(
        self,
        bucket: int,
        items: Sequence[Item[int]],
        ingest_ns: Sequence[int],
        kafka_ts_ns: Sequence[int | None],
        source_ts_ns: Sequence[int | None],
        dispatch_ns: int,
        done_ns: int,
    ) -> None:
        """A batch ran (see ``service.base.BatchObserver``)."""
        self.stages.on_batch(
            bucket, items, ingest_ns, kafka_ts_ns, source_ts_ns, dispatch_ns, done_ns
        )

    def on_published(self, end_ns: int, mono_to_wall_ns: int) -> None:
        """The batch's decisions were handed to the producer at monotonic ``end_ns``."""
        self.stages.on_published(end_ns, mono_to_wall_ns)

    def observe_commit(self, ns: int) -> None:
        """One successful offset (or transaction) commit took ``ns``."""
        self.stages.observe_commit(ns)

    # -- scrape-time reads ------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """``render``, one metric family at a time with a loop turn between families, so a
        scrape stalls the hot path for one family's formatting, not the whole page's."""
        return await render_async(self._collector)

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker is ready (engine warm, partitions assigned) and why not."""
        return readiness(self.view)

    def misses(self) -> dict[str, int]:
        """Deadline misses so far by outcome: expired, shed, late."""
        return misses(self.view)

    def status(self) -> dict[str, Any]:
        """The ``/status`` document: settings (redacted), engine, assignment, figures."""
        doc = status_document(self.view, self.lag.lag, self._live.series())
        doc["gc"] = self.gc.summary()
        doc["commit"] = _summary(self.stages.commit)
        doc["loop_lag"] = self.loop_lag.summary()
        return doc

    def live(self) -> dict[str, Any]:
        """The ``/live`` document: per-second series, oldest first."""
        return {"interval_s": self._interval_s, "series": self._live.series()}

    # -- once a second -------------------------------------------------------------------------

    async def tick(self) -> None:
        """Refresh consumer lag and append one point to the live series."""
        await self.lag.refresh(self.view.consumer)
        self._live.sample(self.view, self.stages, self.lag)

    def next_sample(self) -> Awaitable[bool]:
        """An awaitable done once the first :meth:`tick` after this call has sampled the
        live series (``LiveSeries.next_sample``)."""
        return self._live.next_sample()

    async def run_sampler(self, interval_s: float = 1.0) -> None:
        """Call :meth:`tick` every ``interval_s`` until cancelled."""
        self._interval_s = interval_s
        while True:
            await asyncio.sleep(interval_s)
            await self.tick()


def _summary(h: LoopHistogram) -> dict[str, Any]:
    """Count, p50 and p99 (ms) of a latency histogram."""
    p50, p99 = h.quantile(0.5), h.quantile(0.99)
    return {
        "count": h.count,
        "p50_ms": None if p50 is None else round(p50 * 1e3, 3),
        "p99_ms": None if p99 is None else round(p99 * 1e3, 3),
    }
