"""The naive aiokafka loop: one record in, one inference (bucket 1), one record out.

What most people write first::

    async for record in consumer:
        decision = infer(record)
        await producer.send(decisions_topic, decision, key=record.key)

``producer.send`` only appends to aiokafka's batch (the broker's answer is not awaited per
record): the stronger of the two naive variants, ``send_and_wait`` per record being
strictly slower. Offsets are auto-committed (aiokafka's default, 5 s). Consumer and
producer settings are weir's (``service.kafka``), so only the loop differs.
"""

from __future__ import annotations

from typing import Any

from bench.peers.base import run_async, until_signalled
from bench.peers.config import PeerConfig, weir_settings
from bench.peers.model import PeerModel
from schemas.decision import Decision
from service.kafka import make_consumer, make_producer


class NaiveCore:
    """Decides one record at a time (the loop's body, without Kafka)."""

    def __init__(self, model: PeerModel) -> None:
        self.model = model
        self._rows = model.engine.input_buffer(1)

    def handle(self, rec: Any) -> Decision:
        """The decision of one consumed record (``ConsumerRecord`` or ``MemoryRecord``)."""
        model = self.model
        got = model.admit(
            rec.topic, rec.partition, rec.offset, rec.value, rec.timestamp, self._rows[0]
        )
        if isinstance(got, Decision):
            return got
        return model.decide((got,), self._rows)[0]


async def _loop(cfg: PeerConfig, model: PeerModel) -> None:
    k = weir_settings(cfg).kafka
    core = NaiveCore(model)
    encode = model.encode
    out = cfg.decision_topic
    consumer = make_consumer(k, enable_auto_commit=True)
    producer = make_producer(k)
    await producer.start()
    await consumer.start()
    try:
        consumer.subscribe(topics=cfg.input_topics)
        async for rec in consumer:
            d = core.handle(rec)
            await producer.send(out, value=encode(d), key=rec.key)
    finally:
        await producer.flush()
        await consumer.stop()
        await producer.stop()


def serve(cfg: PeerConfig) -> int:
    """Run the naive loop until SIGTERM."""
    model = PeerModel.load(cfg.bundle, max_batch=cfg.max_batch, warmup_iters=cfg.warmup_iters)
    return run_async(_main(cfg, model), cfg.loop)


async def _main(cfg: PeerConfig, model: PeerModel) -> int:
    await until_signalled(_loop(cfg, model))
    return 0
