"""The scheduler package's public surface."""

from __future__ import annotations

import service.scheduler


def test_all_is_pinned_and_sorted() -> None:
    """``__all__`` lists exactly the public names, sorted, each importable."""
    assert service.scheduler.__all__ == [
        "Batch",
        "Budgets",
        "CallAtTimer",
        "Clock",
        "Deadline",
        "DeadlinePolicy",
        "EdfScheduler",
        "EmpiricalService",
        "FixedWindowScheduler",
        "GreedyScheduler",
        "Item",
        "Outcome",
        "PerEventScheduler",
        "Scheduler",
        "SchedulerError",
        "SimResult",
        "Timer",
        "TimerFdTimer",
        "WallToMono",
        "make_timer",
        "simulate",
    ]
    assert service.scheduler.__all__ == sorted(service.scheduler.__all__, key=str)
    for name in service.scheduler.__all__:
        assert getattr(service.scheduler, name) is not None
