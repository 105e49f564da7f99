"""Publishing: every decision and dead letter is built from its slot, handed to the sink,
and its slot freed; acknowledgements reach the partition offsets each input was tracked in.

``Publisher`` is the pipeline's outbound half (``service.pipeline``): ``batch`` publishes a
batch's decisions in row order (``ok`` from the engine's output judged by the model's
``Head``, or ``error`` for every row), ``one`` any single decision (``expired``, ``shed``,
``warming``, ``error``), ``dead_letter`` an undecodable or invalid record. Decision headers
name the model version and the status, one shared list per status (sinks never change
headers: ``service.base.Sink``); a traced decision gets a copy with its trace headers
(``service.tracing``). A decision goes to the sink's ``send_now`` first where it has one
(no coroutine where it needs no wait), else to its ``send``. ``on_ack`` is the sink's
acknowledgement callback: a produce error becomes ``failed`` (the pipeline stops on it), a
success acks the offset in the partition offsets it was tracked in (the slot's ``tracked``,
the token sent with the message), whose commit point never passes an unacknowledged
outcome; where the partition was revoked or reset meanwhile, those offsets are no longer
the tracker's and the ack changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import FloatArray
from engines.head import Head
from schemas.codec import dead_letter_codec, decision_codec
from schemas.decision import Anomaly, DeadLetter, Decision, Stamps, Status
from service.base import Record, SendNow, Sink
from service.counters import Counters
from service.errors import PublishError
from service.offsets import PartitionOffsets
from service.scheduler.base import Item
from service.scheduler.deadline import WallToMono
from service.settings import Settings
from service.slots import SlotTable
from service.tracing import TraceCarry

if TYPE_CHECKING:
    from service.base import BatchObserver

__all__ = ["MODEL_HEADER", "STATUS_HEADER", "Publisher"]

Clock = Callable[[], int]

MODEL_HEADER = "weir-model"
STATUS_HEADER = "weir-status"
_STATUS_BYTES = {s: s.value.encode() for s in Status}
_NO_TARGETS = np.zeros(0)
"""What a head that reads no targets (``Head.uses_targets``) is handed."""


def _status_headers(model_version: str) -> dict[Status, list[tuple[str, bytes]]]:
    """A decision's headers for each status: the model version and the status."""
    model = (MODEL_HEADER, model_version.encode())
    return {s: [model, (STATUS_HEADER, _STATUS_BYTES[s])] for s in Status}


