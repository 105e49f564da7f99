"""Shadow mode: a candidate model version decides the primary's batches on the side.

A :class:`Shadow` holds a candidate ``ModelVersion`` (same feature contract as the
primary's: ``engines.version.contract_change``) and publishes its decisions, which carry
its own version, to ``[model] shadow_topic``. It must never cost the primary deadline
budget, so:

- the pipeline hands it a batch (``offer``) after the primary's inference, right before
  the primary's decisions are published: ``offer`` only copies the batch's input rows,
  targets, keys and coordinates (microseconds) into a bounded queue of
  ``[model] shadow_queue`` batches, and never waits. A full queue, or
  ``shadow_queue x max_batch`` shadow decisions unacknowledged by the sink, drops the
  batch and counts it (``weir_shadow_batches_total{result="dropped"}``);
- its task (supervised, ``weir-shadow``) starts a batch only while the primary is idle
  (``primary_idle``: nothing queued, no batch deciding; the dispatcher calls ``wake`` each
  time it goes idle), so under load the shadow waits and its bounded queue drops, rather
  than competing with the primary for the CPU and the GIL; inference, judging and
  encoding run in the shadow's own worker thread, so on the loop it costs one ``send``
  per decision, and the loop gets a turn (and that thread the GIL) every 16 of them;
- an engine error counts the batch ``failed``; a shadow decision the broker refuses is
  counted (``failed``, once per batch) and logged once: neither stops the service or
  touches the offsets, which only the primary's decisions move. A sink that cannot take
  shadow decisions at all (``ServiceError``: no such topic) stops the shadow: logged
  (``shadow_stopped``), every later batch counted ``dropped``.

The shadow keeps its own per-key head state (an ``anomaly`` head's likelihood), bounded by
``[state] max_keys`` (least recently used key evicted), touched only in its thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any

import numpy as np

from engines.errors import EngineError
from engines.version import ModelVersion
from schemas.codec import decision_codec
from schemas.decision import Decision, Stamps, Status
from service.base import Sink
from service.counters import Counters
from service.errors import ServiceError
from service.logs import get_logger
from service.scheduler.base import Item
from service.slots import SlotTable

__all__ = ["Shadow"]

log = get_logger("weir.shadow")

_Message = tuple[bytes, bytes]
_SENDS_PER_TURN = 16
"""Shadow decisions handed to the sink between two turns given back to the loop."""


class _Job:
    """One primary batch, copied for the shadow: rows, targets and the slots' fields."""

    __slots__ = (
        "failed",
        "ingest",
        "kafka_ts",
        "keys",
        "m2w",
        "offsets",
        "partitions",
        "rows",
        "source_ts",
        "targets",
        "topics",
    )

    def __init__(
        self, rows: np.ndarray, targets: np.ndarray, slots: SlotTable, idx: list[int], m2w: int
    ) -> None:
        self.rows = rows
        self.targets = targets
        # itemgetter copies each field's entries in C: microseconds for a large batch.
        pick = itemgetter(*idx) if len(idx) > 1 else _one(idx[0])
        self.keys: tuple[str, ...] = pick(slots.key)
        self.topics: tuple[str, ...] = pick(slots.topic)
        self.partitions: tuple[int, ...] = pick(slots.partition)
        self.offsets: tuple[int, ...] = pick(slots.offset)
        self.ingest: tuple[int, ...] = pick(slots.ingest)
        self.kafka_ts: tuple[int | None, ...] = pick(slots.kafka_ts)
        self.source_ts: tuple[int | None, ...] = pick(slots.source_ts)
        self.m2w = m2w
        self.failed = False


def _one(i: int) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    return lambda seq: (seq[i],)


