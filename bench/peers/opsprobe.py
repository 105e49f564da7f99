"""What weir's own process went through during a trial, read from its ops endpoint.

A trial's stage breakdown says where an event's time went (``replay.measure``: broker in,
queue, inference, publish, broker out); it cannot say whether a 100 ms gap in ``broker_in``
was the broker, the Kafka client, or weir's process not running. weir times that itself:
every event-loop wake-up that came late (``weir_event_loop_lag_seconds``: something held
the loop, or the host did not schedule the process) and every garbage collection
(``weir_gc_pause_seconds``), as cumulative Prometheus histograms on ``/metrics``.

So each single-worker weir session serves its ops endpoint on a port of its own, the
harness reads ``/metrics`` before and after each trial, and the difference of the bucket
counts gives the longest hold the trial saw, to the resolution of the buckets
(``held_at_least_ms``): 0 when every wake-up was on time to the first bucket, None when
the endpoint could not be read. The same two reads give the trial's mean engine batch
(``mean_batch``, from ``weir_batch_size_rows``): with a model whose cost per call is
mostly fixed, the batch size is what weir's CPU per event follows. The two reads cost the
service one page each per trial; nothing is read while events are measured.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from service.http import http_get

LOOP_LAG = "weir_event_loop_lag_seconds"
GC_PAUSE = "weir_gc_pause_seconds"
METRICS = (LOOP_LAG, GC_PAUSE)
BATCH_ROWS = "weir_batch_size_rows"

Buckets = dict[float, float]
"""Upper bound (s) -> cumulative count, summed over the metric's labels."""


class Page(NamedTuple):
    """One read of ``/metrics``: the stall histograms' buckets, and the engine batches so
    far as (batches, rows), None where the page has no ``weir_batch_size_rows``."""

    buckets: dict[str, Buckets]
    batches: tuple[float, float] | None


def parse_page(text: str) -> Page:
    """A Prometheus text page's stall histograms, each as its cumulative bucket counts
    (labels other than ``le`` summed: the GC's generations count as one), and its batch
    totals."""
    batches: tuple[float, float] | None = None
    buckets: dict[str, Buckets] = {}
    for family in text_string_to_metric_families(text):
        if family.name == BATCH_ROWS:
            total = {s.name: float(s.value) for s in family.samples}
            n, rows = total.get(f"{BATCH_ROWS}_count"), total.get(f"{BATCH_ROWS}_sum")
            batches = None if n is None or rows is None else (n, rows)
        elif family.name in METRICS:
            buckets[family.name] = _buckets(family)
    return Page(buckets, batches)


def _buckets(family: Metric) -> Buckets:
    buckets: Buckets = {}
    for sample in family.samples:
        if sample.name != f"{family.name}_bucket":
            continue
        le = float(sample.labels["le"])
        buckets[le] = buckets.get(le, 0.0) + float(sample.value)
    return buckets


def held_at_least_ms(before: Buckets | None, after: Buckets | None) -> float | None:
    """The lower edge (ms) of the highest bucket whose count grew between two reads of a
    cumulative histogram: the longest hold was at least that long (0.0: nothing grew above
    the first bucket; None: a read is missing)."""
    if before is None or after is None:
        return None
    worst = lower = grew_below = 0.0
    for le in sorted(after):
        grew = after[le] - before.get(le, 0.0)  # wake-ups at or below ``le`` this trial
        if grew > grew_below:
            worst = lower
        grew_below, lower = grew, le
    return worst * 1e3


async def sample(port: int | None, *, timeout_s: float = 2.0) -> Page | None:
    """The page now, or None when there is no endpoint or it did not answer 200 (the
    trial goes on without it)."""
    if port is None:
        return None
    code, body = await http_get(port, "/metrics", timeout_s=timeout_s)
    if code != 200:
        return None
    try:
        return parse_page(body.decode())
    except ValueError:
        return None


def holds(before: Page | None, after: Page | None) -> tuple[float | None, float | None]:
    """(loop held, GC pause) at least this many ms during the trial (``held_at_least_ms``)."""
    b = {} if before is None else before.buckets
    a = {} if after is None else after.buckets
    return (
        held_at_least_ms(b.get(LOOP_LAG), a.get(LOOP_LAG)),
        held_at_least_ms(b.get(GC_PAUSE), a.get(GC_PAUSE)),
    )


def mean_batch(before: Page | None, after: Page | None) -> float | None:
    """Rows per engine batch during the trial; None without both reads or without a
    batch."""
    if before is None or after is None or before.batches is None or after.batches is None:
        return None
    n = after.batches[0] - before.batches[0]
    return (after.batches[1] - before.batches[1]) / n if n > 0 else None
