"""Deadline-aware micro-batching: deadlines, the EDF scheduler, baselines, timers, simulator.

The seam is ``Scheduler`` (``base.py``, call contract there); ``EdfScheduler`` is weir's,
``PerEventScheduler`` / ``FixedWindowScheduler`` / ``GreedyScheduler`` are baselines for
comparison. ``service.pipeline``'s dispatch loop runs one on an asyncio loop, sleeping on a
sub-millisecond ``Timer`` (``make_timer``); ``simulate`` runs one on a virtual clock.
"""

from service.scheduler.base import Batch, Item, Outcome, Scheduler, SchedulerError, Timer
from service.scheduler.baselines import FixedWindowScheduler, GreedyScheduler, PerEventScheduler
from service.scheduler.deadline import Budgets, Clock, Deadline, DeadlinePolicy, WallToMono
from service.scheduler.edf import EdfScheduler
from service.scheduler.sim import EmpiricalService, SimResult, simulate
from service.scheduler.timer import CallAtTimer, TimerFdTimer, make_timer

__all__ = [
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
