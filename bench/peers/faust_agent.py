"""Faust (faust-streaming): an agent that batches with ``stream.take``.

The idiomatic Faust batching agent::

    @app.agent(events_topic)
    async def infer(stream):
        async for batch in stream.take_events(max_batch, within=max_wait_s):
            for decision in decide(batch):
                await decisions_topic.send(key=..., value=decision)

``take_events`` is ``take`` (same buffer, same ``within`` timer, same acks) yielding the
events instead of their values, because a decision must name its input's partition and
offset (``event.message``). Faust's own defaults otherwise: its aiokafka consumer and
producer (acks=-1, linger 0), its commit interval, an in-memory table store, its web
server off. The ``within`` timer starts when the agent starts waiting, not at the first
arrival (that is how ``take`` works).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.config import PeerConfig
from bench.peers.model import PeerModel, Pending
from schemas.decision import Decision


class TakeCore:
    """Decides one ``take`` batch of Faust events (the agent's body, without Kafka)."""

    def __init__(self, model: PeerModel, max_batch: int) -> None:
        self.model = model
        self._rows = model.new_rows(max(max_batch, 1))

    def decide(self, events: Sequence[Any]) -> list[Decision]:
        """Decisions for ``events`` (each with a Faust ``.message``), in input order."""
        model = self.model
        out: list[Decision | None] = []
        pending: list[Pending] = []
        slots: list[int] = []
        rows = self._rows
        for ev in events:
            m = ev.message
            ts = m.timestamp
            ts_ms = round(ts * 1000) if ts is not None and ts >= 0 else -1
            got = model.admit(m.topic, m.partition, m.offset, m.value, ts_ms, rows[len(pending)])
            if isinstance(got, Decision):
                out.append(got)
            else:
                slots.append(len(out))
                out.append(None)
                pending.append(got)
                if len(pending) == len(rows):
                    self._run(pending, slots, out)
        self._run(pending, slots, out)
        return [d for d in out if d is not None]

    def _run(self, pending: list[Pending], slots: list[int], out: list[Decision | None]) -> None:
        for i, d in zip(slots, self.model.decide(pending, self._rows), strict=True):
            out[i] = d
        pending.clear()
        slots.clear()


def build_app(cfg: PeerConfig, model: PeerModel) -> Any:
    """The Faust app with its batching agent."""
    import faust

    workdir = Path(cfg.workdir or ".") / "faust-data"
    app = faust.App(
        cfg.group_id,
        broker=f"kafka://{cfg.bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_partitions=cfg.partitions,
        store="memory://",
        web_enabled=False,
        datadir=str(workdir),
        autodiscover=False,
    )
    source = app.topic(
        *cfg.input_topics, key_type=bytes, value_type=bytes, partitions=cfg.partitions
    )
    sink = app.topic(
        cfg.decision_topic, key_type=bytes, value_type=bytes, partitions=cfg.partitions
    )
    core = TakeCore(model, cfg.max_batch)
    encode = model.encode
    within = cfg.max_wait_ms / 1000.0

    async def infer(stream: Any) -> None:
        async for events in stream.take_events(cfg.max_batch, within=within):
            for d in core.decide(events):
                await sink.send(key=d.key.encode(), value=encode(d))

    app.agent(source, name=f"{cfg.group_id}-infer")(infer)
    return app


def serve(cfg: PeerConfig) -> int:
    """Run the Faust worker until SIGTERM."""
    import faust

    model = PeerModel.load(cfg.bundle, max_batch=cfg.max_batch, warmup_iters=cfg.warmup_iters)
    if cfg.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_app(cfg, model)
    level = getattr(logging, cfg.log_level.upper(), logging.WARNING)
    worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    status = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        status = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return status