class Shadow:
    """Runs ``version`` on the primary's batches and publishes to ``topic`` (module doc)."""

    def __init__(
        self,
        version: ModelVersion,
        *,
        sink: Sink,
        topic: str,
        counters: Counters,
        queue: int = 4,
        max_keys: int = 100_000,
        output_encoding: str = "json",
        primary_idle: Callable[[], bool] | None = None,
    ) -> None:
        self.version = version
        self._primary_idle = primary_idle
        """Whether the primary is idle now (``Pipeline.idle``); None: never wait for it."""
        self._woken = asyncio.Event()
        self._sink = sink
        self._topic = topic
        self._counters = counters.shadow
        self._queue: deque[_Job] = deque()
        self._max_queue = queue
        self._max_inflight = queue * version.engine.max_batch
        self.inflight = 0
        """Shadow decisions handed to the sink and not yet acknowledged."""
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._keys: OrderedDict[str, Any] = OrderedDict()
        self._max_keys = max_keys
        self._codec = decision_codec(output_encoding)
        self._headers = [("weir-model", version.version.encode()), ("weir-shadow", b"1")]
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="weir-shadow")
        self._warned = False
        self.stopped: str | None = None
        """Why the shadow stopped for good (its sink refused its topic), else None."""
        version.engine.observe = False

    # -- on the dispatcher (hot path): copy and queue, never wait ------------------------

    def offer(
        self,
        inputs: np.ndarray,
        items: Sequence[Item[int]],
        idx: np.ndarray,
        slots: SlotTable,
        mono_to_wall_ns: int,
    ) -> None:
        """Queue a copy of a primary batch (its gathered ``inputs`` rows), or drop it."""
        if (
            len(self._queue) >= self._max_queue
            or self.inflight >= self._max_inflight
            or self.stopped is not None
        ):
            self._counters["dropped"] += 1
            return
        n = len(items)
        ids = idx[:n].tolist()
        job = _Job(inputs[:n].copy(), slots.targets[ids], slots, ids, mono_to_wall_ns)
        self._queue.append(job)
        self._idle.clear()
        self._ready.set()

    def wake(self) -> None:
        """The primary went idle (the dispatcher calls this): a waiting batch may start."""
        self._woken.set()

    # -- the shadow's own task and thread --------------------------------------------------

    async def run(self) -> None:
        """Decide queued batches until cancelled (start it supervised)."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
            await self._until_primary_idle()
            job = self._queue.popleft()
            try:
                messages = await loop.run_in_executor(self._executor, self._decide, job)
            except EngineError as exc:
                self._counters["failed"] += 1
                self._warn("shadow_engine_error", str(exc))
                continue
            try:
                for i, (key, value) in enumerate(messages, 1):
                    await self._sink.send(self._topic, key, value, self._headers, job, self._on_ack)
                    self.inflight += 1
                    if not i % _SENDS_PER_TURN:
                        await asyncio.sleep(0)  # the primary may need the loop
                        await self._until_primary_idle()
            except ServiceError as exc:
                self._stop(str(exc))
                continue
            self._counters["run"] += 1

    async def _until_primary_idle(self) -> None:
        idle = self._primary_idle
        while idle is not None and not idle():
            self._woken.clear()
            await self._woken.wait()

    async def drained(self) -> None:
        """Wait until every queued batch is decided and handed to the sink."""
        await self._idle.wait()

    def _decide(self, job: _Job) -> list[_Message]:
        """Infer, judge and encode one batch (in the shadow's thread)."""
        v = self.version
        engine = v.engine
        n = len(job.keys)
        bucket = engine.bucket_for(n)
        dispatch = time.time_ns()
        engine.input_buffer(bucket)[:n] = job.rows
        out = engine.infer(bucket, n)
        done = time.time_ns()
        states = [self._state(k) for k in job.keys]
        labels, scores, details = v.head.judge(out, job.targets, states)
        names = v.head.labels
        score_rows = scores.tolist()
        messages: list[_Message] = []
        m2w = job.m2w
        for i, key in enumerate(job.keys):
            decision = Decision(
                topic=job.topics[i],
                partition=job.partitions[i],
                offset=job.offsets[i],
                key=key,
                model_version=v.version,
                status=Status.OK,
                label=names[labels[i]],
                scores=score_rows[i],
                batch_size=n,
                stamps=Stamps(
                    source_ts_ns=job.source_ts[i],
                    kafka_ts_ns=job.kafka_ts[i],
                    ingest_wall_ns=job.ingest[i] + m2w,
                    dispatch_wall_ns=dispatch,
                    infer_done_wall_ns=done,
                    publish_wall_ns=time.time_ns(),
                ),
                anomaly=None if details is None else details[i],
            )
            messages.append((key.encode(), self._codec.encode(decision)))
            if not (i + 1) % _SENDS_PER_TURN:
                # Let the loop's thread take the GIL: it would otherwise wait for the end of
                # this run of Python or the interpreter's 5 ms switch interval.
                time.sleep(0)
        return messages

    def _state(self, key: str) -> Any:
        states = self._keys
        state = states.get(key)
        if state is None:
            state = self.version.head.new_key_state()
            states[key] = state
            if len(states) > self._max_keys:
                states.popitem(last=False)
        else:
            states.move_to_end(key)
        return state

    def _on_ack(self, job: Any, error: BaseException | None) -> None:
        self.inflight -= 1
        if error is not None and not job.failed:
            job.failed = True
            self._counters["failed"] += 1
            self._warn("shadow_publish_failed", f"{type(error).__name__}: {error}")

    def _stop(self, reason: str) -> None:
        self.stopped = reason
        self._counters["failed"] += 1
        self._counters["dropped"] += len(self._queue)
        self._queue.clear()
        log.error("shadow_stopped", error=reason, version=self.version.version, topic=self._topic)

    def _warn(self, event: str, error: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(event, error=error, version=self.version.version, topic=self._topic)

    def close(self) -> None:
        """Stop the shadow's thread (a batch in it finishes) and release its engine."""
        self._executor.shutdown(wait=True)
        self.version.engine.close()
