"""weir's scheduler: earliest deadline first, batch sized from the engine's latency profile.

Queue: one FIFO per key and a heap of the key heads ordered by *effective* deadline, the
earliest deadline of the head and everything queued behind it in its key (an event must go
before any later event of its key, so it inherits their urgency). An event becomes eligible
when the one before it in its key is dispatched; it may join that same batch, after it.

The lane: while no queued event's deadline is below an earlier one's (one budget anchored at
ingest, the usual case), every event's effective deadline is its own and EDF order is
arrival order, so the queue is one FIFO (``_lane``) and batches are taken from its front:
the same batches the per-key queues would give (tested side by side), without a deque,
heap entry or dict entry per event. The first event with a deadline before the lane's last
moves the lane into the per-key queues (once, O(queued)), as does overload's rule 4 (which
reads each key's queue) and a hopeless event behind a queued one (whether its key is
queued decides its outcome); the queue goes back to the lane once it is empty.

Rule, at ``poll(now)`` with the engine idle and ``d0`` the earliest effective deadline:

1. Expiry: a head whose own deadline is before ``now + p99(1)`` cannot be met even alone;
   it is decided ``expired`` (policy ``publish``) or inferred and marked ``late``.
2. ``b`` = the largest bucket with ``now + p99(b) + tail <= d0`` (and so for every smaller
   one), where ``tail`` is the longest a recent batch's decisions took to go out after its
   engine call (``note_publish``, the last 256 batches; the deadline is for the published
   decision; planning at the p99 of the tails left 0.5-1.2 % of the decisions served at
   the edge of their deadlines late, in ``python -m chaos --fast --only overload``).
3. Dispatch the ``b`` most urgent events now when ``queued >= b``; otherwise wait for more
   events until the latest safe start of what is queued, ``d0 - p999(bucket(queued)) -
   guard - tail``, and dispatch then. The wait is planned at p99.9 plus a guard for timer
   wake-up error because waiting is the one choice that can make a batch miss that
   dispatching at once would not; ``max_hold_ns`` caps it for callers who prefer latency
   to batch size.
4. Overload (``paused``, below): EDF's bucket is capped by the most urgent head, and in a
   backlog the most urgent heads are the oldest events, so EDF would run small batches,
   throughput would fall under the load and more events would age: a collapse. While
   paused, the bucket is instead the one that decides the most events in time per second
   of engine time (``c`` events meeting ``now + p99.9(c) + guard + tail`` over ``p99(c)``;
   ``service.scheduler.overload``), and every bucket is planned at p99.9 plus the guard
   and the tail, because least slack first serves the events at the edge of their
   deadlines, where a p99 plan would see about 1 % of them late. The more urgent heads
   that bucket would miss are decided ``shed`` (``batch.shed``): held, they would block
   their keys until they expired, and their keys' younger events with them; shed, each
   key's next event can join this very batch.

The guard and the tail are measured, like the profile (``service.scheduler.margins``): the
largest timer lateness (``note_wake``) in the current and the previous ``guard_window_ns``
(10 s), never below ``guard_ns``, and the largest recent publish tail. Waiting still bets
that the loop is not stalled longer than the guard during the wait; where stalls approach
the budget, ``max_hold_ns=0`` (dispatch as soon as the engine is free, still EDF, bucket
capped by the earliest deadline, with expiry and backpressure) decides more events in
time: see ``bench/scheduler.py``.

Overload: when the predicted queueing delay (``queued * p99(max) / max``) exceeds the
budget, or the queue passes ``pause_fraction`` of its bound, ``paused`` turns on (rule 4
applies; ``service.backpressure`` decides which partitions, if any, pause) and
``on_backpressure(True)`` is called; it turns off below ``resume_fraction`` of that level.
At ``max_queued`` new events are shed.

Costs: in the lane, ``submit`` O(1) and ``submit_all`` (a run of events at once) O(run)
with no allocation per event; per key, ``submit`` O(log keys) with one tuple pushed (plus a
walk back through its key's queue when it is more urgent than events before it). ``poll``
O(batch) in the lane, O(batch * log keys) per key; no clock reads, no logging.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from heapq import heapify, heappop, heappush
from typing import Generic

from engines.profile import LatencyProfile
from service.errors import ConfigError
from service.scheduler.base import Batch, Item, Outcome, P, SchedulerError
from service.scheduler.margins import PublishTail, WakeGuard
from service.scheduler.overload import goodput_bucket
from service.settings import ExpiryPolicy

_Entry = tuple[int, int, Item[P]]

_LOWEST = -(1 << 63)
"""Below every deadline: the lane's last deadline while the lane is empty."""


