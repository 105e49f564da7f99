"""Deadline-aware micro-batching: deadlines, the EDF scheduler, baselines, driver, simulator.

The seam is ``Scheduler`` (``base.py``, call contract there); ``EdfScheduler`` is weir's,
``PerEventScheduler`` / ``FixedWindowScheduler`` / ``GreedyScheduler`` are baselines for
comparison; ``Driver`` runs any of them on an asyncio loop; ``simulate`` on a virtual clock.
"""

from service.scheduler.base import Batch, Item, Outcome, Scheduler, SchedulerError
from service.scheduler.baselines import FixedWindowScheduler, GreedyScheduler, PerEventScheduler
from service.scheduler.deadline import Budgets, Clock, Deadline, DeadlinePolicy, WallToMono
from service.scheduler.driver import CallAtTimer, Driver, Timer, TimerFdTimer, make_timer
from service.scheduler.edf import EdfScheduler
from service.scheduler.sim import EmpiricalService, SimResult, simulate

__all__ = [
    "Batch",
    "Budgets",
    "CallAtTimer",
    "Clock",
    "Deadline",
    "DeadlinePolicy",
    "Driver",
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
