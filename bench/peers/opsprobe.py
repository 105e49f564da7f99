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
the endpoint could not be read. The two reads cost the service one page each per trial;
nothing is read while events are measured.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.http import http_get

LOOP_LAG = "weir_event_loop_lag_seconds"
GC_PAUSE = "weir_gc_pause_seconds"
METRICS = (LOOP_LAG, GC_PAUSE)

Buckets = dict[float, float]
"""Upper bound (s) -> cumulative count, summed over the metric's labels."""


def parse_buckets(text: str, names: tuple[str, ...] = METRICS) -> dict[str, Buckets]:
    """Each named histogram's cumulative bucket counts in a Prometheus text page (labels
    other than ``le`` summed: the GC's generations count as one)."""
    out: dict[str, Buckets] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in names:
            continue
        buckets = out.setdefault(family.name, {})
        for sample in family.samples:
            if sample.name != f"{family.name}_bucket":
                continue
            le = float(sample.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + float(sample.value)
    return out


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


async def sample(port: int | None, *, timeout_s: float = 2.0) -> dict[str, Buckets] | None:
    """Both histograms now, or None when there is no endpoint or it did not answer 200
    (the trial goes on without them)."""
    if port is None:
        return None
    code, body = await http_get(port, "/metrics", timeout_s=timeout_s)
    if code != 200:
        return None
    try:
        return parse_buckets(body.decode())
    except ValueError:
        return None


def holds(
    before: dict[str, Buckets] | None, after: dict[str, Buckets] | None
) -> tuple[float | None, float | None]:
    """(loop held, GC pause) at least this many ms during the trial (``held_at_least_ms``)."""
    b, a = before or {}, after or {}
    return (
        held_at_least_ms(b.get(LOOP_LAG), a.get(LOOP_LAG)),
        held_at_least_ms(b.get(GC_PAUSE), a.get(GC_PAUSE)),
    )
