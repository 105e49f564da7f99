"""The fake engine: seeded latency models, virtual or real waiting, injected failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from engines import EngineError, FakeEngine, LatencyModel


@pytest.fixture
def make_fake() -> Callable[..., FakeEngine]:
    def make(**kw: Any) -> FakeEngine:
        kw.setdefault("n_features", 4)
        kw.setdefault("max_batch", 8)
        return FakeEngine(**kw)

    return make


def _draws(engine: FakeEngine, bucket: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        engine.infer(bucket)
        out.append(engine.last_latency_ns)
    return out


def test_constant_latency_is_base_plus_slope(make_fake: Callable[..., FakeEngine]) -> None:
    """With sigma 0 every call reports base_ns + per_row_ns * bucket exactly."""
    engine = make_fake(latency=LatencyModel(base_ns=10_000, per_row_ns=500))
    profile = engine.warm_up(30)
    for s in profile.stats():
        assert s.p50_ns == s.p99_ns == s.p999_ns == 10_000 + 500 * s.bucket


def test_per_bucket_override_wins(make_fake: Callable[..., FakeEngine]) -> None:
    """per_bucket_ns sets a bucket's median outright."""
    engine = make_fake(latency=LatencyModel(base_ns=1_000, per_bucket_ns={4: 77_000}))
    assert _draws(engine, 4, 3) == [77_000] * 3
    assert _draws(engine, 2, 1) == [1_000 + 1_000 * 2]


def test_same_seed_same_latencies(make_fake: Callable[..., FakeEngine]) -> None:
    """Two fakes with one seed draw the same lognormal latencies; another seed differs."""
    model = LatencyModel(base_ns=50_000, sigma=0.3, spike_prob=0.05)
    a = _draws(make_fake(latency=model, seed=1), 4, 50)
    b = _draws(make_fake(latency=model, seed=1), 4, 50)
    c = _draws(make_fake(latency=model, seed=2), 4, 50)
    assert a == b
    assert a != c


def test_lognormal_spreads_around_the_median_and_spikes(
    make_fake: Callable[..., FakeEngine],
) -> None:
    """Lognormal draws centre on the median; spikes multiply by spike_factor."""
    model = LatencyModel(base_ns=100_000, per_row_ns=0, sigma=0.2, spike_prob=0.02)
    draws = np.array(_draws(make_fake(latency=model), 1, 4000))
    assert 90_000 < np.median(draws) < 110_000
    assert draws.max() > 5 * 100_000
    assert draws.min() > 0


def test_outputs_are_softmax_of_a_seeded_linear_map(make_fake: Callable[..., FakeEngine]) -> None:
    """Each row's output depends on that row only and matches expected()."""
    engine = make_fake(n_outputs=5, seed=3)
    rows = np.random.default_rng(0).standard_normal((8, 4), dtype=np.float32)
    engine.input_buffer(8)[:] = rows
    out = engine.infer(8)
    np.testing.assert_allclose(out, engine.expected(rows), rtol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    other = make_fake(n_outputs=5, seed=4)
    other.input_buffer(8)[:] = rows
    assert not np.allclose(other.infer(8), out)


def test_fail_every_raises_on_every_nth_call(make_fake: Callable[..., FakeEngine]) -> None:
    """fail_every=3 fails calls 3 and 6 with a message naming call and bucket."""
    engine = make_fake(fail_every=3)
    failed = []
    for call in range(1, 8):
        try:
            engine.infer(2)
        except EngineError as exc:
            failed.append(call)
            assert str(exc) == f"fake engine: injected failure on call {call} (bucket 2)"
    assert failed == [3, 6]


def test_fail_callable_chooses_the_failing_calls(make_fake: Callable[..., FakeEngine]) -> None:
    """A fail(call, bucket) callable decides which calls fail."""
    engine = make_fake(fail=lambda call, bucket: bucket == 8)
    engine.infer(4)
    with pytest.raises(EngineError, match=r"injected failure on call 2 \(bucket 8\)"):
        engine.infer(8)
    assert engine.calls == 2


def test_virtual_clock_gets_every_drawn_latency(make_fake: Callable[..., FakeEngine]) -> None:
    """on_latency receives each drawn time, which is also what the profile records."""
    seen: list[int] = []
    engine = make_fake(latency=LatencyModel(base_ns=5_000, sigma=0.5), on_latency=seen.append)
    reported = _draws(engine, 4, 20)
    assert seen == reported


def test_spin_mode_really_takes_the_drawn_time(make_fake: Callable[..., FakeEngine]) -> None:
    """In spin mode the measured wall time is at least the drawn latency."""
    engine = make_fake(latency=LatencyModel(base_ns=200_000, per_row_ns=0), wait="spin")
    assert min(_draws(engine, 1, 5)) >= 200_000


def test_sleep_mode_really_takes_the_drawn_time(make_fake: Callable[..., FakeEngine]) -> None:
    """In sleep mode the measured wall time is at least the drawn latency."""
    engine = make_fake(latency=LatencyModel(base_ns=1_000_000, per_row_ns=0), wait="sleep")
    assert min(_draws(engine, 1, 3)) >= 1_000_000


def test_a_slowdown_shows_in_the_refreshed_profile(make_fake: Callable[..., FakeEngine]) -> None:
    """After refresh_every slower real calls the profile's p50 follows them."""
    engine = make_fake(latency=LatencyModel(base_ns=10_000, per_row_ns=0))
    profile = engine.warm_up(50)
    assert profile.p50_ns(4) == 10_000
    engine.latency = LatencyModel(base_ns=90_000, per_row_ns=0)
    _draws(engine, 4, profile.refresh_every * 2)
    assert profile.p99_ns(4) == 90_000
    assert profile.p50_ns(4) == 90_000
    assert profile.p50_ns(2) == 10_000


def test_bad_wait_mode_is_refused(make_fake: Callable[..., FakeEngine]) -> None:
    """wait must be none, sleep or spin."""
    with pytest.raises(EngineError) as info:
        make_fake(wait="nap")
    assert str(info.value) == "fake engine: wait must be none, sleep or spin, got 'nap'"
