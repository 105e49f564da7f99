"""Commits: what the runtime tells the group it has decided.

``Committer`` holds the runtime's two delivery modes (``service.runtime``):

- at-least-once: ``now`` commits the offsets the pipeline's tracker allows (every decision
  below them produced *and* acknowledged); ``soon`` starts the periodic one beside the fetch
  loop (``[delivery] commit_in_background``), one at a time, and ``check`` raises what a
  finished one raised. A ``KafkaError`` is logged (``commit_failed``) and the next commit
  tries again; ``now`` first waits for the one in flight, so commits never reorder.
- ``now`` runs one at a time (a revoke can arrive from aiokafka's coordinator task while
  the fetch loop's commit is in flight);
- exactly-once: ``now`` drains the pipeline, adds the consumed offsets to the transaction
  (``send_offsets_to_transaction``) and commits it; a failed transaction is aborted, every
  assigned partition rewound to its committed offset and the key windows cleared, so the
  aborted decisions are made again. Where the pipeline did not drain in time, the
  transaction is aborted and the worker stops (``failed``, raised by ``check``): what the
  pipeline still held would be decided into the next transaction, beside the decisions
  made again from the rewound offsets; a restart resumes from the last commit instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from service.base import Consumer, Producer
from service.errors import ServiceError
from service.kafka import membership_lost
from service.logs import get_logger
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import DeliveryMode, Settings

__all__ = ["Committer"]

log = get_logger("weir.serve")

FailHook = Callable[[str], None]
Clock = Callable[[], int]


class StallWatch:
    """Whether the event loop stopped turning for longer than ``limit_ns`` (the process was
    stopped, the host stalled): a timer re-armed every ``interval_s`` notes each gap
    between its turns past the limit. ``since(t)`` is race-free after a stall: either the
    timer has turned since (and noted it) or it has not (and the gap is still open).

    Exactly-once uses it with ``session_timeout_ms - heartbeat_interval_ms``: past that no
    heartbeat could go out, the group may have expired this member, and aiokafka's
    ``TxnOffsetCommit`` carries no generation, so the broker would take the transaction's
    offsets from a zombie."""

    def __init__(self, clock: Clock, limit_ns: int, interval_s: float = 0.1) -> None:
        self._clock = clock
        self.limit_ns = limit_ns
        self._interval_s = interval_s
        self._last = clock()
        self.stalled_at = -1
        """When the timer last saw a gap past the limit (clock ns; -1: never)."""
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Arm the timer on the running loop."""
        self._last = self._clock()
        self._timer = asyncio.get_running_loop().call_later(self._interval_s, self._tick)

    def stop(self) -> None:
        """Disarm the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def since(self, t: int) -> bool:
        """A stall seen after ``t`` (clock ns), or one under way now."""
        return self.stalled_at > t or self._clock() - self._last > self.limit_ns

    def _tick(self) -> None:
        now = self._clock()
        if now - self._last > self.limit_ns:
            self.stalled_at = now
        self._last = now
        self._timer = asyncio.get_running_loop().call_later(self._interval_s, self._tick)


class Committer:
    """Commits a worker's progress (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Consumer,
        producer: Producer,
        pipeline: Pipeline,
        metrics: Metrics,
        clock: Clock,
        fail_hook: FailHook | None = None,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._pipeline = pipeline
        self._metrics = metrics
        self._clock = clock
        self._eos = settings.delivery.mode is DeliveryMode.EXACTLY_ONCE
        self._fail_hook = fail_hook
        self.commits = 0
        """Successful commits (offsets or transactions)."""
        self._committing: asyncio.Task[None] | None = None
        """The periodic commit in flight beside the fetch loop (``commit_in_background``)."""
        self.failed: ServiceError | None = None
        """Set when an exactly-once commit found the pipeline undrained: nothing more is
        committed, and ``check`` raises it (the worker stops)."""
        k = settings.kafka
        self.stall = StallWatch(clock, (k.session_timeout_ms - k.heartbeat_interval_ms) * 1_000_000)
        """Exactly-once: loop stalls that may have cost this member its session."""
        self._hold_ns = 2 * k.heartbeat_interval_ms * 1_000_000
        """After a stall, how long commits wait for the heartbeat to tell whether the
        membership survived (two heartbeat intervals)."""
        self._held_until = 0
        self._checked = clock()
        self._lock = asyncio.Lock()
        """One ``now`` at a time: aiokafka calls the revoke listener from its coordinator
        task, which can land while the fetch loop's own commit is in flight, and a second
        ``commit_transaction`` then fails (and the rebalance hands on uncommitted work)."""

    def soon(self) -> None:
        """Start the periodic commit beside the fetch loop, unless one is in flight (``check``
        raises what a finished one raised; a ``KafkaError`` is logged, not raised)."""
        if self._committing is not None:
            return
        self._committing = asyncio.get_running_loop().create_task(
            self._offsets(None), name="weir-commit"
        )

    def check(self) -> None:
        """Raise ``failed``, or what the finished background commit raised (a failure
        stops the worker)."""
        if self.failed is not None:
            raise self.failed
        committing = self._committing
        if committing is not None and committing.done():
            self._committing = None
            committing.result()

    async def now(self, only: set[TopicPartition] | None = None) -> None:
        """Commit now, after the background commit and any other ``now`` in flight have
        finished."""
        async with self._lock:
            if self.failed is not None:
                return  # the transaction was aborted; the restart resumes from the last commit
            pending, self._committing = self._committing, None
            if pending is not None:
                await asyncio.wait([pending])
                pending.result()
            if self._eos:
                await self._transaction()
                return
            await self._offsets(only)

    async def settle(self) -> None:
        """Wait for the background commit in flight (after a failure, nothing else commits:
        one started before it still lands, and only acknowledged offsets)."""
        pending, self._committing = self._committing, None
        if pending is None:
            return
        await asyncio.wait([pending])
        if not pending.cancelled() and pending.exception() is not None:
            log.warning("commit_failed", error=str(pending.exception()))

    async def _offsets(self, only: set[TopicPartition] | None) -> None:
        tracker = self._pipeline.tracker
        moved = tracker.to_commit()
        offsets = {
            TopicPartition(t, p): off
            for (t, p), off in moved.items()
            if only is None or TopicPartition(t, p) in only
        }
        if not offsets:
            return
        t0 = self._clock()
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("commit_failed", error=str(exc))
            return
        tracker.committed({(tp.topic, tp.partition): o for tp, o in offsets.items()})
        self.commits += 1
        self._metrics.observe_commit(self._clock() - t0)

    async def _transaction(self) -> None:
        pipe = self._pipeline
        producer = self._producer
        # Every decision of a consumed record must be in the transaction that commits its
        # offset: stop and let the pipeline finish what it holds (bounded by the budget).
        began = self._clock()
        timeout_ms = self._settings.shutdown.drain_timeout_ms
        if not await pipe.drain(timeout_ms / 1000):
            await self._give_up("drain_timeout_ms", timeout_ms)
            return
        moved = pipe.tracker.to_commit()
        offsets = {TopicPartition(t, p): off for (t, p), off in moved.items()}
        t0 = self._clock()
        try:
            if self._fail_hook is not None:
                self._fail_hook("commit_transaction")
            self._still_member()
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self._settings.kafka.group_id)
            self._still_member()  # the group may have answered a heartbeat meanwhile
            self._not_stalled(began)
            await producer.commit_transaction()
        except (KafkaError, ServiceError) as exc:  # ServiceError: not a member, or injected
            log.warning("transaction_aborted", error=str(exc))
            await self._abort()
            return
        pipe.tracker.committed(moved)
        self.commits += 1
        self._metrics.observe_commit(self._clock() - t0)
        await producer.begin_transaction()

    def _still_member(self) -> None:
        """Raise (the transaction is then aborted) where the group no longer knows this
        member: the broker would take the transaction's offsets all the same (aiokafka's
        ``TxnOffsetCommit`` carries no generation), beside those of the partitions' new
        owner."""
        if membership_lost(self._consumer):
            raise ServiceError("the group no longer knows this member: nothing is committed")

    def _not_stalled(self, began: int) -> None:
        """Raise (the transaction is then aborted) where the loop stalled since the commit
        began (``StallWatch``): the group may have expired this member before its heartbeat
        could tell, and a commit sent now could be a zombie's. What is left is a stall
        after this check, before the commit request is out."""
        if self.stall.since(began):
            raise ServiceError(
                "the event loop stalled while the transaction was being committed, past "
                "session_timeout_ms - heartbeat_interval_ms: the group may have expired this "
                "member meanwhile, so nothing is committed"
            )

    def held(self, now: int) -> bool:
        """Exactly-once, asked at every turn of the fetch loop: whether the periodic commit
        waits, as it does for two heartbeat intervals after a loop stall past the session's
        margin (``StallWatch``): no heartbeat could go out, and a lost membership shows as
        a revoke, whose transaction is aborted, only once the heartbeat has been answered."""
        if not self._eos:
            return False
        if self.stall.since(self._checked):
            self._held_until = now + self._hold_ns
            log.warning("loop_stalled", commit_held_ms=self._hold_ns // 1_000_000)
        self._checked = now
        return now < self._held_until

    def stalled_recently(self) -> bool:
        """Exactly-once: the loop stalled (``StallWatch``) within the last two heartbeat
        intervals, so the membership is not known to have survived."""
        return self._eos and self.stall.since(self._clock() - self._hold_ns)

    async def abandon(self) -> None:
        """Abort the open transaction (at a stop, where committing it is not known to be
        safe); the restart decides its inputs again."""
        if not self._eos:
            return
        async with self._lock:
            await self._abort_quietly()

    async def discard(self, drained: bool) -> None:
        """The group gave this worker's partitions to another member without a revoke
        (``service.kafka.membership_lost``): commit nothing for them. Exactly-once aborts
        the open transaction (decisions for inputs the new owner decides again) and begins
        another, or, where the pipeline did not drain (``drained`` False: what it holds
        would be decided into that one), stops the worker as ``now`` does; at-least-once
        has nothing to undo (its decisions may repeat)."""
        async with self._lock:
            pending, self._committing = self._committing, None
            if pending is not None:
                await asyncio.wait([pending])  # refused by the group: logged, not raised
            if not self._eos or self.failed is not None:
                return
            if not drained:
                await self._give_up("revoke_timeout_ms", self._settings.shutdown.revoke_timeout_ms)
                return
            await self._producer.abort_transaction()
            await self._producer.begin_transaction()

    async def _give_up(self, setting: str, timeout_ms: int) -> None:
        """The pipeline did not drain: abort the transaction and stop the worker."""
        pipe = self._pipeline
        self.failed = ServiceError(
            f"the pipeline did not drain within {setting}={timeout_ms} before the "
            f"transaction ended ({pipe.queued} events queued, {pipe.tracker.pending()} "
            "decisions unacknowledged); stopping this worker so that it restarts from the last "
            "commit, as what it holds, decided after an abort, would be committed beside the "
            "decisions made again"
        )
        log.error("transaction_undrained", error=str(self.failed))
        await self._abort_quietly()

    async def _abort_quietly(self) -> None:
        """Abort the open transaction on the way out; a failure to abort is logged, not raised."""
        try:
            await self._producer.abort_transaction()
        except KafkaError as exc:  # the restart's producer fences and aborts it anyway
            log.warning("transaction_abort_failed", error=str(exc))

    async def _abort(self) -> None:
        consumer = self._consumer
        pipe = self._pipeline
        await self._producer.abort_transaction()
        # Rewind to what the group has committed; the aborted decisions will be made again.
        for tp in list(consumer.assignment()):
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
                start = 0
            else:
                consumer.seek(tp, committed)
                start = committed
            pipe.tracker.reset((tp.topic, tp.partition), start)
        pipe.state.clear()
        await self._producer.begin_transaction()
