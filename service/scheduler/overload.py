"""EDF's overload rule (rule 4 in ``service.scheduler.edf``): the bucket that decides the most
queued events in time per second of engine time, shedding the more urgent heads it misses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engines.profile import LatencyProfile
from service.scheduler.base import Item, P


def goodput_bucket(
    queues: Iterable[Sequence[Item[P]]],
    profile: LatencyProfile,
    b: int,
    queued: int,
    margin_ns: int,
    now_ns: int,
) -> tuple[int, int]:
    """Under overload, a bucket larger than ``b`` (the one EDF would run; 0 when even the
    smallest misses the top's deadline with the overload margin) that decides more events in
    time per second of engine time than ``b``, with the deadline threshold its events must
    meet; ``(0, 0)`` when ``b`` is the best. A bucket is chosen only when at least one
    queued event meets its threshold.

    ``queues``: each key's queued events, oldest first; ``queued``: how many in all;
    ``margin_ns``: the guard and the publish tail (``service.scheduler.margins``).

    Bucket ``c`` can decide the queued events whose own deadline is at least
    ``now + p99.9(c) + margin`` (shedding the more urgent ones before them in their keys),
    up to ``c``. Each key's queue is read youngest first and the count stops once the
    largest bucket is full, so this is O(max batch) in the usual backlog of fresh events
    behind old ones, O(queued) at worst, once per batch, only while paused."""
    p99 = profile.p99_ns
    cands = [c for c in profile.buckets if c > b]
    if not cands:
        return 0, 0
    thresholds = [now_ns + profile.p999_ns(c) + margin_ns for c in cands]
    counts = [0] * len(cands)
    lowest = min(thresholds)
    for q in queues:
        for it in reversed(q):
            dl = it.deadline.mono_ns
            if dl < lowest:
                break  # older events of a key have earlier deadlines, as a rule
            for j, t in enumerate(thresholds):
                if dl >= t:
                    counts[j] += 1
        if all(m >= c for m, c in zip(counts, cands, strict=True)):
            break
    best = threshold = 0
    best_rate = min(b, queued) / p99(b) if b else 0.0
    for c, met, t in zip(cands, counts, thresholds, strict=True):
        rate = min(c, met) / p99(c)
        if rate > best_rate:
            best, best_rate, threshold = c, rate, t
    return best, threshold
