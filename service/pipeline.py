"""The pipeline: decode → per-key state → deadline queue → batch → engine → decisions.

Transport-agnostic: records come in through ``ingest`` (from Kafka or from memory), messages
go out through a ``Sink``; the offset tracker learns of every durable acknowledgement. The
pipeline is the inbound half (``ingest``: decode, key state, slot, deadline, queue) and
builds the rest: one dispatcher task (``service.dispatcher``) owns the engine: it polls the
scheduler, runs each batch, and has the ``Publisher`` (``service.publisher``) send the
batch's decisions in row order, so decisions of one key leave in event order.

The model is a package (``engines.package``): the pipeline knows only its feature
implementation (``engines.features``: a state per key, ``write_input`` at ingest,
``target()`` beside it) and its ``Head``, whose per-key state (an anomaly head's
likelihood) lives in the same bounded ``StateStore`` and is judged at dispatch, in each
key's event order. ``warm`` (after a seek back) rebuilds the feature states only.

A new model version (``engines.version.ModelVersion``, loaded and warmed off the hot path
by ``service.models``) is handed over with ``offer``; the dispatcher ``install``s it between
two batches (``service.dispatcher``). The feature implementation and the per-key states
stay: the version's feature contract and its head's kind must be the same.

Memory: each queued event holds a slot of the slot table (``service.slots``): its model
input, written at ingest into the slot's row of a preallocated slab (the key's window moves
on with later events, so it cannot be read at dispatch time; each key's run of events at
once, before they are handed to the scheduler), its target and its key's head state (for a
head that reads them, ``Head.uses_targets``), coordinates and stamps. Dispatch gathers the
batch's rows into the engine's bucket buffer, one slice where they are consecutive. The table
has ``max_queue + max_batch`` slots: with none free an event is shed, the table never
grows. Every decision is published from a slot (``Publisher.one`` and ``Publisher.batch``).

Every input gets exactly one outcome: a decision (``ok``, ``expired``, ``shed``,
``warming``, ``error``) on the decision topic, or a dead letter (undecodable or invalid
input) on the dead-letter topic. Nothing logs per event.

Trace context (``service.tracing``): a record's valid ``traceparent`` (and ``tracestate``)
is kept with its slot and goes out on its decision (or dead letter); with a ``tracer``
(``[tracing] enabled``) each batch gets a span and its traced decisions weir's context.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from engines.base import Engine
from engines.errors import EngineError
from engines.features import Features, FeatureState
from engines.head import Head
from engines.version import ModelVersion
from schemas.base import EventDecoder
from schemas.decision import Status
from schemas.decoders import RAW_ERRORS, WireDecoder
from schemas.errors import DecodeError, SchemaError
from service.base import Record, Sink
from service.counters import Counters
from service.dispatcher import Dispatcher
from service.errors import ServiceError
from service.inbound import build_decoder
from service.offsets import OffsetTracker, PartitionOffsets
from service.publisher import Publisher
from service.scheduler.base import Item, Outcome, Scheduler
from service.scheduler.deadline import Budgets, Deadline, WallToMono
from service.scheduler.factory import build_scheduler
from service.settings import Anchor, Settings
from service.slots import RUN_CAP, SlotTable
from service.state import StateStore
from service.tasks import TaskSupervisor
from service.tracing import TraceCarry

if TYPE_CHECKING:
    from service.base import BatchObserver, BatchTracer
    from service.shadow import Shadow

TP = tuple[str, int]
Clock = Callable[[], int]
Fetched = dict[TP, PartitionOffsets | None]
"""Each fetched partition's offsets as of its fetch (``Pipeline.ingest``)."""


