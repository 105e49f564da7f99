"""Which assigned partitions backpressure pauses: none, the loose topics', or all.

The scheduler's ``paused`` flag says its queue predicts more delay than the budget allows
(``service.scheduler.edf``). Pausing every partition then holds the waiting events in
Kafka, where no deadline orders them: with two input topics of 30 and 300 ms budgets, the
tight topic's events waited behind the loose topic's in the broker, and the tight class
met its budget less often under weir than under a FIFO batcher. So the level rises in
steps:

1. the scheduler is paused: the partitions of the topics whose budget is larger than the
   tightest assigned topic's are paused; the tightest keep flowing into the scheduler,
   which orders them first (with one budget for every topic, all are paused);
2. the queue holds half of ``scheduler.max_queue`` or more, or the sink is full: every
   assigned partition is paused (memory stays bounded whatever the mix).

It falls back to none once the scheduler resumes and the sink has room. What step 1 does is
``on_overload`` (``[scheduler] pause_on_overload``):

- ``"loose"`` (the default): only the looser topics' partitions pause; with one budget for
  every assigned topic nothing does. The tightest topics keep flowing and the scheduler
  sheds, in its queue, what it cannot decide in time;
- ``True``: as listed, every partition when all share one budget; with ``loose_first=False``
  (``[scheduler] pause_loose_first = false``) every partition at once, whatever its topic's
  budget;
- ``False``: nothing.

Only step 2 pauses the tightest topics by default: events held in the broker wait where no
deadline orders them, age there, and with an ingest anchor are decided ``ok`` by weir's
clock long after they were sent.
"""

from __future__ import annotations

import enum
from typing import Literal

from service.base import Consumer
from service.scheduler.base import Scheduler
from service.scheduler.deadline import Budgets
from service.settings import SchedulerSettings


class Level(enum.IntEnum):
    """How much consumption is paused."""

    NONE = 0
    LOOSE = 1
    ALL = 2


class Backpressure:
    """Pauses and resumes a consumer's partitions by ``Level`` (module docstring)."""

    __slots__ = ("_all_at", "_first", "_only_loose", "level", "pauses")

    def __init__(
        self, max_queue: int, *, on_overload: bool | Literal["loose"], loose_first: bool = True
    ) -> None:
        self._only_loose = on_overload == "loose"
        full = on_overload is True and not loose_first
        self._all_at = 0 if full else max(1, max_queue // 2)
        self._first = Level.NONE if on_overload is False else Level.LOOSE
        self.level = Level.NONE
        self.pauses = 0
        """How many times consumption went from not paused to (partly) paused."""

    @classmethod
    def for_settings(cls, sc: SchedulerSettings) -> Backpressure:
        """The backpressure ``sc`` asks for."""
        return cls(sc.max_queue, loose_first=sc.pause_loose_first, on_overload=sc.pause_on_overload)

    def level_for(self, scheduler: Scheduler[int], sink_full: bool) -> Level:
        """The level the scheduler's state and the sink's call for."""
        if sink_full:
            return Level.ALL
        if not scheduler.paused:
            return Level.NONE
        return Level.ALL if scheduler.queued >= self._all_at else self._first

    def update(
        self, consumer: Consumer, scheduler: Scheduler[int], budgets: Budgets, sink_full: bool
    ) -> None:
        """Pause and resume ``consumer``'s assigned partitions for the current level
        (``budgets``: each topic's, the pipeline's)."""
        level = self.level_for(scheduler, sink_full)
        if level == self.level:
            return
        parts = list(consumer.assignment())
        if level is Level.NONE:
            hold = []
        elif level is Level.ALL:
            hold = parts
        else:
            budget = {tp.topic: budgets.policy(tp.topic).budget_ns for tp in parts}
            tightest = min(budget.values(), default=0)
            hold = [tp for tp in parts if budget[tp.topic] > tightest]
            if not hold and not self._only_loose:
                hold = parts  # one budget for every assigned topic: ``True`` pauses all
            if not hold:
                level = Level.NONE  # ``"loose"``: every assigned topic is the tightest
                if level == self.level:
                    return
        held = set(hold)
        go = [tp for tp in parts if tp not in held]
        if hold:
            consumer.pause(*hold)
        if go:
            consumer.resume(*go)
        if self.level is Level.NONE:
            self.pauses += 1
        self.level = level
