"""Build the configured scheduler from settings and an engine's latency profile."""

from __future__ import annotations

from collections.abc import Callable

from engines.profile import LatencyProfile
from service.scheduler.base import Scheduler
from service.scheduler.baselines import FixedWindowScheduler, GreedyScheduler, PerEventScheduler
from service.scheduler.deadline import Budgets
from service.scheduler.edf import EdfScheduler
from service.settings import BatchPolicy, SchedulerSettings


def build_scheduler(
    settings: SchedulerSettings,
    profile: LatencyProfile,
    *,
    on_backpressure: Callable[[bool], None] | None = None,
) -> Scheduler[int]:
    """The scheduler ``settings.policy`` names, bounded by ``settings.max_queue``."""
    budget_ns = Budgets.from_settings(settings).smallest_budget_ns
    match settings.policy:
        case BatchPolicy.DEADLINE:
            return EdfScheduler(
                profile,
                max_queued=settings.max_queue,
                expiry=settings.expiry,
                budget_ns=budget_ns,
                max_hold_ns=None
                if settings.hold_until_safe_start
                else int(settings.max_hold_ms * 1e6),
                on_backpressure=on_backpressure,
            )
        case BatchPolicy.FIXED_WINDOW:
            return FixedWindowScheduler(
                profile,
                max_wait_ns=int(settings.fixed_window_wait_ms * 1e6),
                max_queued=settings.max_queue,
            )
        case BatchPolicy.GREEDY:
            return GreedyScheduler(profile, max_queued=settings.max_queue)
        case BatchPolicy.PER_EVENT:
            return PerEventScheduler(profile, max_queued=settings.max_queue)
