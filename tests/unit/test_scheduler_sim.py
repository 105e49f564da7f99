"""The discrete-event simulator."""

from __future__ import annotations

import numpy as np
import pytest

from service.scheduler import (
    EdfScheduler,
    EmpiricalService,
    GreedyScheduler,
    PerEventScheduler,
    SchedulerError,
    simulate,
)
from service.scheduler.sim import EXPIRED, OK


def service() -> EmpiricalService:
    """Service times 100 us at bucket 1 up to 400 us at bucket 8, with a small spread."""
    return EmpiricalService({b: [90_000 + 40_000 * b, 110_000 + 40_000 * b] for b in (1, 2, 4, 8)})


def test_empirical_service_draws_the_samples_and_makes_a_profile() -> None:
    """Draws come from the bucket's samples; the profile has the same quantiles."""
    s = service()
    draws = {s(2) for _ in range(200)}
    assert draws == {170_000, 190_000}
    assert s.profile().p99_ns(8) == 430_000


def test_per_event_queues_behind_a_burst() -> None:
    """A burst of 10 through per-event finishes one service time apart."""
    s = EmpiricalService({1: [100_000]})
    res = simulate(PerEventScheduler(s.profile()), [0] * 10, service=s, budget_ns=10**9)
    assert res.decided_ns.tolist() == [100_000 * (i + 1) for i in range(10)]
    assert res.batch_sizes == [1] * 10 and res.busy_ns == 1_000_000
    assert res.attained().all() and res.span_ns == 1_000_000


def test_greedy_batches_what_queued_while_busy() -> None:
    """Greedy runs the first event alone and the rest together."""
    s = EmpiricalService({1: [100_000], 2: [100_000], 4: [100_000], 8: [100_000]})
    res = simulate(GreedyScheduler(s.profile()), [0, 10, 20, 30], service=s, budget_ns=10**9)
    assert res.batch_sizes == [1, 3]


def test_edf_expires_what_cannot_make_it() -> None:
    """With a budget below the single-event time every event expires, none is inferred."""
    s = service()
    res = simulate(EdfScheduler(s.profile()), [0, 5, 10], service=s, budget_ns=50_000)
    assert (res.outcome == EXPIRED).all() and res.batch_sizes == []
    res = simulate(EdfScheduler(s.profile()), [0, 5, 10], service=s, budget_ns=5_000_000)
    assert (res.outcome == OK).all() and res.attained().all()


def test_simulate_needs_deadlines() -> None:
    """Without a budget or deadlines the simulator refuses to run."""
    with pytest.raises(SchedulerError, match=r"^simulate\(\) needs budget_ns or deadlines_ns$"):
        simulate(GreedyScheduler(service().profile()), np.array([0]), service=service())
