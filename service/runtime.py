"""``weir serve``: the Kafka runtime around the pipeline.

One consumer (a member of the group), one producer, one pipeline, on one event loop:

- fetch with ``getmany`` and hand each partition's records to the pipeline in order;
- pause the loose topics' partitions while the scheduler signals backpressure, every
  partition past half its queue bound or while the sink holds its most in-flight
  decisions (``max_inflight_decisions``/``_bytes``), resume after (``service.backpressure``);
- at-least-once: commit, every ``commit_interval_ms``, the offsets the tracker allows
  (decisions below them are produced *and* acknowledged), beside the fetch loop
  (``commit_in_background``), and on revoke and shutdown after the one in flight;
- exactly-once: decisions go out in a transaction; every ``flush_interval_ms`` fetching
  stops until the pipeline is idle, then the consumed offsets join the transaction
  (``send_offsets_to_transaction``) and it commits. A failed transaction is aborted, the
  assigned partitions are rewound to their committed offsets and the key windows cleared;
  a pipeline that does not drain within ``drain_timeout_ms`` aborts it and stops the
  worker, which restarts from the last commit (``service.commits``). A member the group
  has forgotten commits nothing (``service.kafka.membership_lost``): its revoke aborts the
  transaction, and after a loop stalled past the session's margin commits wait;
- on revoke: drain within ``revoke_timeout_ms``, commit, forget the partitions (the
  fetch being ingested meanwhile leaves their records undecided: ``Pipeline.ingest``); on
  assign: start tracking at the consumer's position; with ``warmup = "seek"`` seek back
  ``seek_back`` records and fold them into the key windows without deciding them;
- topics (``service.topics``): checked before subscribing (created with ``[topics] create``,
  else a missing decision or dead-letter topic stops the start); a background task picks up
  input topics created after the start and warns while they are missing;
- model versions (``service.models``): ``POST /admin/model`` (``[model] admin``) and
  ``[model] watch_dir`` load a new version off the loop and swap it in between batches;
  one that fails stays out and the old one serves on;
- ``[gc]`` (``service.pauses``): every collection is timed, a probe times the loop's lag;
  at the first assignment ``gc.freeze()`` and the gen-0 threshold are applied;
- SIGTERM/SIGINT: stop fetching, drain within ``drain_timeout_ms``, commit, exit 0; a
  second signal exits at once (status 130);
- a background task that dies (dispatcher, sink submitter, metrics sampler, topic watch: all
  started through ``Runtime.tasks``) or a decision the broker refuses fails readiness at once and
  stops the loop; nothing more is committed and ``run`` raises the cause (the process
  exits non-zero), so the restart resumes from the last commit;
- a Kafka client's background task that ends (its fetcher, group coordinator, metadata
  sync or sender: ``Clients.watch``, checked after every fetch) stops the worker too: what
  was acknowledged is drained and committed, and ``run`` raises a ``ServiceError`` naming
  the task and its error. A fetcher that ends does not stop ``getmany``, which would
  otherwise return nothing for ever.

The Kafka clients come from ``clients`` (``service.kafka.KafkaClients`` by default;
``service.memory_kafka.MemoryKafka`` in tests) and the commit cadence reads ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import (
    KafkaError,
)
from aiokafka.structs import TopicPartition

from engines.base import Engine
from engines.descriptor import FeaturesRef, read_descriptor
from engines.features import Features
from engines.head import Head
from engines.registry import load_model
from engines.version import ModelVersion
from service.backpressure import Backpressure
from service.base import Clients, Consumer, Producer
from service.commits import Committer
from service.connect import start_clients
from service.errors import ModelRefused, ServiceError
from service.http import OpsServer
from service.inbound import build_decoder
from service.kafka import KafkaClients, KafkaSink, membership_lost, transactional_id
from service.logs import get_logger
from service.metrics import Metrics
from service.models import ModelControl
from service.pauses import GcPolicy
from service.pipeline import Pipeline
from service.settings import DeliveryMode, Settings, WarmupMode
from service.tasks import TaskDied, TaskSupervisor
from service.topics import check_topics, watch_inputs
from service.tracing import load_batch_tracer

log = get_logger("weir.serve")

FailHook = Callable[[str], None]
Clock = Callable[[], int]


def _no_failure() -> str | None:
    return None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._rt._on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._rt._on_assigned(list(assigned))


class Runtime:
    """One worker: consumer, pipeline, producer (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        head: Head | None = None,
        spec: Features | None = None,
        model_version: str | None = None,
        worker_index: int = 0,
        fail_hook: FailHook | None = None,
        clients: Clients | None = None,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        self.settings = settings
        self.worker_index = worker_index
        self._features_ref: FeaturesRef | None = None
        self._model_path = ""
        if engine is None or head is None or spec is None:
            bundle, engine, head, spec = load_model(settings)
            model_version = bundle.metadata.model_version
            self._features_ref = read_descriptor(bundle).features
            self._model_path = str(bundle.path)
        self.engine = engine
        self.head = head
        self.spec = spec
        self.model_version = model_version or engine.describe().model_version
        self.decoder = build_decoder(settings)
        """The input's decoder (``[schema]``), built before any connection: a bad setting
        stops the start with nothing to close."""
        self.tracer = load_batch_tracer(settings.tracing)
        """The batch spans of ``[tracing] enabled`` (``service.otel``); None: off."""
        self.eos = settings.delivery.mode is DeliveryMode.EXACTLY_ONCE
        self._fail_hook = fail_hook
        self._clients: Clients = clients or KafkaClients()
        self._clock = clock
        self.tasks = TaskSupervisor(on_death=self._on_task_death)
        """Supervises the dispatcher, the sink's submitter, the metrics sampler and the
        input-topic watch."""
        self._stop = asyncio.Event()
        self._signals = 0
        self._assigned: set[TopicPartition] = set()
        self._rebuild_until: dict[TopicPartition, int] = {}
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.sink: KafkaSink | None = None
        self.pipeline: Pipeline | None = None
        self.rebalances = 0
        self._bp = Backpressure.for_settings(settings.scheduler)
        self.ready = False
        self.metrics = Metrics(self, loop_lag_interval_s=settings.gc.loop_lag_interval_ms / 1000)
        """Prometheus registry, stage histograms, lag and live series of this worker."""
        self._http: OpsServer | None = None
        self._missing_inputs: list[str] = []
        self._client_check: Callable[[], str | None] = _no_failure
        """What ended among the Kafka clients' background tasks (``Clients.watch``)."""
        self._watch: asyncio.Task[None] | None = None
        self.models: ModelControl | None = None
        """Swaps the model version (``service.models``); None until the pipeline runs."""
        self._model_watch: asyncio.Task[None] | None = None
        self._shadow_start: asyncio.Task[None] | None = None
        self._loop_lag: asyncio.Task[None] | None = None
        self.committer: Committer | None = None
        """Commits offsets or transactions (``service.commits``); None until serving."""
        self.gc_policy = GcPolicy(
            freeze=settings.gc.freeze_when_ready, gen0_threshold=settings.gc.gen0_threshold
        )
        """``[gc]``: applied at the first assignment, undone at shutdown."""

    @property
    def commits(self) -> int:
        """Successful commits (offsets or transactions) so far."""
        return 0 if self.committer is None else self.committer.commits

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop fetching, drain, commit and return."""
        self._stop.set()

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second_signal_exit")
            os._exit(130)
        log.info("stopping", reason="signal")
        self.stop()

    def _on_task_death(self, died: TaskDied) -> None:
        """A background task died: stop now (readiness already fails: ``Pipeline.failed``);
        ``run`` raises the death after shutting down, so the process exits non-zero."""
        log.error("task_died", task=died.task, error=str(died))
        self.stop()

    async def _start_clients(self) -> None:
        s = self.settings
        k = s.kafka
        tid = None
        if self.eos:
            tid = transactional_id(
                k, s.delivery.transactional_id_prefix, self.worker_index, socket.gethostname()
            )
        iso = "read_committed" if self.eos else "read_uncommitted"
        if k.group_instance_id:
            # Static membership: each worker is its own member, or they fence each other.
            k = msgspec.structs.replace(
                k, group_instance_id=f"{k.group_instance_id}-{self.worker_index}"
            )
        self.producer, self.consumer = await start_clients(
            self._clients,
            k,
            transactional_id=tid,
            isolation_level=iso,
            startup_timeout_ms=s.delivery.startup_timeout_ms,
            stop=self._stop,
        )
        assert self.consumer is not None
        await self._check_topics()
        self.consumer.subscribe(topics=list(k.input_topics), listener=_Listener(self))
        self._client_check = self._clients.watch(self.consumer, self.producer)

    async def _check_topics(self) -> None:
        try:
            m = self.settings.model
            self._missing_inputs = await check_topics(
                self.settings.kafka,
                self.settings.topics,
                admin=self._clients.admin,
                shadow_topic=m.shadow_topic if m.shadow else "",
            )
        except BaseException:
            for client in (self.consumer, self.producer):
                if client is not None:
                    with contextlib.suppress(KafkaError):
                        await client.stop()
            raise

    async def run(self, *, install_signals: bool = True) -> int:
        """Serve until stopped; returns the exit status (0 after a clean drain)."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal)
        self.metrics.gc.install()
        await self._start_http()
        try:
            await self._start_clients()
        except BaseException:
            await self._stop_http()
            self.metrics.gc.uninstall()
            raise
        assert self.producer is not None and self.consumer is not None
        d = self.settings.delivery
        self.sink = KafkaSink(
            self.producer,
            max_inflight=d.max_inflight_decisions,
            max_inflight_bytes=d.max_inflight_bytes,
            max_message_bytes=self.settings.kafka.max_request_bytes,
            tasks=self.tasks,
        )
        self.pipeline = Pipeline(
            settings=self.settings,
            engine=self.engine,
            head=self.head,
            spec=self.spec,
            sink=self.sink,
            model_version=self.model_version,
            observer=self.metrics,
            tasks=self.tasks,
            decoder=self.decoder,
            tracer=self.tracer,
        )
        self.pipeline.start()
        self.committer = Committer(
            self.settings,
            consumer=self.consumer,
            producer=self.producer,
            pipeline=self.pipeline,
            metrics=self.metrics,
            clock=self._clock,
            fail_hook=self._fail_hook,
        )
        self._start_models(self.pipeline)
        if self.eos:
            self.committer.stall.start()
            await self.producer.begin_transaction()
        log.info(
            "serving",
            worker=self.worker_index,
            topics=list(self.settings.kafka.input_topics),
            mode=self.settings.delivery.mode.value,
            model=self.model_version,
        )
        watch = watch_inputs(
            self.consumer,
            self._clients.metadata_refresher(self.consumer),
            self.settings.kafka,
            self.settings.topics,
            self._missing_inputs,
        )
        self._watch = self.tasks.spawn(watch.run(), name="weir-topic-watch")
        if self.settings.gc.loop_lag_interval_ms:
            self._loop_lag = self.tasks.spawn(self.metrics.loop_lag.run(), "weir-loop-lag")
        status = 0
        try:
            await self._loop()
        finally:
            status = await self._shutdown()
        return status

    def _start_models(self, pipeline: Pipeline) -> None:
        current = ModelVersion(
            version=self.model_version,
            engine=self.engine,
            head=self.head,
            features=self.spec,
            features_ref=self._features_ref,
            path=self._model_path,
        )
        self.models = ModelControl(self.settings, current, pipeline, on_swap=self._on_swap)
        if self.settings.model.watch_dir:
            self._model_watch = self.tasks.spawn(self.models.watch(), "weir-model-watch")
        if self.settings.model.shadow:
            assert self.sink is not None
            # One-shot, not supervised (it ends): a refusal is logged and counted inside.
            self._shadow_start = asyncio.get_running_loop().create_task(
                self._start_shadow(self.models, self.sink), name="weir-shadow-start"
            )

    async def _start_shadow(self, models: ModelControl, sink: KafkaSink) -> None:
        with contextlib.suppress(ModelRefused):
            await models.start_shadow(self.settings.model.shadow, sink, self.tasks)

    def _on_swap(self, version: ModelVersion) -> None:
        self.engine = version.engine
        self.head = version.head
        self.model_version = version.version

    async def admin(self, body: bytes) -> tuple[int, bytes]:
        """Answer ``POST /admin/model`` (``ModelControl.admin``); 503 before serving."""
        if self.models is None:
            return 503, msgspec.json.encode({"error": "not serving yet: no model to replace"})
        return await self.models.admin(body)

    async def _loop(self) -> None:
        assert self.consumer is not None and self.pipeline is not None
        assert self.committer is not None
        consumer = self.consumer
        pipe = self.pipeline
        committer = self.committer
        s = self.settings
        clock = self._clock
        commit_every = (
            s.delivery.flush_interval_ms if self.eos else s.delivery.commit_interval_ms
        ) * 1_000_000
        next_commit = clock() + commit_every
        max_records = s.kafka.max_poll_records
        background = s.delivery.commit_in_background and not self.eos
        stop = self._stop
        client_check = self._client_check
        owned = pipe.tracker.owned
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50, max_records=max_records)
            ended = client_check()
            if ended is not None:
                raise ServiceError(
                    f"the Kafka client stopped working ({ended}); stopping this worker "
                    "so that it restarts from the last commit"
                )
            # Each partition's offsets as fetched: a revoke or a rewind while an earlier
            # partition's records are ingested leaves the rest of its records undecided.
            fetched = {(tp.topic, tp.partition): owned((tp.topic, tp.partition)) for tp in batches}
            for tp, records in batches.items():
                self.metrics.lag.seen(tp, records)
                until = self._rebuild_until.get(tp)
                if until is not None:
                    records = self._rebuild(tp, records, until)
                if records:
                    await pipe.ingest(records, fetched)
            if pipe.failed is not None:
                raise pipe.failed
            self._backpressure()
            committer.check()  # a commit that raised (not a logged KafkaError) stops us
            now = clock()
            held = committer.held(now)  # exactly-once, after a loop stall (every turn)
            if now >= next_commit and not held:
                if background:
                    committer.soon()
                else:
                    await committer.now()
                    committer.check()
                next_commit = clock() + commit_every
        if pipe.failed is not None:
            raise pipe.failed

    def _rebuild(self, tp: TopicPartition, records: list[Any], until: int) -> list[Any]:
        assert self.pipeline is not None
        old = [r for r in records if r.offset < until]
        self.pipeline.warm(old)
        if not records or records[-1].offset >= until - 1:
            del self._rebuild_until[tp]
        return [r for r in records if r.offset >= until]

    def _backpressure(self) -> None:
        """Pause (some of) the partitions, or resume them (``service.backpressure``)."""
        assert self.consumer is not None and self.pipeline is not None
        pipe, full = self.pipeline, self.sink is not None and self.sink.full
        self._bp.update(self.consumer, pipe.scheduler, pipe.budgets, full)

    @property
    def pauses(self) -> int:
        """How many times backpressure paused (some of) the assigned partitions."""
        return self._bp.pauses

    # -- rebalance --------------------------------------------------------------------------------

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        self.rebalances += 1
        self.ready = False
        pipe = self.pipeline
        if pipe is None or not revoked:
            return
        lost = membership_lost(self.consumer)
        drained = await pipe.drain(self.settings.shutdown.revoke_timeout_ms / 1000)
        if not drained:
            log.warning("revoke_drain_timeout", queued=pipe.queued)
        if self.committer is not None:
            if lost:  # another member may read them on already: nothing is committed
                log.warning("partitions_lost", count=len(revoked))
                await self.committer.discard(drained)
            else:
                await self.committer.now(set(revoked))
        for tp in revoked:
            pipe.tracker.forget((tp.topic, tp.partition))
            self._assigned.discard(tp)
            self._rebuild_until.pop(tp, None)
        if not self._assigned:
            pipe.state.clear()
        log.info("partitions_revoked", count=len(revoked))

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        pipe = self.pipeline
        s = self.settings.state
        for tp in assigned:
            self._assigned.add(tp)
            pos = await self.consumer.position(tp)
            if pipe is not None:
                pipe.tracker.reset((tp.topic, tp.partition), pos)
            if s.warmup is WarmupMode.SEEK and s.seek_back > 0 and pos > 0:
                start = max(0, pos - s.seek_back)
                self.consumer.seek(tp, start)
                self._rebuild_until[tp] = pos
        self.ready = self.tasks.failure is None  # a dead task's worker stays unready until exit
        log.info("partitions_assigned", count=len(assigned))
        if not self.gc_policy.applied:  # warm now: what start-up made is never walked again
            self.metrics.gc.uninstall()  # its one full collection is not a serving pause
            self.gc_policy.apply()
            self.metrics.gc.install()

    # -- shutdown ---------------------------------------------------------------------------------

    async def _shutdown(self) -> int:
        status = 0
        pipe = self.pipeline
        for watch in (self._watch, self._model_watch, self._shadow_start, self._loop_lag):
            if watch is not None and not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
        self._watch = self._model_watch = self._shadow_start = self._loop_lag = None
        try:
            if pipe is not None:
                # After a failure nothing more is committed: the restart resumes from the
                # last commit (a dead dispatcher leaves nothing that could drain).
                failed = pipe.failed is not None or (
                    self.committer is not None and self.committer.failed is not None
                )
                if not failed and not await pipe.drain(
                    self.settings.shutdown.drain_timeout_ms / 1000
                ):
                    log.warning("drain_timeout", queued=pipe.queued)
                    status = 1
                if not failed and self.committer is not None:
                    if self.committer.stalled_recently():
                        # A stop right after a stall (a liveness probe that failed
                        # through it, say): the group may have given the partitions away.
                        log.warning("final_commit_skipped", reason="loop_stalled")
                        await self.committer.abandon()
                    else:
                        await self.committer.now()
                else:
                    status = 1
                await pipe.close()
            if self.models is not None:
                await self.models.aclose()
        finally:
            if self.committer is not None:
                self.committer.stall.stop()
                await self.committer.settle()
            if self.sink is not None:
                await self.sink.close()
            if self.consumer is not None:
                with contextlib.suppress(KafkaError):
                    await self.consumer.stop()
            if self.producer is not None:
                with contextlib.suppress(KafkaError):
                    await self.producer.stop()
            await self._stop_http()
            self.metrics.gc.uninstall()
            self.gc_policy.undo()
            if self.tracer is not None:
                await asyncio.to_thread(self.tracer.close)  # exports what is pending
        log.info("stopped", status=status, commits=self.commits)
        return status

    # -- http endpoints ---------------------------------------------------------------------------

    async def _start_http(self) -> None:
        """Serve /metrics, /healthz, /readyz, /status, /live, / on ``[http]``; worker i
        binds ``port + i`` (port 0: any free port). A taken port is logged, not fatal."""
        h = self.settings.http
        if not h.enabled:
            return
        port = h.port + self.worker_index if h.port else 0
        admin = self.admin if self.settings.model.admin else None
        server = OpsServer(self.metrics, h.host, port, tasks=self.tasks, admin=admin)
        try:
            await server.start()
        except OSError as exc:
            log.warning("http_bind_failed", host=h.host, port=port, error=str(exc))
            return
        self._http = server

    async def _stop_http(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
