"""Baseline schedulers, for comparison only (benchmarks, the simulator).

All three are FIFO (so key order is kept trivially), never expire anything, shed new events
at ``max_queued`` like weir does, and never ask for backpressure:

- ``PerEventScheduler``: one event per engine call, as soon as the engine is free.
- ``FixedWindowScheduler``: dispatch when ``max_size`` events are queued or the oldest has
  waited ``max_wait_ns`` (Triton's dynamic batcher / MLServer's adaptive batching).
- ``GreedyScheduler``: whenever the engine is free, take everything queued up to the
  largest bucket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic

from engines.profile import LatencyProfile
from service.errors import ConfigError
from service.scheduler.base import Batch, Item, Outcome, P, SchedulerError

_NONE: tuple[()] = ()


class _FifoScheduler(Generic[P]):
    """Shared FIFO queue, bound and in-flight bookkeeping; subclasses pick the batch size."""

    __slots__ = ("_inflight", "_max", "_profile", "_q", "_seq")

    def __init__(self, profile: LatencyProfile, *, max_queued: int = 20_000) -> None:
        if max_queued < 1:
            raise ConfigError(f"max_queued must be >= 1, got {max_queued}")
        self._profile = profile
        self._max = max_queued
        self._q: deque[Item[P]] = deque()
        self._seq = 0
        self._inflight: Batch[P] | None = None

    @property
    def profile(self) -> LatencyProfile:
        """The latency profile refreshed from completed batches."""
        return self._profile

    @property
    def queued(self) -> int:
        """Events queued, not yet dispatched."""
        return len(self._q)

    @property
    def busy(self) -> bool:
        """Whether a batch is in flight."""
        return self._inflight is not None

    @property
    def paused(self) -> bool:
        """Baselines never ask for backpressure."""
        return False

    def submit(self, item: Item[P], now_ns: int) -> Outcome | None:
        """Queue ``item`` at the tail; ``SHED`` at the bound."""
        if len(self._q) >= self._max:
            return Outcome.SHED
        item.seq = self._seq
        self._seq += 1
        item.enqueued_ns = now_ns
        item.late = False
        self._q.append(item)
        return None

    def submit_all(self, items: Sequence[Item[P]], now_ns: int) -> bool:
        """Queue all of ``items`` at the tail when all fit below the bound; else none."""
        q = self._q
        if len(q) + len(items) > self._max:
            return False
        seq = self._seq
        for item in items:
            item.seq = seq
            seq += 1
            item.enqueued_ns = now_ns
            item.late = False
        self._seq = seq
        q.extend(items)
        return True

    def poll(self, now_ns: int) -> Batch[P] | int | None:
        """The batch to dispatch now, the time to poll again, or ``None``."""
        if self._inflight is not None or not self._q:
            return None
        n = self._size(now_ns)
        if n == 0:
            return self._wake_at()
        q = self._q
        items = [q.popleft() for _ in range(min(n, len(q)))]
        batch: Batch[P] = Batch(items, _NONE, self._profile.bucket_for(len(items)), now_ns)
        self._inflight = batch
        return batch

    def note_wake(self, lateness_ns: int, now_ns: int) -> None:
        """Baselines do not plan around timer error."""

    def note_publish(self, tail_ns: int, now_ns: int) -> None:
        """Baselines do not plan around publishing time."""

    def complete(self, batch: Batch[P], latency_ns: int) -> None:
        """End the in-flight batch and feed its latency to the profile."""
        if batch is not self._inflight:
            raise SchedulerError(
                f"complete() for a batch that is not in flight: {batch!r}, "
                f"in flight: {self._inflight!r}"
            )
        self._inflight = None
        if latency_ns >= 0:  # negative: the batch failed, its time says nothing
            self._profile.observe(batch.bucket, latency_ns)

    def _size(self, now_ns: int) -> int:
        """How many to dispatch now; 0 to wait until ``_wake_at()``."""
        raise NotImplementedError

    def _wake_at(self) -> int:
        """When to poll again after ``_size`` said 0."""
        raise NotImplementedError


class PerEventScheduler(_FifoScheduler[P]):
    """One event per engine call, in arrival order."""

    __slots__ = ()

    def _size(self, now_ns: int) -> int:
        return 1


class GreedyScheduler(_FifoScheduler[P]):
    """Everything queued, up to the largest bucket, whenever the engine is free."""

    __slots__ = ()

    def _size(self, now_ns: int) -> int:
        return self._profile.max_batch


class FixedWindowScheduler(_FifoScheduler[P]):
    """Dispatch at ``max_size`` queued or when the oldest has waited ``max_wait_ns``."""

    __slots__ = ("_max_size", "_max_wait")

    def __init__(
        self,
        profile: LatencyProfile,
        *,
        max_wait_ns: int = 1_000_000,
        max_size: int | None = None,
        max_queued: int = 20_000,
    ) -> None:
        super().__init__(profile, max_queued=max_queued)
        size = profile.max_batch if max_size is None else max_size
        if not 1 <= size <= profile.max_batch:
            raise ConfigError(f"max_size must be in [1, {profile.max_batch}], got {size}")
        if max_wait_ns < 0:
            raise ConfigError(f"max_wait_ns must be >= 0, got {max_wait_ns}")
        self._max_size = size
        self._max_wait = max_wait_ns

    def _size(self, now_ns: int) -> int:
        if len(self._q) >= self._max_size:
            return self._max_size
        if now_ns >= self._wake_at():
            return self._max_size
        return 0

    def _wake_at(self) -> int:
        return self._q[0].enqueued_ns + self._max_wait
