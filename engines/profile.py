"""Latency profile of an engine: measured p50/p99/p99.9 per batch bucket.

The scheduler never guesses: it asks the profile how long a batch of a given bucket takes.
Figures come from warm-up measurements and are refreshed online from real batches
(``observe``), over a sliding window of recent samples per bucket.

Call contract: not thread-safe; owned by the event loop that runs the scheduler. ``observe``
is O(1) amortised (a ring buffer); the quantiles are recomputed every ``refresh_every``
observations of a bucket, so a read (``p99_ns``) is a list lookup.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from engines.errors import ProfileError

DEFAULT_WINDOW = 2048
DEFAULT_REFRESH = 64

_VERSIONS = itertools.count()
"""Stamps for ``LatencyProfile.version``, unique across profiles."""


def bucket_sizes(max_batch: int) -> tuple[int, ...]:
    """Return the batch buckets 1, 2, 4, ... up to and including ``max_batch``.

    ``max_batch`` need not be a power of two; it is then the last bucket.
    """
    if max_batch < 1:
        raise ProfileError(f"max_batch must be >= 1, got {max_batch}")
    sizes: list[int] = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return tuple(sizes)


class BucketStats(msgspec.Struct, frozen=True, kw_only=True):
    """Latency quantiles of one bucket, in nanoseconds, and how many samples made them."""

    bucket: int
    p50_ns: int
    p99_ns: int
    p999_ns: int
    samples: int


class LatencyProfile:
    """Per-bucket latency quantiles, measured, refreshed online.

    ``buckets`` is ascending; ``bucket_for(n)`` is the smallest bucket holding ``n`` rows.
    """

    __slots__ = (
        "_count",
        "_index",
        "_p50",
        "_p99",
        "_p999",
        "_pos",
        "_rings",
        "_since",
        "buckets",
        "refresh_every",
        "version",
        "window",
    )

    def __init__(
        self,
        samples_ns: Mapping[int, Sequence[int] | np.ndarray],
        *,
        window: int = DEFAULT_WINDOW,
        refresh_every: int = DEFAULT_REFRESH,
    ) -> None:
        if not samples_ns:
            raise ProfileError("a latency profile needs at least one bucket")
        self.buckets: tuple[int, ...] = tuple(sorted(samples_ns))
        if self.buckets[0] < 1:
            raise ProfileError(f"bucket sizes must be >= 1, got {self.buckets[0]}")
        self.window = window
        self.refresh_every = refresh_every
        self._index = {b: i for i, b in enumerate(self.buckets)}
        n = len(self.buckets)
        self._rings = np.zeros((n, window), dtype=np.int64)
        self._count = [0] * n
        self._pos = [0] * n
        self._since = [0] * n
        self._p50 = [0] * n
        self._p99 = [0] * n
        self._p999 = [0] * n
        self.version = next(_VERSIONS)
        """Changes whenever a quantile may have changed; no two profiles share a value, so
        a caller may cache what it computes from the quantiles under this stamp."""
        for b in self.buckets:
            data = np.asarray(samples_ns[b], dtype=np.int64)
            if data.size == 0:
                raise ProfileError(f"bucket {b} has no latency samples")
            if int(data.min()) < 0:
                raise ProfileError(f"bucket {b} has a negative latency sample")
            i = self._index[b]
            tail = data[-window:]
            self._rings[i, : tail.size] = tail
            self._count[i] = int(tail.size)
            self._pos[i] = int(tail.size) % window
            self._recompute(i)

    @classmethod
    def from_quantiles(cls, stats: Iterable[BucketStats]) -> LatencyProfile:
        """Rebuild a profile from stored quantiles (e.g. a bundle's metadata).

        The quantiles are turned into a small synthetic sample per bucket whose p50, p99
        and p99.9 equal the stored ones, so online refresh can continue from them.
        """
        samples: dict[int, np.ndarray] = {}
        for s in stats:
            # 1000 samples: 990 at p50, 9 at p99, 1 at p99.9 ("higher" percentiles).
            arr = np.empty(1000, dtype=np.int64)
            arr[:990] = s.p50_ns
            arr[990:999] = s.p99_ns
            arr[999:] = s.p999_ns
            samples[s.bucket] = arr
        return cls(samples)

    def _recompute(self, i: int) -> None:
        count = self._count[i]
        recent = self._since[i]
        if 0 < recent < count:
            # Regime change down (a latency spike is over): when the latest samples' p99 is
            # below half the window's, keep only them, or the spike would dominate the
            # window for ``window`` more batches.
            idx = (self._pos[i] - recent + np.arange(recent)) % self.window
            tail = self._rings[i, idx]
            if 2 * int(np.percentile(tail, 99.0, method="higher")) < self._p99[i]:
                self._rings[i, :recent] = tail
                self._count[i] = recent
                self._pos[i] = recent % self.window
        data = self._rings[i, : self._count[i]]
        p50, p99, p999 = np.percentile(data, (50.0, 99.0, 99.9), method="higher")
        self._p50[i] = int(p50)
        self._p99[i] = int(p99)
        self._p999[i] = int(p999)
        self._since[i] = 0
        self.version = next(_VERSIONS)

    def _idx(self, bucket: int) -> int:
        try:
            return self._index[bucket]
        except KeyError:
            raise ProfileError(
                f"no bucket {bucket} in profile; buckets are {list(self.buckets)}"
            ) from None

    @property
    def max_batch(self) -> int:
        """The largest bucket."""
        return self.buckets[-1]

    def bucket_for(self, n: int) -> int:
        """Return the smallest bucket that holds ``n`` rows (``n`` >= 1, <= max)."""
        for b in self.buckets:
            if b >= n:
                return b
        raise ProfileError(f"batch of {n} rows exceeds the largest bucket {self.buckets[-1]}")

    def p50_ns(self, bucket: int) -> int:
        """Median latency of ``bucket`` in ns."""
        return self._p50[self._idx(bucket)]

    def p99_ns(self, bucket: int) -> int:
        """99th percentile latency of ``bucket`` in ns."""
        return self._p99[self._idx(bucket)]

    def p999_ns(self, bucket: int) -> int:
        """99.9th percentile latency of ``bucket`` in ns."""
        return self._p999[self._idx(bucket)]

    def observe(self, bucket: int, latency_ns: int, *, refresh_every: int | None = None) -> None:
        """Record one real batch's latency; quantiles refresh every ``refresh_every`` samples
        of the bucket (the profile's own unless given: a caller probing an engine that every
        event has given up on refreshes after a few samples, so a finished spike is dropped
        in a few probes rather than ``self.refresh_every``)."""
        i = self._idx(bucket)
        self._rings[i, self._pos[i]] = latency_ns
        self._pos[i] = (self._pos[i] + 1) % self.window
        if self._count[i] < self.window:
            self._count[i] += 1
        self._since[i] += 1
        if self._since[i] >= (self.refresh_every if refresh_every is None else refresh_every):
            self._recompute(i)

    def adopt(self, other: LatencyProfile) -> None:
        """Take ``other``'s samples and quantiles in place (a new model version's measured
        profile), so whoever holds this object plans with the new figures from now on.
        The buckets must be the same."""
        if other.buckets != self.buckets:
            raise ProfileError(
                f"cannot adopt a profile of buckets {list(other.buckets)} into one of "
                f"{list(self.buckets)}"
            )
        self.window = other.window
        self.refresh_every = other.refresh_every
        self._rings = other._rings.copy()
        self._count = list(other._count)
        self._pos = list(other._pos)
        self._since = list(other._since)
        self._p50 = list(other._p50)
        self._p99 = list(other._p99)
        self._p999 = list(other._p999)
        self.version = next(_VERSIONS)  # new quantiles: whatever was cached from them is stale

    def samples_ns(self) -> dict[int, np.ndarray]:
        """Each bucket's samples the quantiles are computed from, oldest first (copies)."""
        out: dict[int, np.ndarray] = {}
        for i, b in enumerate(self.buckets):
            ring = self._rings[i, : self._count[i]]
            out[b] = ring.copy() if self._count[i] < self.window else np.roll(ring, -self._pos[i])
        return out

    def stats(self) -> list[BucketStats]:
        """Current quantiles of every bucket, ascending by bucket."""
        return [
            BucketStats(
                bucket=b,
                p50_ns=self._p50[i],
                p99_ns=self._p99[i],
                p999_ns=self._p999[i],
                samples=self._count[i],
            )
            for i, b in enumerate(self.buckets)
        ]


def format_stats(stats: Iterable[BucketStats]) -> str:
    """A fixed-width table of per-bucket quantiles in microseconds (for CLIs and benches)."""
    lines = [f"{'bucket':>6}  {'p50_us':>9}  {'p99_us':>9}  {'p99.9_us':>9}  {'samples':>7}"]
    lines += [
        f"{s.bucket:>6}  {s.p50_ns / 1e3:>9.1f}  {s.p99_ns / 1e3:>9.1f}  "
        f"{s.p999_ns / 1e3:>9.1f}  {s.samples:>7}"
        for s in stats
    ]
    return "\n".join(lines)
