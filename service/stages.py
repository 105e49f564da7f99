"""The per-stage latency histograms of one worker, observed once per batch.

:class:`StageHistograms` is a ``service.base.BatchObserver``: the pipeline calls it twice
per batch that ran the engine, and the per-event figures of that batch (queue wait, end
to end) are observed there in one loop, with the histogram's bisect inlined. Everything
is a :class:`service.histogram.LoopHistogram` owned by the worker's event loop.

=================  ======================================================================
``queue_wait``     dispatch - ingest, per event (monotonic)
``inference``      the engine call, per batch
``publish``        inference done -> last decision handed to the producer, per batch
``e2e_kafka``      decision handed to the producer - the Kafka record timestamp, per event
``e2e_source``     the same from the event's own source timestamp, where it has one
``commit``         one offset (or transaction) commit
``batch_rows``     rows per engine batch, bounded by the engine's buckets
=================  ======================================================================
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.histogram import LoopHistogram

if TYPE_CHECKING:
    from service.scheduler.base import Item


class StageHistograms:
    """The stage histograms above; the pipeline's batch observer (event loop only)."""

    def __init__(self, batch_buckets: Sequence[int]) -> None:
        self.queue_wait = LoopHistogram.seconds()
        self.inference = LoopHistogram.seconds()
        self.publish = LoopHistogram.seconds()
        self.e2e_source = LoopHistogram.seconds()
        self.e2e_kafka = LoopHistogram.seconds()
        self.commit = LoopHistogram.seconds()
        self.batch_rows = LoopHistogram(batch_buckets)
        self._stash_kafka: list[int | None] = []
        self._stash_source: list[int | None] = []
        self._done_ns = 0

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
        """A batch ran: observe its queue waits, size and inference time; keep its
        events' timestamps for :meth:`on_published` (slots are reused after publishing)."""
        qw = self.queue_wait
        bounds = qw.bounds
        counts = qw.counts
        total = 0
        ks = self._stash_kafka
        ss = self._stash_source
        ks.clear()
        ss.clear()
        for item in items:
            slot = item.payload
            w = dispatch_ns - ingest_ns[slot]
            counts[bisect_left(bounds, w)] += 1
            total += w
            ks.append(kafka_ts_ns[slot])
            ss.append(source_ts_ns[slot])
        qw.sum += total
        self.batch_rows.observe(len(items))
        self.inference.observe(done_ns - dispatch_ns)
        self._done_ns = done_ns

    def on_published(self, end_ns: int, mono_to_wall_ns: int) -> None:
        """The batch's decisions were handed to the producer at monotonic ``end_ns``."""
        self.publish.observe(end_ns - self._done_ns)
        end_wall = end_ns + mono_to_wall_ns
        for stash, h in (
            (self._stash_kafka, self.e2e_kafka),
            (self._stash_source, self.e2e_source),
        ):
            bounds = h.bounds
            counts = h.counts
            total = 0
            for ts in stash:
                if ts is not None:
                    v = end_wall - ts
                    if v < 0:
                        v = 0
                    counts[bisect_left(bounds, v)] += 1
                    total += v
            h.sum += total

    def observe_commit(self, ns: int) -> None:
        """One successful offset (or transaction) commit took ``ns``."""
        self.commit.observe(ns)