class Publisher:
    """Builds and sends decisions and dead letters (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sink: Sink,
        slots: SlotTable,
        trace: TraceCarry,
        counters: Counters,
        w2m: WallToMono,
        model_version: str,
        clock: Clock = time.monotonic_ns,
        wall: Clock = time.time_ns,
        observer: BatchObserver | None = None,
    ) -> None:
        k = settings.kafka
        self._sink = sink
        self._send_now: SendNow | None = getattr(sink, "send_now", None)
        """The sink's send without a coroutine, where it has one (``service.base.Sink``)."""
        self._slots = slots
        self._trace = trace
        self._counters = counters
        self._w2m = w2m
        self._clock = clock
        self._wall = wall
        self._observer = observer
        self._encode = decision_codec(k.output_encoding).encoder.encode
        """A decision to bytes in ``output_encoding`` (the msgspec encoder, bound once)."""
        self._dead_codec = dead_letter_codec(k.output_encoding)
        self._decision_topic = k.decision_topic
        self._dlq_topic = k.dlq_topic
        self.model_version = model_version
        """The version named on every decision (``set_model`` changes it between batches)."""
        self._headers = _status_headers(model_version)
        """A decision's headers by status: one list each, shared by every message of it; a
        traced decision gets a copy with its trace headers added."""
        self.failed: PublishError | None = None
        """The first produce error acknowledged: the pipeline has failed."""

    def set_model(self, model_version: str) -> None:
        """Name ``model_version`` on every decision from now on (a swap, between batches)."""
        self.model_version = model_version
        self._headers = _status_headers(model_version)

    async def batch(
        self,
        items: Sequence[Item[int]],
        idx: np.ndarray,
        out: FloatArray | None,
        dispatch: int,
        done: int,
        error: str | None,
        head: Head,
    ) -> None:
        """Publish a batch's decisions: ``ok`` from ``out``, or ``error`` for every item."""
        n = len(items)
        obs = self._observer
        if error is not None or out is None:
            for item in items:
                await self.one(
                    item.payload, Status.ERROR, dispatch=dispatch, done=done, error=error, n=n
                )
            if obs is not None:
                obs.on_published(self._clock(), -self._w2m.offset_ns)
            return
        slots = self._slots
        head_state = slots.head_state
        if head.uses_targets:
            labels, scores, details = head.judge(
                out, slots.targets[idx], [head_state[item.payload] for item in items]
            )
        else:
            labels, scores, details = head.judge(out, _NO_TARGETS, ())
        names = head.labels
        label_rows = labels.tolist()
        score_rows = scores.tolist()
        # What ``_publish`` does per decision, with what the batch shares read once: the
        # same decisions, stamps and headers, sent in row order.
        clock = self._clock
        m2w = -self._w2m.offset_ns
        dispatch_wall = dispatch + m2w
        done_wall = done + m2w
        send = self._sink.send
        send_now = self._send_now
        encode = self._encode
        on_ack = self.on_ack
        out_topic = self._decision_topic
        version = self.model_version
        headers = self._headers[Status.OK]
        carry = self._trace
        # Held at ingest, before the batch was queued: none held now, none of the batch's.
        held = carry.held
        keyed = head.uses_targets  # only such a head's states are kept in slots
        keys = slots.key
        topics = slots.topic
        partitions = slots.partition
        offsets = slots.offset
        source_ts = slots.source_ts
        kafka_ts = slots.kafka_ts
        ingest = slots.ingest
        tracked = slots.tracked
        free = slots.free  # a batch's slots are never the scratch: ``release`` inlined
        counters = self._counters
        # Counted once for the batch, before any send (a send may suspend).
        counters.decisions[Status.OK] += n
        ok = Status.OK
        # Read now: ``idx`` may be the dispatcher's buffer, which a probe from ingest
        # reuses while a send waits.
        taken = idx[::-1].tolist()
        try:
            for i, item in enumerate(items):
                slot = item.payload
                deadline = item.deadline.mono_ns  # a queued event's: never None
                key = keys[slot]
                topic = topics[slot]
                part = partitions[slot]
                off = offsets[slot]
                now = clock()
                late = item.late or now > deadline
                if late:
                    counters.late += 1
                decision = Decision(
                    topic=topic,
                    partition=part,
                    offset=off,
                    key=key,
                    model_version=version,
                    status=ok,
                    label=names[label_rows[i]],
                    scores=score_rows[i],
                    late=late,
                    batch_size=n,
                    stamps=Stamps(
                        source_ts_ns=source_ts[slot],
                        kafka_ts_ns=kafka_ts[slot],
                        ingest_wall_ns=ingest[slot] + m2w,
                        dispatch_wall_ns=dispatch_wall,
                        infer_done_wall_ns=done_wall,
                        publish_wall_ns=now + m2w,
                        deadline_wall_ns=deadline + m2w,
                    ),
                    anomaly=None if details is None else details[i],
                )
                sent = headers
                if held:
                    traced = carry.take(slot)
                    if traced is not None:
                        sent = [*headers, *traced]
                kb = key.encode()
                value = encode(decision)
                token = (tracked[slot], off)
                if send_now is None or not send_now(out_topic, kb, value, sent, token, on_ack):
                    await send(out_topic, kb, value, sent, token, on_ack)
                if keyed:
                    head_state[slot] = None
        finally:
            # The batch's slots, freed once its publishing ends (its decisions sent or not)
            # and in reverse: the next events take them in this batch's order, so a batch's
            # slots stay one run of rows (``Dispatcher._gather``). The table's ``max_batch``
            # slots beyond ``max_queue`` are the ones a batch holds meanwhile.
            free.extend(taken)
        if obs is not None:
            obs.on_published(clock(), -self._w2m.offset_ns)

    async def one(
        self,
        slot: int,
        status: Status,
        *,
        dispatch: int | None = None,
        done: int | None = None,
        label: str = "",
        scores: list[float] | None = None,
        late: bool = False,
        error: str | None = None,
        n: int = 0,
        anomaly: Anomaly | None = None,
    ) -> None:
        """Publish the decision of the event in ``slot``, then free the slot."""
        slots = self._slots
        deadline = slots.deadline[slot]
        key = slots.key[slot]
        topic = slots.topic[slot]
        part = slots.partition[slot]
        off = slots.offset[slot]
        m2w = -self._w2m.offset_ns
        now = self._clock()
        if status is Status.OK and deadline is not None and now > deadline:
            late = True  # decided, but after its deadline: downstream can tell
        if late:
            self._counters.late += 1
        decision = Decision(
            topic=topic,
            partition=part,
            offset=off,
            key=key,
            model_version=self.model_version,
            status=status,
            label=label,
            scores=scores if scores is not None else [],
            late=late,
            batch_size=n,
            error=error,
            stamps=Stamps(
                source_ts_ns=slots.source_ts[slot],
                kafka_ts_ns=slots.kafka_ts[slot],
                ingest_wall_ns=slots.ingest[slot] + m2w,
                dispatch_wall_ns=None if dispatch is None else dispatch + m2w,
                infer_done_wall_ns=None if done is None else done + m2w,
                publish_wall_ns=now + m2w,
                deadline_wall_ns=None if deadline is None else deadline + m2w,
            ),
            anomaly=anomaly,
        )
        self._counters.decisions[status] += 1
        headers = self._headers[status]
        if self._trace.held:
            traced = self._trace.take(slot)
            if traced is not None:
                headers = [*headers, *traced]
        msg = (
            self._decision_topic,
            key.encode(),
            self._encode(decision),
            headers,
            (slots.tracked[slot], off),
            self.on_ack,
        )
        send_now = self._send_now
        if send_now is None or not send_now(*msg):
            await self._sink.send(*msg)
        slots.release(slot)

    async def dead_letter(
        self,
        rec: Record,
        reason: str,
        detail: str,
        kafka_ns: int | None,
        tracked: PartitionOffsets,
    ) -> None:
        """Publish ``rec`` (tracked in ``tracked``) to the dead-letter topic."""
        counters = self._counters
        counters.dead[reason] = counters.dead.get(reason, 0) + 1
        counters.kinds[(rec.topic, None)] = counters.kinds.get((rec.topic, None), 0) + 1
        dead = DeadLetter(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            reason=reason,
            detail=detail,
            value=rec.value,
            key=rec.key,
            headers=list(rec.headers),
            kafka_ts_ns=kafka_ns,
            dead_wall_ns=self._wall(),
        )
        headers = [("weir-reason", reason.encode())]
        traced = self._trace.read(rec.headers) if rec.headers else None
        if traced is not None:
            headers.extend(traced)
        await self._sink.send(
            self._dlq_topic,
            rec.key,
            self._dead_codec.encode(dead),
            headers,
            (tracked, rec.offset),
            self.on_ack,
        )

    def on_ack(self, token: Any, error: BaseException | None) -> None:
        """The sink's answer for one message; ``token``: the partition offsets its input was
        tracked in and its offset."""
        tracked, off = token
        if error is None:
            # Where the partition was revoked (or reset) while the decision was in flight,
            # ``tracked`` is no longer the tracker's and this changes nothing: the new owner
            # reads on from the commit made at the revoke, which stayed below this offset.
            inflight = tracked.inflight
            if inflight and inflight[0] == off and not tracked.acked:
                inflight.popleft()  # ``PartitionOffsets.ack``'s usual case, inlined
            else:
                tracked.ack(off)
            return
        self._counters.produce_errors += 1
        if self.failed is None:
            topic, part = tracked.tp
            failed = PublishError(
                f"publishing decisions failed: {type(error).__name__}: {error} - "
                f"topic={topic} partition={part} offset={off}"
            )
            failed.__cause__ = error
            self.failed = failed
