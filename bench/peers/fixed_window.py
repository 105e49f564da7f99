"""The fixed-window batcher: Triton / MLServer dynamic batching, written on aiokafka.

A batch closes when it holds ``max_batch`` events or ``max_wait_ms`` after its *first*
event arrived, whichever comes first (Triton's ``max_queue_delay_microseconds``,
MLServer's ``max_batch_time``); then it runs as one inference and its decisions go out
in order. This is the loop a user writes around a model server's batching rule: it does
not look at deadlines, the engine's latency, or how much of the budget is left.

    while True:
        records = await consumer.getmany(timeout_ms=time_left_in_window, max_records=room)
        add each record; flush when full or when the window's time is up

Consumer and producer settings are weir's (``service.kafka``); offsets are auto-committed
(aiokafka's default, as in the naive loop), so only the batching rule differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.peers.base import run_async, until_signalled
from bench.peers.config import PeerConfig, weir_settings
from bench.peers.model import PeerModel, Pending
from schemas.decision import Decision
from service.kafka import make_consumer, make_producer


class FixedWindowBatcher:
    """Collects admitted events into one window; ``add`` / ``flush`` return decisions."""

    def __init__(
        self,
        model: PeerModel,
        *,
        max_batch: int,
        max_wait_ns: int,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.model = model
        self.max_batch = min(max_batch, model.engine.max_batch)
        self.max_wait_ns = max_wait_ns
        self._clock = clock
        self._rows = model.new_rows(self.max_batch)
        self._pending: list[Pending] = []
        self.opened_ns: int | None = None
        """When the open window's first event arrived (None: no window open)."""

    @property
    def size(self) -> int:
        """Events in the open window."""
        return len(self._pending)

    @property
    def closes_at(self) -> int | None:
        """When the open window must be flushed (clock ns), None when empty."""
        return None if self.opened_ns is None else self.opened_ns + self.max_wait_ns

    def add(self, rec: Any) -> list[Decision]:
        """Admit one record; decisions for it (warming) or for the window if it filled."""
        got = self.model.admit(
            rec.topic,
            rec.partition,
            rec.offset,
            rec.value,
            rec.timestamp,
            self._rows[len(self._pending)],
        )
        if isinstance(got, Decision):
            return [got]
        if not self._pending:
            self.opened_ns = self._clock()
        self._pending.append(got)
        if len(self._pending) >= self.max_batch:
            return self.flush()
        return []

    def due(self, now: int) -> bool:
        """True when the open window's time is up."""
        closes = self.closes_at
        return closes is not None and now >= closes

    def flush(self) -> list[Decision]:
        """Infer the open window (if any) and return its decisions in arrival order."""
        pending, self._pending = self._pending, []
        self.opened_ns = None
        return self.model.decide(pending, self._rows)


async def _loop(cfg: PeerConfig, model: PeerModel) -> None:
    k = weir_settings(cfg).kafka
    clock = time.monotonic_ns
    batcher = FixedWindowBatcher(
        model, max_batch=cfg.max_batch, max_wait_ns=int(cfg.max_wait_ms * 1e6), clock=clock
    )
    encode = model.encode
    out = cfg.decision_topic
    consumer = make_consumer(k, enable_auto_commit=True)
    producer = make_producer(k)
    await producer.start()
    await consumer.start()

    async def publish(decisions: list[Decision]) -> None:
        for d in decisions:
            await producer.send(out, value=encode(d), key=d.key.encode())

    try:
        consumer.subscribe(topics=cfg.input_topics)
        while True:
            closes = batcher.closes_at
            wait_ms = 100.0 if closes is None else max(0.0, (closes - clock()) / 1e6)
            batches = await consumer.getmany(
                timeout_ms=wait_ms, max_records=batcher.max_batch - batcher.size
            )
            for records in batches.values():
                for rec in records:
                    await publish(batcher.add(rec))
            if batcher.due(clock()):
                await publish(batcher.flush())
    finally:
        await producer.flush()
        await consumer.stop()
        await producer.stop()


def serve(cfg: PeerConfig) -> int:
    """Run the fixed-window batcher until SIGTERM."""
    model = PeerModel.load(cfg.bundle, max_batch=cfg.max_batch, warmup_iters=cfg.warmup_iters)
    return run_async(_main(cfg, model), cfg.loop)


async def _main(cfg: PeerConfig, model: PeerModel) -> int:
    await until_signalled(_loop(cfg, model))
    return 0