class EdfScheduler(Generic[P]):
    """Deadline-aware micro-batching scheduler (see the module docstring for the rule)."""

    __slots__ = (
        "_asc",
        "_b1",
        "_budget",
        "_expire",
        "_guard",
        "_heap",
        "_hold",
        "_inflight",
        "_keyed",
        "_keys",
        "_lane",
        "_lane_last",
        "_lim",
        "_lim_version",
        "_max",
        "_maxb",
        "_n",
        "_on_bp",
        "_p1",
        "_pause_cap",
        "_paused",
        "_profile",
        "_resume",
        "_seq",
        "_tail",
    )

    def __init__(
        self,
        profile: LatencyProfile,
        *,
        max_queued: int = 20_000,
        expiry: ExpiryPolicy = ExpiryPolicy.PUBLISH,
        guard_ns: int = 200_000,
        guard_window_ns: int = 10_000_000_000,
        max_hold_ns: int | None = None,
        budget_ns: int | None = None,
        pause_fraction: float = 0.75,
        resume_fraction: float = 0.5,
        on_backpressure: Callable[[bool], None] | None = None,
    ) -> None:
        if max_queued < 1:
            raise ConfigError(f"max_queued must be >= 1, got {max_queued}")
        if guard_ns < 0:
            raise ConfigError(f"guard_ns must be >= 0, got {guard_ns}")
        if not 0.0 < resume_fraction < 1.0:
            raise ConfigError(f"resume_fraction must be in (0, 1), got {resume_fraction}")
        if not 0.0 < pause_fraction <= 1.0:
            raise ConfigError(f"pause_fraction must be in (0, 1], got {pause_fraction}")
        self._profile = profile
        self._b1 = profile.buckets[0]
        self._maxb = profile.max_batch
        self._asc = profile.buckets
        self._max = max_queued
        self._expire = expiry is ExpiryPolicy.PUBLISH
        self._guard = WakeGuard(guard_ns, guard_window_ns)
        self._tail = PublishTail()
        self._hold = max_hold_ns
        self._budget = budget_ns
        self._pause_cap = max(1, int(max_queued * pause_fraction))
        self._lim = self._pause_cap
        self._lim_version = -1
        """The profile version ``_lim`` (the backpressure level) was computed at."""
        self._resume = resume_fraction
        self._on_bp = on_backpressure
        self._paused = False
        self._p1 = 0
        """The smallest bucket's p99 at ``_lim_version`` (the submit-time expiry margin)."""
        self._lane: deque[Item[P]] = deque()
        self._lane_last = _LOWEST
        """The deadline of the lane's last event (``_LOWEST`` when the lane is empty)."""
        self._keyed = False
        """Whether the queue is in ``_keys`` and ``_heap`` (else in ``_lane``)."""
        self._keys: dict[Hashable, deque[Item[P]]] = {}
        self._heap: list[_Entry[P]] = []
        self._n = 0
        self._seq = 0
        self._inflight: Batch[P] | None = None

    # -- Scheduler protocol -------------------------------------------------------------

    @property
    def profile(self) -> LatencyProfile:
        """The latency profile this scheduler plans with."""
        return self._profile

    @property
    def queued(self) -> int:
        """Events queued, not yet dispatched or decided."""
        return self._n

    @property
    def busy(self) -> bool:
        """Whether a batch is in flight."""
        return self._inflight is not None

    @property
    def paused(self) -> bool:
        """Backpressure flag (see the module docstring)."""
        return self._paused

    def submit(self, item: Item[P], now_ns: int) -> Outcome | None:
        """Queue ``item``; ``SHED`` at the bound, ``EXPIRED`` if hopeless with its key idle.

        "Idle" means nothing of its key queued and no batch in flight (which might hold an
        earlier event of the key); otherwise a hopeless event queues and expires at a poll.
        """
        item._eff = dl = item.deadline.mono_ns
        if self._profile.version != self._lim_version:
            self._limit()
        n = self._n
        if not self._keyed:
            if dl >= self._lane_last:
                if self._inflight is None and self._expire and dl < now_ns + self._p1:
                    if not n:
                        return Outcome.EXPIRED
                    self._to_keyed()  # whether its key is queued is in the keyed queue
                    return self._submit_keyed(item, dl, now_ns)
                if n >= self._max:
                    return Outcome.SHED
                item.enqueued_ns = now_ns  # its ``seq`` is given if it moves to the heap
                self._n = n = n + 1
                self._lane.append(item)
                self._lane_last = dl
                if self._paused or n > self._lim:
                    self._pressure()
                return None
            self._to_keyed()  # a deadline before the lane's last: EDF needs the heap
        elif not n:
            self._to_lane()
            return self.submit(item, now_ns)
        return self._submit_keyed(item, dl, now_ns)

    def _submit_keyed(self, item: Item[P], dl: int, now_ns: int) -> Outcome | None:
        """``submit`` into the per-key queues and the heap of key heads."""
        key = item.key
        q = self._keys.get(key)
        if (
            q is None
            and self._expire
            and self._inflight is None  # else an earlier event of the key may be in flight
            and dl < now_ns + self._p1
        ):
            return Outcome.EXPIRED
        n = self._n
        if n >= self._max:
            return Outcome.SHED
        seq = self._seq
        self._seq = seq + 1
        item.seq = seq
        item.enqueued_ns = now_ns  # ``late``: as ``Item`` made it
        item._live = True
        self._n = n = n + 1
        if q is None:
            self._keys[key] = deque((item,))
            heappush(self._heap, (dl, seq, item))
        else:
            if dl < q[-1]._eff:
                # Suffix minimum: earlier events of the key inherit this deadline.
                head = q[0]
                before = head._eff
                for prev in reversed(q):
                    if prev._eff <= dl:
                        break
                    prev._eff = dl
                if head._eff != before:
                    heap = self._heap
                    heappush(heap, (head._eff, head.seq, head))
                    if len(heap) > 2 * len(self._keys) + 64:
                        self._compact()  # only an inherited deadline leaves a stale entry
            q.append(item)
        if self._paused or n > self._lim:
            self._pressure()
        return None

    def submit_all(self, items: Sequence[Item[P]], now_ns: int) -> bool:
        """Queue all of ``items``, as ``submit`` one at a time would, when that queues each
        of them: into the lane (nothing may be queued per key), when their deadlines do
        not decrease (from the lane's last), the first is not hopeless (or a batch is in
        flight) and all fit below the bound. Otherwise queue none and return False."""
        if self._keyed:
            if self._n:
                return False
            self._to_lane()
        n = self._n + len(items)
        if n > self._max or not items:
            return False
        last = self._lane_last
        for it in items:
            it._eff = dl = it.deadline.mono_ns
            if dl < last:
                return False
            last = dl
            it.enqueued_ns = now_ns
        if self._profile.version != self._lim_version:
            self._limit()
        if self._inflight is None and self._expire and items[0]._eff < now_ns + self._p1:
            return False
        self._lane.extend(items)
        self._lane_last = last
        self._n = n
        if self._paused or n > self._lim:
            self._pressure()
        return True

    def poll(self, now_ns: int) -> Batch[P] | int | None:
        """The batch to dispatch now, the time to poll again, or ``None`` (idle or busy)."""
        if self._inflight is not None or not (self._heap if self._keyed else self._lane):
            return None
        prof = self._profile
        hopeless = now_ns + prof.p99_ns(self._b1)
        expire = self._expire
        maxb = self._maxb
        expired: list[Item[P]] = []
        items: list[Item[P]] = []
        # 1. Heads that cannot make it even alone.
        while True:
            it = self._head()
            if it is None or it.deadline.mono_ns >= hopeless or (not expire and len(items) >= maxb):
                break
            self._pop_head(it)
            if expire:
                expired.append(it)
            else:
                it.late = True
                items.append(it)
        top = self._head()
        if top is None:
            if items:
                return self._dispatch(items, expired, now_ns)
            self._pressure()
            return Batch(items, expired, 0, now_ns) if expired else None
        d0 = top._eff
        if self._paused:
            # Overload puts the served events at the edge of their deadlines (rule 4), so
            # plan at p99.9 plus the guard there.
            b = self._fit(d0 - now_ns - self._guard.ns - self._tail.ns, prof.p999_ns)
        else:
            b = self._fit(d0 - now_ns - self._tail.ns)
        # 2./3. Wait for more events while that is safe.
        if not items and b and self._n < b:
            bn = prof.bucket_for(self._n)
            self._guard.age(now_ns)
            latest = d0 - prof.p999_ns(bn) - self._guard.ns - self._tail.ns
            if self._hold is not None:
                latest = min(latest, top.enqueued_ns + self._hold)
            if now_ns < latest:
                if expired:
                    self._pressure()
                    return Batch(items, expired, 0, now_ns)
                return latest
        # 4. Overload: a larger bucket that sheds the most urgent heads may decide more
        # events in time per second of engine time than the bucket they force (or than
        # running alone a head that even the smallest bucket's margin would miss).
        if self._paused and not items and self._n > b:
            if not self._keyed:
                self._to_keyed()  # the count reads each key's queue
            margin = self._guard.ns + self._tail.ns
            c, threshold = goodput_bucket(
                self._keys.values(), self._profile, b, self._n, margin, now_ns
            )
            if c:
                return self._dispatch_shedding(c, threshold, expired, now_ns)
        # Every event taken below has an effective deadline >= d0, so its own deadline is
        # not hopeless when b > 0 (d0 >= now + p99(1)); when b == 0 only the top goes, and
        # step 1 left the top because its own deadline is not hopeless.
        target = max(b, len(items), 1)
        if self._keyed:
            heap = self._heap
            while len(items) < target:
                nxt = self._top()
                if nxt is None:
                    break
                heappop(heap)
                self._take_run(nxt, items, target)
        else:
            self._take_lane(items, target)
        return self._dispatch(items, expired, now_ns)

    def note_wake(self, lateness_ns: int, now_ns: int) -> None:
        """A timer asked for by ``poll`` fired ``lateness_ns`` late, at ``now_ns``."""
        self._guard.note(lateness_ns, now_ns)

    def note_publish(self, tail_ns: int, now_ns: int) -> None:
        """A batch's decisions were all handed to the sink ``tail_ns`` after its engine
        call ended (with the expired and shed ones of its keys before them)."""
        self._tail.note(tail_ns)

    @property
    def tail_ns(self) -> int:
        """The largest recent publish tail (ns; ``margins.PublishTail``)."""
        return self._tail.ns

    @property
    def guard_ns(self) -> int:
        """The current guard for timer wake-up error (ns; ``margins.WakeGuard``)."""
        return self._guard.ns

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

    # -- internals ------------------------------------------------------------------------

    def _fit(self, slack_ns: int, quantile: Callable[[int], int] | None = None) -> int:
        """The largest bucket whose p99, and every smaller bucket's, fits in ``slack_ns``.

        Measured profiles are not always monotone; requiring the smaller buckets to fit too
        means a partial batch (fewer rows, smaller bucket) never takes longer than planned.
        0 when not even the smallest bucket fits. ``quantile`` defaults to the p99.
        """
        q = self._profile.p99_ns if quantile is None else quantile
        fit = 0
        for b in self._asc:
            if q(b) > slack_ns:
                break
            fit = b
        return fit

    def _dispatch_shedding(
        self, bucket: int, threshold: int, expired: Sequence[Item[P]], now_ns: int
    ) -> Batch[P]:
        """Dispatch up to ``bucket`` events in EDF order whose own deadline is at least
        ``threshold``; a more urgent head is shed (its key's next event becomes a head, so
        per-key order holds). ``goodput_bucket`` chose the bucket because some queued
        event meets the threshold, and shedding reaches it: the batch is never empty."""
        heap = self._heap
        items: list[Item[P]] = []
        shed: list[Item[P]] = []
        while len(items) < bucket:
            nxt = self._top()
            if nxt is None:
                break
            heappop(heap)
            self._take(nxt)
            (items if nxt.deadline.mono_ns >= threshold else shed).append(nxt)
        return self._dispatch(items, expired, now_ns, shed)

    def _head(self) -> Item[P] | None:
        """The most urgent queued event (the lane's first, or the heap's top)."""
        if self._keyed:
            return self._top()
        lane = self._lane
        return lane[0] if lane else None

    def _pop_head(self, it: Item[P]) -> None:
        """Remove ``_head()``, which is ``it``."""
        if self._keyed:
            heappop(self._heap)
            self._take(it)
            return
        lane = self._lane
        lane.popleft()
        self._n -= 1
        if not lane:
            self._lane_last = _LOWEST

    def _take_lane(self, items: list[Item[P]], target: int) -> None:
        """Take the lane's first events into ``items`` until it holds ``target``."""
        lane = self._lane
        k = target - len(items)
        if k >= len(lane):
            k = len(lane)
            items.extend(lane)
            lane.clear()
            self._lane_last = _LOWEST
        else:
            popleft = lane.popleft
            items.extend([popleft() for _ in range(k)])
        self._n -= k

    def _to_keyed(self) -> None:
        """Move the lane's events into the per-key queues and the heap of key heads. In the
        lane each deadline is at least the one before it, so each event's effective
        deadline is its own and ``(deadline, seq)`` order is the lane's."""
        keys = self._keys
        heap = self._heap
        seq = self._seq
        for it in self._lane:
            it.seq = seq
            seq += 1
            q = keys.get(it.key)
            if q is None:
                keys[it.key] = deque((it,))
                heap.append((it._eff, it.seq, it))
            else:
                q.append(it)
        heapify(heap)
        self._seq = seq
        self._lane.clear()
        self._lane_last = _LOWEST
        self._keyed = True

    def _to_lane(self) -> None:
        """Back to the lane once the keyed queue is empty (stale heap entries dropped)."""
        self._heap.clear()
        self._keys.clear()
        self._keyed = False

    def _top(self) -> Item[P] | None:
        heap = self._heap
        while heap:
            eff, _, it = heap[0]
            if it._live and it._eff == eff:
                return it
            heappop(heap)
        return None

    def _take(self, it: Item[P]) -> None:
        """Remove the head ``it`` from its key's queue; its successor becomes a head."""
        q = self._keys[it.key]
        q.popleft()
        it._live = False
        self._n -= 1
        if q:
            nxt = q[0]
            heappush(self._heap, (nxt._eff, nxt.seq, nxt))
        else:
            del self._keys[it.key]

    def _take_run(self, it: Item[P], items: list[Item[P]], target: int) -> None:
        """Take the head ``it`` (already popped from the heap) into ``items`` and, while
        ``items`` holds fewer than ``target``, each next event of its key that comes before
        every other head (in ``(effective deadline, seq)`` order, the heap's): the same
        events in the same order as ``_take`` one at a time, without a heap push and pop
        per event. A stale heap top only ends the run early (the heap then decides)."""
        key = it.key
        q = self._keys[key]
        heap = self._heap
        n = 0
        while True:
            q.popleft()
            it._live = False
            n += 1
            items.append(it)
            if not q:
                del self._keys[key]
                break
            nxt = q[0]
            if len(items) >= target:
                heappush(heap, (nxt._eff, nxt.seq, nxt))
                break
            if heap:
                top = heap[0]
                eff = nxt._eff
                if top[0] < eff or (top[0] == eff and top[1] < nxt.seq):
                    heappush(heap, (eff, nxt.seq, nxt))
                    break
            it = nxt
        self._n -= n

    def _dispatch(
        self,
        items: list[Item[P]],
        expired: Sequence[Item[P]],
        now_ns: int,
        shed: Sequence[Item[P]] = (),
    ) -> Batch[P]:
        batch = Batch(items, expired, self._profile.bucket_for(len(items)), now_ns, shed)
        self._inflight = batch
        self._pressure()
        return batch

    def _compact(self) -> None:
        """Drop stale heap entries (left by deadline inheritance); keeps memory bounded."""
        heap: list[_Entry[P]] = [(q[0]._eff, q[0].seq, q[0]) for q in self._keys.values()]
        heapify(heap)
        self._heap = heap

    def _limit(self) -> int:
        """The queue length past which the scheduler pauses: ``pause_fraction`` of the
        bound, or what the budget allows at the largest bucket's p99 if less (cached per
        profile version with the smallest bucket's p99, so ``submit`` pays one
        comparison)."""
        prof = self._profile
        version = prof.version
        if version != self._lim_version:
            limit = self._pause_cap
            if self._budget is not None:
                per_batch = max(1, prof.p99_ns(self._maxb))
                limit = min(limit, self._budget * self._maxb // per_batch)
            self._lim = limit
            self._p1 = prof.p99_ns(self._b1)
            self._lim_version = version
        return self._lim

    def _pressure(self) -> None:
        """Update the backpressure flag from the predicted queueing delay (hysteresis)."""
        limit = self._limit()
        if not self._paused:
            if self._n > limit:
                self._paused = True
                if self._on_bp is not None:
                    self._on_bp(True)
        elif self._n <= limit * self._resume:
            self._paused = False
            if self._on_bp is not None:
                self._on_bp(False)
