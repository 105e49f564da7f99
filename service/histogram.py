"""A histogram owned by one event loop, and the latency buckets every weir histogram uses.

:class:`LoopHistogram` has no lock: it is observed and read on the worker's event loop
only (the pipeline's observer and the scrape run there), so an observation is one
``bisect`` and two additions. Its quantiles interpolate inside a bucket as PromQL's
``histogram_quantile`` does, over all observations or over those made since a snapshot of
``counts`` (what the live sampler uses for per-second figures).

Every latency histogram uses :data:`LATENCY_BUCKETS_S` (10 µs … 10 s, 1-2.5-5 steps): the
client library's defaults start at 5 ms, coarser than the work measured here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

LATENCY_BUCKETS_S: tuple[float, ...] = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds of every latency histogram, in seconds."""


class LoopHistogram:
    """A histogram owned by one event loop: no lock; ``observe`` is a bisect and two adds.

    Values are integers in the unit of ``bounds`` (ns for latencies, rows for batch sizes);
    ``scale`` turns them into the exported unit (1e-9: ns to seconds).
    """

    __slots__ = ("bounds", "counts", "les", "scale", "sum")

    def __init__(self, bounds: Sequence[int], scale: float = 1.0) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0
        self.scale = scale
        self.les = [repr(round(b * scale, 12)) for b in self.bounds]

    @classmethod
    def seconds(cls, bounds_s: Sequence[float] = LATENCY_BUCKETS_S) -> LoopHistogram:
        """A latency histogram observed in ns and exported in seconds."""
        return cls([round(b * 1e9) for b in bounds_s], 1e-9)

    def observe(self, value: int) -> None:
        """Count one value (negative values count as 0)."""
        if value < 0:
            value = 0
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs in exposition form, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        acc = 0
        for le, c in zip(self.les, self.counts, strict=False):
            acc += c
            out.append((le, acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out

    def quantile(self, q: float, since: Sequence[int] | None = None) -> float | None:
        """The ``q`` quantile in exported units over the observations made after ``since``
        (a copy of ``counts`` taken earlier; all when ``None``); ``None`` without any."""
        counts = self.counts
        if since is not None:
            counts = [a - b for a, b in zip(counts, since, strict=True)]
        return bucket_quantile(self.bounds, self.scale, counts, q)


def bucket_quantile(
    bounds: Sequence[int], scale: float, counts: Sequence[int], q: float
) -> float | None:
    """The ``q`` quantile of per-bucket ``counts`` (``+Inf`` last) over ``bounds``, in
    ``scale`` units, interpolated inside its bucket as PromQL ``histogram_quantile``;
    ``None`` when every count is 0."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    acc = 0
    for i, c in enumerate(counts):
        if c and acc + c >= rank:
            if i == len(bounds):  # the +Inf bucket: the highest finite bound
                return bounds[-1] * scale
            lo = bounds[i - 1] if i > 0 else 0
            return (lo + (bounds[i] - lo) * (rank - acc) / c) * scale
        acc += c
    return bounds[-1] * scale  # pragma: no cover - rank <= total
