"""The scheduler seam: which queued events go to the engine, when, and in what batch.

Call contract (every implementation: ``EdfScheduler`` and the baselines):

- One scheduler per engine, owned by one event loop, not thread-safe, no I/O, never
  blocks. Times are monotonic ns passed in by the caller (``now_ns``); the scheduler reads
  no clock itself, so tests and the simulator drive it with a virtual one.
- The engine runs one batch at a time: after ``poll`` returns a ``Batch`` with items the
  scheduler is ``busy`` and ``poll`` returns ``None`` until ``complete(batch, latency)``.
- An **item** is one event: an opaque ``payload`` handle the scheduler never looks at (a
  row index, a feature vector, a record), a hashable ``key`` (order is kept per key) and
  a ``Deadline``. The caller makes it; the scheduler fills in the bookkeeping slots.
- ``submit(item, now_ns)`` returns ``None`` when the item is queued, or an immediate
  ``Outcome``: ``SHED`` (queue at its bound) or ``EXPIRED`` (too late even alone, and no
  earlier event of its key is queued or in flight). The caller publishes that outcome at once.
- ``submit_all(items, now_ns)`` queues a run of items at once where ``submit`` would queue
  each (True), or queues none (False: the caller then ``submit``s them one by one).
- ``poll(now_ns)`` returns
  * a ``Batch``: publish ``batch.expired`` as ``expired`` and ``batch.shed`` as ``shed``
    (no inference; ``shed``: given up under overload so that more events meet their
    deadlines, see ``service.scheduler.edf``), then run
    ``batch.items`` (possibly empty) through the engine and publish their decisions
    ``ok`` in list order (``item.late`` marks the ones inferred past their deadline),
    then call ``complete``; then call ``poll`` again;
  * an ``int``: nothing to dispatch now; call ``poll`` again at that monotonic ns or at
    the next ``submit``/``complete``, whichever comes first (the timer may be late by its
    wake-up error; the scheduler's guard absorbs that);
  * ``None``: nothing to do until the next ``submit`` or ``complete``.
- ``note_wake(lateness_ns, now_ns)``: the caller reports each timer wake that ``poll``
  asked for and how late it came (``now - asked``), so the scheduler can size its guard;
  ``note_publish(tail_ns, now_ns)`` how long after a batch's engine call its decisions were
  all handed to the sink.
- ``complete(batch, latency_ns)`` ends the in-flight batch and feeds the measured engine
  latency to ``profile.observe``; only for batches with items.
- Outcomes: every submitted item gets exactly one: ``shed`` or ``expired`` from
  ``submit``, ``expired`` from ``batch.expired``, ``shed`` from ``batch.shed``, or ``ok``
  from ``batch.items``.
  Decisions of one key come out in submit order, with one exception: a ``shed`` from
  ``submit`` may precede decisions of earlier events of its key still queued (holding it
  would break the memory bound; backpressure is there so that this stays rare).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence
from typing import Generic, Protocol, TypeVar

import msgspec

from engines.profile import LatencyProfile
from service.errors import ServiceError
from service.scheduler.deadline import Deadline

P = TypeVar("P")


class SchedulerError(ServiceError):
    """The scheduler was called against its contract (e.g. ``complete`` with no batch)."""


class Outcome(enum.StrEnum):
    """What happened to an event, as the scheduler decided it."""

    OK = "ok"
    EXPIRED = "expired"
    SHED = "shed"


class Item(msgspec.Struct, Generic[P], gc=False, eq=False):
    """One event waiting for a decision: payload handle, key, deadline.

    ``seq``, ``enqueued_ns`` and ``late`` are set by the scheduler; the rest is internal
    (``_eff``: the effective deadline, set at submit; ``_live``: not yet taken). One is
    made per event, so it is a struct built in C, not tracked by the garbage collector
    (nothing it holds refers back to it) and equal only to itself.
    """

    payload: P
    key: Hashable
    deadline: Deadline
    seq: int = -1
    enqueued_ns: int = 0
    late: bool = False
    _eff: int = 0
    _live: bool = True

    def __repr__(self) -> str:
        return (
            f"Item(payload={self.payload!r}, key={self.key!r}, "
            f"deadline_ns={self.deadline.mono_ns}, seq={self.seq})"
        )


_NO_ITEMS: Sequence[Item[object]] = ()


class Batch(Generic[P]):
    """What ``poll`` hands out: items to infer now, and items decided ``expired``.

    ``bucket`` is the profile bucket the items run in (0 when there are none);
    ``dispatched_ns`` the ``now_ns`` of the ``poll`` that made it; ``shed`` the items given
    up under overload (decided ``shed``, like ``expired`` without inference).
    """

    __slots__ = ("bucket", "dispatched_ns", "expired", "items", "shed")

    def __init__(
        self,
        items: list[Item[P]],
        expired: Sequence[Item[P]],
        bucket: int,
        dispatched_ns: int,
        shed: Sequence[Item[P]] = (),
    ) -> None:
        self.items = items
        self.expired = expired
        self.bucket = bucket
        self.dispatched_ns = dispatched_ns
        self.shed = shed

    def __repr__(self) -> str:
        return (
            f"Batch(items={len(self.items)}, expired={len(self.expired)}, "
            f"shed={len(self.shed)}, bucket={self.bucket}, dispatched_ns={self.dispatched_ns})"
        )


class Scheduler(Protocol[P]):
    """Decides which queued events run in which batch, and when (see the module docstring)."""

    @property
    def profile(self) -> LatencyProfile:
        """The engine's latency profile this scheduler plans with and refreshes."""
        ...

    @property
    def queued(self) -> int:
        """Events queued, not yet dispatched or decided."""
        ...

    @property
    def busy(self) -> bool:
        """Whether a batch is in flight (dispatched, not yet completed)."""
        ...

    @property
    def paused(self) -> bool:
        """Backpressure: whether the source should pause fetching (with hysteresis)."""
        ...

    def submit(self, item: Item[P], now_ns: int) -> Outcome | None:
        """Queue ``item``; ``None``, or the immediate outcome (``SHED`` or ``EXPIRED``)."""
        ...

    def submit_all(self, items: Sequence[Item[P]], now_ns: int) -> bool:
        """Queue every one of ``items`` (in order) when ``submit`` would queue each of them:
        True; else queue none and return False (the caller ``submit``s them one by one)."""
        ...

    def poll(self, now_ns: int) -> Batch[P] | int | None:
        """A batch to dispatch now, the monotonic ns to poll again at, or ``None``."""
        ...

    def note_wake(self, lateness_ns: int, now_ns: int) -> None:
        """A wake time returned by ``poll`` was reached ``lateness_ns`` late, at ``now_ns``."""
        ...

    def note_publish(self, tail_ns: int, now_ns: int) -> None:
        """A batch's decisions were all handed to the sink ``tail_ns`` after its engine call
        ended, at ``now_ns`` (time the engine profile does not see)."""
        ...

    def complete(self, batch: Batch[P], latency_ns: int) -> None:
        """End the in-flight ``batch``; ``latency_ns`` is what the engine took (-1: it failed)."""
        ...


class Timer(Protocol):
    """A one-shot timer on a loop that calls back at (or just after) a monotonic ns.

    Implementations (``service.scheduler.timer``) take the callback and the loop at
    construction; every method runs on the loop's thread and returns at once.
    """

    def arm(self, when_ns: int) -> None:
        """Fire once at ``when_ns`` (at once if it has passed); replaces any earlier arm."""
        ...

    def disarm(self) -> None:
        """Do not fire (until armed again)."""
        ...

    def close(self) -> None:
        """Release the timer; it never fires again."""
        ...
