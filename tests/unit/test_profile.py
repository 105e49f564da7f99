"""The latency profile: quantiles per bucket, online refresh, recovery after a spike."""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import ProfileError
from engines.profile import LatencyProfile, bucket_sizes


def test_buckets_and_quantiles() -> None:
    """Buckets double up to the max; quantiles come from the samples."""
    assert bucket_sizes(64) == (1, 2, 4, 8, 16, 32, 64)
    assert bucket_sizes(100)[-1] == 100
    p = LatencyProfile({1: np.arange(1, 1001), 2: [5] * 10})
    assert p.p50_ns(1) == 501 and p.p99_ns(1) == 991 and p.p999_ns(1) == 1000
    assert p.bucket_for(2) == 2
    with pytest.raises(ProfileError, match=r"batch of 3 rows exceeds the largest bucket 2"):
        p.bucket_for(3)
    with pytest.raises(ProfileError, match=r"no bucket 4 in profile; buckets are \[1, 2\]"):
        p.p99_ns(4)


def test_online_refresh_follows_a_slowdown() -> None:
    """Observed batches slower than the warm-up raise the quantiles after a refresh."""
    p = LatencyProfile({1: [100] * 1000}, refresh_every=64)
    for _ in range(64):
        p.observe(1, 10_000)
    assert p.p99_ns(1) == 10_000


def test_spike_is_forgotten_once_it_is_over() -> None:
    """After a long spike, at most two refresh periods of fast batches bring p99 back down."""
    p = LatencyProfile({1: [100] * 1000}, window=2048, refresh_every=64)
    for _ in range(1500):
        p.observe(1, 1_000_000)
    assert p.p99_ns(1) == 1_000_000
    for _ in range(128):
        p.observe(1, 120)
    assert p.p99_ns(1) == 120
    assert p.stats()[0].samples <= 128


def test_from_quantiles_round_trip() -> None:
    """A profile rebuilt from stored quantiles reports the same quantiles."""
    p = LatencyProfile({1: np.arange(1, 1001), 4: np.arange(10, 2010, 2)})
    q = LatencyProfile.from_quantiles(p.stats())
    assert [(s.p50_ns, s.p99_ns, s.p999_ns) for s in q.stats()] == [
        (s.p50_ns, s.p99_ns, s.p999_ns) for s in p.stats()
    ]


def test_a_caller_may_refresh_sooner_and_drop_a_finished_spike() -> None:
    """With ``refresh_every=4`` four fast samples after a spike bring p99 back down, where
    the profile's own cadence (64) would still report the spike."""
    slow = LatencyProfile({1: [5_000_000] * 10}, refresh_every=64)
    fast = LatencyProfile({1: [5_000_000] * 10}, refresh_every=64)
    for _ in range(4):
        slow.observe(1, 100_000)
        fast.observe(1, 100_000, refresh_every=4)
    assert slow.p99_ns(1) == 5_000_000
    assert fast.p99_ns(1) == 100_000


def test_version_changes_with_the_quantiles_and_is_never_shared() -> None:
    """``version`` moves when a refresh recomputes the quantiles, not on a plain sample,
    and two profiles never carry the same one."""
    p = LatencyProfile({1: [100] * 10}, refresh_every=2)
    q = LatencyProfile({1: [100] * 10}, refresh_every=2)
    assert p.version != q.version
    v = p.version
    p.observe(1, 100)
    assert p.version == v
    p.observe(1, 100)
    assert p.version != v and p.version != q.version


def test_samples_are_the_window_oldest_first() -> None:
    """Before the window fills, the samples as given and observed; once it wraps, the last
    ``window`` of them, oldest first; each a copy the profile does not share."""
    p = LatencyProfile({1: [1, 2, 3], 2: [7]}, window=4, refresh_every=100)
    p.observe(1, 4)
    got = p.samples_ns()
    assert got[1].tolist() == [1, 2, 3, 4] and got[2].tolist() == [7]
    p.observe(1, 5)
    p.observe(1, 6)
    assert p.samples_ns()[1].tolist() == [3, 4, 5, 6]
    got = p.samples_ns()
    got[1][:] = 0
    got[2][:] = 0
    assert p.samples_ns()[1].tolist() == [3, 4, 5, 6] and p.samples_ns()[2].tolist() == [7]