class Pipeline:
    """Turns records into published decisions (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        head: Head,
        spec: Features,
        sink: Sink,
        model_version: str,
        scheduler: Scheduler[int] | None = None,
        clock: Clock = time.monotonic_ns,
        wall: Clock = time.time_ns,
        on_backpressure: Callable[[bool], None] | None = None,
        observer: BatchObserver | None = None,
        tasks: TaskSupervisor | None = None,
        decoder: EventDecoder | None = None,
        tracer: BatchTracer | None = None,
    ) -> None:
        if spec.n_features != engine.n_features:
            raise EngineError(
                f"feature spec gives {spec.n_features} features per input but the engine "
                f"expects {engine.n_features}"
            )
        self.settings = settings
        self.spec = spec
        self.sink = sink
        self._clock = clock
        self._wall = wall
        self.counters = Counters()
        self.tracker: OffsetTracker[TP] = OffsetTracker()
        self.state = StateStore(spec, settings.state.max_keys, head.new_key_state)
        self.budgets = Budgets.from_settings(settings.scheduler)
        self.w2m = WallToMono(mono=clock, wall=wall)
        sched = scheduler or build_scheduler(
            settings.scheduler, engine.profile, on_backpressure=on_backpressure
        )
        self._decoder = decoder if decoder is not None else build_decoder(settings)
        """Record bytes to event, key and source time (``[schema]``; ``schemas.base``)."""
        self._raw = self._decoder.raw if isinstance(self._decoder, WireDecoder) else None
        """For weir's wire types, msgspec's own decoder (``WireDecoder.raw``): ingest calls
        ``decode`` only to word a failure."""
        self._max_bytes = settings.kafka.max_event_bytes
        self.slots = SlotTable(settings.scheduler.max_queue + engine.max_batch, spec.n_features)
        """Each queued event's window, target, coordinates and stamps (``service.slots``)."""
        self._chunk = settings.scheduler.ingest_chunk
        self._task: asyncio.Task[None] | None = None
        self.tasks = tasks or TaskSupervisor()
        """Starts the dispatcher; its death is a failure of the pipeline (``failed``)."""
        self.trace = TraceCarry(self.slots.scratch + 1, self.counters)
        """Each queued event's trace headers, by slot (``service.tracing``)."""
        self.publisher = Publisher(
            settings=settings,
            sink=sink,
            slots=self.slots,
            trace=self.trace,
            counters=self.counters,
            w2m=self.w2m,
            model_version=model_version,
            clock=clock,
            wall=wall,
            observer=observer,
        )
        """Builds and sends every decision and dead letter (``service.publisher``)."""
        self._publish = self.publisher.one
        self._dead_letter = self.publisher.dead_letter
        self.dispatcher = Dispatcher(
            settings=settings,
            engine=engine,
            head=head,
            n_features=spec.n_features,
            scheduler=sched,
            slots=self.slots,
            publisher=self.publisher,
            counters=self.counters,
            budgets=self.budgets,
            w2m=self.w2m,
            trace=self.trace,
            clock=clock,
            observer=observer,
            tracer=tracer,
        )
        """Owns the engine: runs the scheduler's batches (``service.dispatcher``)."""
        self._wake = self.dispatcher.wake

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher task on the running loop (supervised by ``tasks``)."""
        if self._task is None:
            self._task = self.tasks.spawn(self.dispatcher.run(), "weir-dispatch")

    @property
    def failed(self) -> ServiceError | None:
        """Why the pipeline cannot go on: a background task's death (the dispatcher's, or
        the sink's submitter's when it shares ``tasks``), else the first publish failure;
        None while healthy. The runtime then stops and restarts from the last commit."""
        return self.tasks.failure or self.publisher.failed

    @property
    def scheduler(self) -> Scheduler[int]:
        """The deadline queue the events wait in and the dispatcher polls (one object for
        the pipeline's life: pass another as ``scheduler``)."""
        return self.dispatcher.scheduler

    @property
    def queued(self) -> int:
        """Events waiting in the scheduler."""
        return self.scheduler.queued

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in flight or being published."""
        return self.dispatcher.idle

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued event is decided and every message acknowledged."""
        deadline = time.monotonic() + timeout_s
        while not self.idle:
            if self.tasks.failure is not None:
                return False  # no dispatcher left to decide what is queued
            self._wake.set()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            went_idle = self.dispatcher.went_idle
            went_idle.clear()
            try:
                await asyncio.wait_for(went_idle.wait(), min(remaining, 0.05))
            except TimeoutError:
                continue
        try:
            await asyncio.wait_for(self.sink.flush(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop the dispatcher (queued events stay undecided: drain first)."""
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # a death was reported through ``tasks`` already
        self.dispatcher.close()

    # -- model versions ----------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """The version serving: named on every decision (``install`` changes it)."""
        return self.publisher.model_version

    def offer(self, version: ModelVersion) -> asyncio.Future[None]:
        """Have the dispatcher install ``version`` before its next batch (``Dispatcher.offer``)."""
        return self.dispatcher.offer(version)

    def withdraw(self, version: ModelVersion) -> bool:
        """Take back an ``offer`` not installed yet (``Dispatcher.withdraw``)."""
        return self.dispatcher.withdraw(version)

    def install(self, version: ModelVersion) -> None:
        """Serve ``version`` from now on, between batches only (``Dispatcher.install``)."""
        self.dispatcher.install(version)

    @property
    def engine(self) -> Engine:
        """The serving version's engine."""
        return self.dispatcher.engine

    @property
    def head(self) -> Head:
        """The serving version's head."""
        return self.dispatcher.head

    @property
    def offloaded(self) -> bool:
        """Whether the serving engine's ``infer`` runs in the worker thread."""
        return self.dispatcher.offloaded

    @property
    def turns(self) -> int:
        """Loop turns after each batch for the serving engine."""
        return self.dispatcher.turns

    @property
    def tracer(self) -> BatchTracer | None:
        """Makes a span per batch (``service.base.BatchTracer``); ``None``: off."""
        return self.dispatcher.tracer

    @tracer.setter
    def tracer(self, tracer: BatchTracer | None) -> None:
        self.dispatcher.tracer = tracer

    @property
    def shadow(self) -> Shadow | None:
        """A candidate offered a copy of every batch that ran (``service.shadow``)."""
        return self.dispatcher.shadow

    @shadow.setter
    def shadow(self, shadow: Shadow | None) -> None:
        self.dispatcher.shadow = shadow

    # -- ingest ------------------------------------------------------------------------------

    async def ingest(self, records: Sequence[Record], fetched: Fetched | None = None) -> None:
        """Decode, update state and queue each record; publish immediate outcomes.

        ``fetched``: each partition's ``OffsetTracker.owned`` as of its fetch (the fetch loop
        passes one per fetch; default: as this call first looks it up). A record whose
        partition's offsets changed since (revoked: its new owner decides it; rewound: it is
        fetched again) is left undecided, counted ``superseded``: deciding it would publish a
        second decision for one input (in exactly-once mode, beside the new owner's).

        Every ``scheduler.ingest_chunk`` records the ingest time is read again, and once
        ingest has run for as long as the engine's largest batch takes (its p99) the
        dispatcher is woken and given a turn (``asyncio.sleep(0)``): a large fetch does not
        hold back what is queued, and a slow engine run inline (which blocks the loop for
        a whole batch at each turn) does not slow ingest down to a chunk per batch.

        Per record, what a run of records shares is looked up once: the partition's
        offsets (``OffsetTracker.owned``), the topic's deadline policy, and the state of
        the key seen last (``StateStore.update`` only for another key). Each is looked up
        again after every ``await``, where a rebalance may replace it.

        The queued events go to the scheduler a run at a time (``Scheduler.submit_all``;
        one by one where it refuses the run, each immediate ``expired`` or ``shed``
        published then): the run is handed over before the ingest time is read again,
        before any other outcome is published and before an offset is refused, so the
        scheduler sees every event in ingest order before anything after it goes out.
        """
        self.counters.events_in += len(records)
        fetched = {} if fetched is None else fetched
        now = self._clock()
        chunk = self._chunk
        # The time is read again before record chunk + 1 (then every chunk records), so a
        # fetch of one chunk is queued whole before the dispatcher's turn: checked before
        # record ``chunk`` instead, a 64-record fetch went out as batches of 63 and 1.
        left = chunk + 1
        prof = self.scheduler.profile
        turn = prof.p99_ns(prof.max_batch)
        turn_at = now + turn
        w2m = self.w2m.offset_ns
        decode = self._decoder.decode
        raw = self._raw
        store = self.state
        kinds = self.counters.kinds
        slots = self.slots
        free = slots.free
        targets = slots.targets
        head_states = slots.head_state
        col_topic = slots.topic
        col_part = slots.partition
        col_off = slots.offset
        col_key = slots.key
        col_kafka = slots.kafka_ts
        col_source = slots.source_ts
        col_ingest = slots.ingest
        col_deadline = slots.deadline
        col_tracked = slots.tracked
        # A classes head reads neither (``install`` keeps the kind for the pipeline's life).
        keyed = self.dispatcher.head.uses_targets
        fill = slots.fill
        place = slots.place
        # The open run of the key placed last (``SlotTable.place``) and its state.
        pending: list[int] = []
        run_state: FeatureState | None = None
        scratch = slots.scratch
        carry = self.trace
        max_bytes = self._max_bytes
        wall_now = now - w2m
        # The deadline policy of the last topic seen and, for an ingest-time anchor, the
        # one deadline every record of that topic gets until the ingest time is read again.
        dl_topic: str | None = None
        policy = self.budgets.default
        own_class = False
        shared: Deadline | None = None
        # The partition tracked last, and the key updated last with its states.
        tp_topic: str | None = None
        tp_part = -1
        offsets: PartitionOffsets | None = None
        last_key: str | None = None
        last_state: FeatureState | None = None
        last_head: object = None
        # Events made ready for the scheduler since the last ``submit_all`` (all at ``now``):
        # handed over before the ingest time is read again and before every ``await``, so
        # the scheduler sees them in ingest order before anything else is published.
        run: list[Item[int]] = []
        # Events of one topic and type in a row, counted into ``counters.kinds`` at once.
        kind_topic = ""
        kind_type: type | None = None
        kind_n = 0
        try:
            for rec in records:
                left -= 1
                if not left:
                    left = chunk
                    if run and await self._submit(run, now):
                        offsets = last_state = None
                    now = self._clock()
                    if now >= turn_at:
                        self._wake.set()
                        await asyncio.sleep(0)
                        now = self._clock()
                        turn_at = now + turn
                        offsets = last_state = None
                    wall_now = now - w2m
                    dl_topic = None
                topic = rec.topic
                part = rec.partition
                off = rec.offset
                if offsets is None or part != tp_part or topic != tp_topic:
                    tp_topic = topic
                    tp_part = part
                    offsets = self._still(fetched, topic, part)
                    if offsets is None:
                        continue
                if off > offsets.last:
                    offsets.inflight.append(off)
                    offsets.last = off
                else:
                    if run and await self._submit(run, now):  # queued before ingest may raise
                        last_state = None
                        offsets = self._still(fetched, topic, part)
                        if offsets is None:
                            continue
                    offsets.track(off)  # refused: offsets of a partition must increase
                value = rec.value
                ts_ms = rec.timestamp
                kafka_ns = ts_ms * 1_000_000 if ts_ms >= 0 else None
                if value is None or len(value) > max_bytes:
                    reason = "empty" if value is None else "oversized"
                    detail = (
                        "record has no value"
                        if value is None
                        else f"record of {len(value)} bytes exceeds max_event_bytes={max_bytes}"
                    )
                    if run:
                        await self._submit(run, now)
                    await self._dead_letter(rec, reason, detail, kafka_ns, offsets)
                    offsets = last_state = None
                    continue
                headers = rec.headers
                try:
                    if raw is None:
                        event, key, source_ns = decode(
                            value, headers, topic=topic, partition=part, offset=off
                        )
                    else:
                        try:
                            event = raw(value)
                            key = event.key
                            source_ns = event.source_ts_ns
                        except RAW_ERRORS:
                            event, key, source_ns = decode(  # words the failure and raises it
                                value, headers, topic=topic, partition=part, offset=off
                            )
                    arrival = kafka_ns if kafka_ns is not None else wall_now
                    if key == last_key and last_state is not None:
                        state = last_state
                        state.update(event, arrival)
                    else:
                        state = store.update(event, arrival, key)
                        last_key = key
                        last_state = state
                        last_head = store.last_head_state
                except DecodeError as exc:
                    if run:
                        await self._submit(run, now)
                    await self._dead_letter(rec, exc.code, str(exc), kafka_ns, offsets)
                    offsets = last_state = None
                    continue
                except SchemaError as exc:
                    if run:
                        await self._submit(run, now)
                    await self._dead_letter(rec, "wrong_task", str(exc), kafka_ns, offsets)
                    offsets = last_state = None
                    continue
                kind = type(event)
                if kind is kind_type and topic == kind_topic:
                    kind_n += 1
                else:
                    if kind_n:
                        tk = (kind_topic, kind_type)
                        kinds[tk] = kinds.get(tk, 0) + kind_n
                    kind_topic = topic
                    kind_type = kind
                    kind_n = 1
                traced = carry.read(headers) if headers else None
                if free and pending and state is run_state and len(pending) < RUN_CAP:
                    slot = free.pop()  # the open run's key: ready (its count only grows)
                    pending.append(slot)
                else:
                    if not free and run and state.ready and await self._submit(run, now):
                        # Outcomes decided at submit freed their slots. An ``await`` ran: the
                        # partition and the key are looked up again for the next record, and
                        # this one is left undecided where its partition's offsets changed.
                        tp_part = -1
                        last_state = None
                        if self._still(fetched, topic, part) is not offsets:
                            continue
                    if not state.ready or not free:
                        # Decided now (no window yet, or no slot left): from the scratch slot.
                        fill(
                            scratch, topic, part, off, key, kafka_ns, source_ns, now, None, offsets
                        )
                        if traced is not None:
                            carry.put(scratch, traced)
                        if run:
                            await self._submit(run, now)
                        await self._publish(scratch, Status.SHED if state.ready else Status.WARMING)
                        offsets = last_state = None
                        continue
                    slot = free.pop()
                    pending = place(state, slot)
                    run_state = state
                if keyed:
                    targets[slot] = state.target()
                    head_states[slot] = last_head
                if topic != dl_topic:
                    dl_topic = topic
                    policy = self.budgets.policy(topic)
                    # A topic with a budget of its own keeps each key's order among its own
                    # events only, so the same key's events of a looser topic cannot hold its
                    # events back (Kafka orders nothing across topics either).
                    own_class = self.budgets.own(topic)
                    shared = (
                        Deadline(now + policy.budget_ns) if policy.anchor is Anchor.INGEST else None
                    )
                deadline = shared
                if deadline is None:
                    deadline = Deadline(
                        policy.deadline_ns(
                            now,
                            kafka_wall_ns=kafka_ns,
                            source_wall_ns=source_ns,
                            wall_to_mono_ns=w2m,
                        )
                    )
                # ``slots.fill``, inlined: the slot's coordinates and stamps.
                col_topic[slot] = topic
                col_part[slot] = part
                col_off[slot] = off
                col_key[slot] = key
                col_kafka[slot] = kafka_ns
                col_source[slot] = source_ns
                col_ingest[slot] = now
                col_deadline[slot] = deadline.mono_ns
                col_tracked[slot] = offsets
                if traced is not None:
                    carry.put(slot, traced)
                run.append(Item(slot, (topic, key) if own_class else key, deadline))
            if run:
                await self._submit(run, now)
        finally:
            if run:  # an error or a cancellation came before the run was handed over
                self._queue_left(run, now)
            if kind_n:
                tk = (kind_topic, kind_type)
                kinds[tk] = kinds.get(tk, 0) + kind_n
        self._wake.set()

    def _still(self, fetched: Fetched, topic: str, part: int) -> PartitionOffsets | None:
        """The partition's offsets if they are still those of the fetch (``ingest``), else
        None, the record counted ``superseded``."""
        tp = (topic, part)
        current = self.tracker.owned(tp)
        if current is not None and fetched.setdefault(tp, current) is current:
            return current
        self.counters.superseded += 1
        return None

    async def _submit(self, run: list[Item[int]], now: int) -> bool:
        """Queue ``run`` (ingested at ``now``) and empty it: all at once when the scheduler
        takes all (``submit_all``), else one by one, publishing each immediate outcome.
        True when anything was published (an ``await`` ran)."""
        self.slots.write_runs()
        sched = self.scheduler
        if sched.submit_all(run, now):
            run.clear()
            return False
        published = False
        done = 0
        try:
            for item in run:
                done += 1
                outcome = sched.submit(item, now)
                if outcome is Outcome.EXPIRED:
                    # Hopeless on arrival: it never reaches a poll, so probe from here too,
                    # or a profile that expires everything at submit would never see a
                    # recovery.
                    self.dispatcher.probe((item,), now)
                    await self._publish(item.payload, Status.EXPIRED)
                    published = True
                elif outcome is not None:
                    await self._publish(item.payload, Status.SHED)
                    published = True
        finally:
            del run[:done]  # what was submitted, also where a publish was interrupted
        return published

    def _queue_left(self, run: list[Item[int]], now: int) -> None:
        """Queue what an interrupted ingest left in ``run``, without an ``await``: queued,
        each is decided like any other (the drain at a stop included). One the scheduler
        refuses gets no outcome now: its slot is freed and its offset stays in flight, so
        the commit point stays below it and it is read again after a restart."""
        self.slots.write_runs()
        sched = self.scheduler
        if not sched.submit_all(run, now):
            for item in run:
                if sched.submit(item, now) is not None:
                    self.trace.take(item.payload)
                    self.slots.release(item.payload)
        run.clear()

    def warm(self, records: Iterable[Record]) -> None:
        """Fold already-decided records into the key windows only (after a seek back)."""
        self.state.warm(records, self._decoder, self._max_bytes, self._wall())
