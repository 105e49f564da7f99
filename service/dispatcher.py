"""The dispatcher: one task owns the engine, polls the scheduler and runs each batch.

``Dispatcher`` is the pipeline's engine half (``service.pipeline`` queues the events):
``run`` polls the scheduler, gathers each batch's rows from the slot table into the
engine's bucket buffer with one ``np.take``, runs the engine (inline, or in one worker
thread as ``[engine] offload`` says), and hands the batch to the ``Publisher``, which sends
its decisions in row order, so decisions of one key leave in event order. Between batches
it sleeps on ``wake`` (set by ingest, by ``offer`` and by a drain) or on a timer armed for
the scheduler's next safe start.

Model versions: a version is handed over with ``offer``; the dispatcher ``install``s it
between two batches: engine, head, version string and the scheduler's latency profile
change in one step, so every decision names the version that made it. The feature
implementation and the per-key states stay: the version's feature contract and its head's
kind must be the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import Engine, FloatArray
from engines.errors import EngineError
from engines.head import Head
from engines.version import ModelVersion
from schemas.decision import Status
from service.counters import Counters
from service.errors import ServiceError
from service.probe import Prober
from service.publisher import Publisher
from service.scheduler.base import Batch, Item, Scheduler
from service.scheduler.deadline import Budgets, WallToMono
from service.scheduler.timer import make_timer
from service.settings import Settings
from service.slots import SlotTable
from service.tracing import TraceCarry

if TYPE_CHECKING:
    from service.base import BatchObserver, BatchTracer
    from service.shadow import Shadow

__all__ = ["SLOW_ENGINE_TURNS", "Dispatcher"]

SLOW_ENGINE_TURNS = 4
"""``turns_after_batch = "auto"``: loop turns after each batch of a slow engine."""
Clock = Callable[[], int]


class Dispatcher:
    """Runs the scheduler's batches on the serving engine (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        head: Head,
        n_features: int,
        scheduler: Scheduler[int],
        slots: SlotTable,
        publisher: Publisher,
        counters: Counters,
        budgets: Budgets,
        w2m: WallToMono,
        trace: TraceCarry,
        clock: Clock,
        observer: BatchObserver | None = None,
        tracer: BatchTracer | None = None,
    ) -> None:
        self.engine = engine
        self.head = head
        self.scheduler = scheduler
        self.slots = slots
        self.publisher = publisher
        self.counters = counters
        self.budgets = budgets
        self.w2m = w2m
        self.trace = trace
        self._clock = clock
        self._n_features = n_features
        # The scheduler records every batch's latency in the profile on ``complete``.
        engine.observe = False
        self._prober = Prober(engine, scheduler.profile, budgets, counters)
        self._idx = np.zeros(engine.max_batch, dtype=np.intp)
        self._slot_ids = np.arange(len(slots.numbers), dtype=np.intp)
        self._slot_ids.flags.writeable = False  # its slices are handed out (``_gather``)
        self._turns_setting = settings.scheduler.turns_after_batch
        self.turns = 1
        """Loop turns after each batch for the serving engine (``_place``)."""
        self._offload = settings.engine.offload
        self._offload_above_ns = int(settings.engine.offload_above_ms * 1e6)
        self._executor: ThreadPoolExecutor | None = None
        self.offloaded = False
        """Whether the serving engine's ``infer`` runs in the worker thread (``offload``)."""
        self._place(engine)
        self.wake = asyncio.Event()
        """Set to have the dispatcher poll the scheduler again."""
        self.deciding = False
        """A batch is being run or its decisions handed to the sink."""
        self.went_idle = asyncio.Event()
        """Set whenever the dispatcher finds nothing queued and nothing in flight."""
        self.went_idle.set()
        self._offer: tuple[ModelVersion, asyncio.Future[None]] | None = None
        self.observer = observer
        """Told of every batch, twice (``service.base.BatchObserver``); ``None``: off."""
        self.tracer = tracer
        """Makes a span per batch (``service.base.BatchTracer``); ``None``: off."""
        self.shadow: Shadow | None = None
        """A candidate offered a copy of every batch that ran (``service.shadow``)."""

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in flight or being published."""
        return self.scheduler.queued == 0 and not self.scheduler.busy and not self.deciding

    def close(self) -> None:
        """Cancel a waiting ``offer`` and stop the worker thread (after ``run`` ended)."""
        if self._offer is not None:
            self._offer[1].cancel()
            self._offer = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- model versions ----------------------------------------------------------------------

    def offer(self, version: ModelVersion) -> asyncio.Future[None]:
        """Have the dispatcher ``install`` ``version`` before its next batch; the future is
        done once it serves (or holds the ``EngineError`` that kept it out)."""
        if self._offer is not None:
            raise ServiceError(
                f"model version {self._offer[0].version} is already waiting to be installed"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._offer = (version, future)
        self.wake.set()
        return future

    def withdraw(self, version: ModelVersion) -> bool:
        """Take back an ``offer`` of ``version`` not installed yet; False when it was (or
        another version waits)."""
        if self._offer is None or self._offer[0] is not version:
            return False
        self._offer[1].cancel()
        self._offer = None
        return True

    def install(self, version: ModelVersion) -> None:
        """Serve ``version`` from now on, in one step (nothing awaited): its engine, head
        and version string, and its measured profile in the scheduler's. Call it between
        batches only (the dispatcher does, for ``offer``)."""
        engine = version.engine
        if engine.n_features != self._n_features:
            raise EngineError(
                f"model version {version.version} takes {engine.n_features} features per "
                f"input but the feature implementation serving gives {self._n_features}"
            )
        if version.head.kind != self.head.kind:
            raise EngineError(
                f"model version {version.version} decides {version.head.kind!r} but the "
                f"version serving decides {self.head.kind!r}: the keys' state is the old kind's"
            )
        self.scheduler.profile.adopt(engine.profile)
        engine.observe = False
        self._place(engine)
        self.engine = engine
        self.head = version.head
        self.publisher.set_model(version.version)
        self._prober = Prober(engine, self.scheduler.profile, self.budgets, self.counters)

    def _place(self, engine: Engine) -> None:
        """Run ``engine``'s calls in the worker thread or inline, as ``[engine] offload``
        says, and set the loop turns after each batch (``auto``, both: from whether its
        largest bucket's p99 exceeds ``offload_above_ms``)."""
        slow = engine.profile.p99_ns(engine.max_batch) > self._offload_above_ns
        offload = slow if self._offload == "auto" else self._offload
        if offload and self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="weir-engine")
        self.offloaded = offload
        turns = self._turns_setting
        self.turns = (SLOW_ENGINE_TURNS if slow else 1) if turns == "auto" else turns

    def _take_offer(self) -> None:
        assert self._offer is not None
        (version, future), self._offer = self._offer, None
        try:
            self.install(version)
        except EngineError as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(None)

    # -- dispatch ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll the scheduler and run its batches until cancelled."""
        loop = asyncio.get_running_loop()
        sched = self.scheduler
        wake = self.wake
        clock = self._clock
        timer = make_timer(wake.set, loop=loop, clock=clock)
        try:
            await self._dispatch(sched, wake, clock, timer, loop)
        finally:
            timer.close()

    async def _dispatch(
        self,
        sched: Scheduler[int],
        wake: asyncio.Event,
        clock: Clock,
        timer: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        publish = self.publisher.one
        while True:
            if self._offer is not None:
                self._take_offer()  # between batches: nothing of the old version in flight
            now = clock()
            result = sched.poll(now)
            if isinstance(result, Batch):
                expired = result.expired
                # Until its last decision is handed to the sink (whose ``send`` may wait for
                # room), the batch keeps the pipeline from being idle.
                self.deciding = True
                if not result.items:
                    if expired:
                        self.probe(expired, now)
                    for item in expired:
                        await publish(item.payload, Status.EXPIRED)
                    self.deciding = False
                    continue
                # The planned batch has the tightest slack: nothing is awaited between the
                # poll and the engine call (an await lets ingest run for milliseconds). The
                # expired decisions go out after the inference and before the batch's, so
                # each key's decisions keep their order.
                await self._run_batch(result, loop)
                self.deciding = False
                # Let the sink and the producer send these decisions before the next batch
                # (publishing suspends only when the sink is full, so back-to-back batches
                # would hold them): a turn for each step on their way (``turns_after_batch``).
                for _ in range(self.turns):  # per model version (``_place``)
                    await asyncio.sleep(0)
                continue
            if self.idle:
                self.went_idle.set()
                if self.shadow is not None:
                    self.shadow.wake()  # it runs its queued batches while the primary idles
            wake.clear()
            if result is None:
                await wake.wait()
                continue
            if result <= now:
                continue
            timer.arm(result)
            await wake.wait()
            timer.disarm()
            woke = clock()
            if woke >= result:  # the timer (not a new event) woke us: report its lateness
                sched.note_wake(woke - result, woke)

    def _gather(self, items: Sequence[Item[int]], bucket: int) -> np.ndarray:
        """Copy the items' feature rows into ``bucket``'s input buffer; return their slots
        (a view, valid until the next call). Slots consecutive in the items' order (the
        usual case: ``Publisher.batch`` frees a batch's slots so that the next events take
        them in order) are one slice of rows, copied at once, a third of ``np.take``'s
        time; and their numbers a slice of a constant range."""
        n = len(items)
        slots = [item.payload for item in items]
        first = slots[0]
        out = self.engine.input_buffer(bucket)[:n]
        if self.slots.consecutive(slots):
            out[:] = self.slots.slab[first : first + n]
            return self._slot_ids[first : first + n]
        idx = self._idx[:n]
        idx[:] = slots
        np.take(self.slots.slab, idx, axis=0, out=out)
        return idx

    def probe(self, expired: Sequence[Item[int]], now: int) -> None:
        """Time the engine on rows that just expired, when the ``Prober`` says so."""
        bucket = self._prober.due(now, len(expired))
        if bucket is None:
            return
        n = min(len(expired), bucket)
        self._gather(expired[:n], bucket)
        self._prober.run(bucket, n)

    async def _run_batch(self, batch: Batch[int], loop: asyncio.AbstractEventLoop) -> None:
        items = batch.items
        n = len(items)
        bucket = batch.bucket
        engine = self.engine
        idx = self._gather(items, bucket)
        dispatch = self._clock()
        counters = self.counters
        counters.batches += 1
        counters.batch_rows += n
        error: str | None = None
        out: FloatArray | None = None
        try:
            if not self.offloaded:
                out = engine.infer(bucket, n)
            else:
                out = await loop.run_in_executor(self._executor, engine.infer, bucket, n)
        except EngineError as exc:
            error = str(exc)
            counters.engine_errors += 1
        done = self._clock()
        self.scheduler.complete(batch, engine.last_latency_ns if error is None else -1)
        slots = self.slots
        obs = self.observer
        if obs is not None:
            obs.on_batch(
                bucket, items, slots.ingest, slots.kafka_ts, slots.source_ts, dispatch, done
            )
        tracer = self.tracer
        if tracer is not None:
            m2w = -self.w2m.offset_ns
            tracer.begin(
                bucket,
                items,
                self.trace,
                slots.ingest,
                dispatch,
                done,
                self.publisher.model_version,
                error,
                m2w,
            )
        shadow = self.shadow
        if shadow is not None and error is None:
            # A copy, queued without waiting; the shadow runs once the dispatcher yields.
            shadow.offer(engine.input_buffer(bucket), items, idx, slots, -self.w2m.offset_ns)
        # An expired or shed event of a key in this batch is earlier in that key: its
        # decision goes first; the others wait until the batch's decisions are out.
        publish = self.publisher.one
        later: list[tuple[Item[int], Status]] = []
        if batch.expired or batch.shed:
            keys = {item.key for item in items}
            for group, status in ((batch.expired, Status.EXPIRED), (batch.shed, Status.SHED)):
                for item in group:
                    if item.key in keys:
                        await publish(item.payload, status)
                    else:
                        later.append((item, status))
        await self.publisher.batch(items, idx, out, dispatch, done, error, self.head)
        out_at = self._clock()
        self.scheduler.note_publish(out_at - done, out_at)
        if tracer is not None:
            tracer.end(out_at)
        for item, status in later:
            await publish(item.payload, status)
