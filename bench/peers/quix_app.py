"""Quix Streams (librdkafka): a per-message ``StreamingDataFrame.apply`` pipeline.

The idiomatic Quix Streams application::

    sdf = app.dataframe(events_topic)
    sdf = sdf.apply(decide, metadata=True)     # one message in, one decision out
    sdf.to_topic(decisions_topic)
    app.run()

Quix processes one message at a time (no batching API in a ``StreamingDataFrame``), so each
event is one inference of bucket 1; its consumer and producer are confluent-kafka
(librdkafka, C). The decision names its input through ``message_context()`` (partition,
offset). Per-key windows live in this process (weir's feature code), not in Quix's RocksDB
state: a State store would add a serialization per event. Client settings as close to
weir's as librdkafka allows: ``linger.ms=0`` (librdkafka's default is 5), ``acks=all``,
``fetch.wait.max.ms=5``; Quix's defaults otherwise (idempotent producer, commit every 5 s,
at-least-once).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bench.peers.config import PeerConfig
from bench.peers.model import PeerModel
from schemas.decision import Decision


class ApplyCore:
    """Decides one message (the ``apply`` function's body, without Kafka)."""

    def __init__(self, model: PeerModel) -> None:
        self.model = model
        self._rows = model.engine.input_buffer(1)

    def decide(
        self, value: bytes | None, topic: str, partition: int, offset: int, timestamp_ms: int
    ) -> Decision:
        """The decision for one message at ``(topic, partition, offset)``."""
        model = self.model
        got = model.admit(topic, partition, offset, value, timestamp_ms, self._rows[0])
        if isinstance(got, Decision):
            return got
        return model.decide((got,), self._rows)[0]


def build_app(cfg: PeerConfig, model: PeerModel) -> Any:
    """The Quix ``Application`` with its dataframe wired input -> decisions."""
    from quixstreams import Application, message_context

    level = getattr(logging, cfg.log_level.upper(), logging.WARNING)
    app = Application(
        broker_address=cfg.bootstrap,
        consumer_group=cfg.group_id,
        auto_offset_reset="earliest",
        consumer_extra_config={"fetch.wait.max.ms": 5},
        producer_extra_config={"linger.ms": 0, "acks": "all"},
        state_dir=str(Path(cfg.workdir or ".") / "quix-state"),
        use_changelog_topics=False,
        loglevel=level if isinstance(level, int) else logging.WARNING,
    )
    sink = app.topic(cfg.decision_topic, value_serializer="bytes", key_serializer="bytes")
    core = ApplyCore(model)
    encode = model.encode

    def decide(value: bytes, key: Any, timestamp: int, headers: Any) -> bytes:
        ctx = message_context()
        return encode(core.decide(value, ctx.topic, ctx.partition, ctx.offset, timestamp))

    # One dataframe per input topic (the mixed-deadline scenario has two); ``app.run()``
    # runs every dataframe the application defines.
    for name in cfg.input_topics:
        source = app.topic(name, value_deserializer="bytes", key_deserializer="bytes")
        sdf = app.dataframe(source)
        sdf = sdf.apply(decide, metadata=True)
        sdf.to_topic(sink)
    return app


def serve(cfg: PeerConfig) -> int:
    """Run the Quix application until SIGTERM."""
    model = PeerModel.load(cfg.bundle, max_batch=cfg.max_batch, warmup_iters=cfg.warmup_iters)
    build_app(cfg, model).run()
    return 0
