"""The echo: a consume -> produce pass-through, the latency floor of a broker and client.

``Echo`` reads the service's input topics and, for every record, publishes an ``ok``
``Decision`` naming it (topic, partition, offset, key) on the decision topic, with the
same consumer and producer settings the service uses (``service.kafka``) and no decoding,
no state, no model. Replayed like the service, its figures are the floor any service on
the same broker, clients and host can reach; it also stands in as a contender that answers
instantly. It stamps ``kafka_ts``, ``ingest`` (when the fetch returned), ``dispatch`` and
``infer_done`` (the same instant) and ``publish``; ``batch_size`` is the fetch's size.

Same lifecycle as ``service.runtime.Runtime``: ``await run()`` until ``stop()`` (or
SIGTERM/SIGINT), ``ready`` once partitions are assigned; offsets are committed, every
``commit_interval_ms``, up to what was produced and acknowledged.

    weir replay echo [--config weir.toml] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from replay.errors import ReplayError
from replay.kafka import settings_for
from schemas.codec import decision_codec
from schemas.decision import Decision, Stamps, Status
from service.kafka import make_consumer, make_producer
from service.settings import Settings

MODEL_VERSION = "echo"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, echo: Echo) -> None:
        self._echo = echo

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._echo.ready = False
        await self._echo._commit()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._echo.ready = True


class Echo:
    """Consume -> produce pass-through (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = False
        self.echoed = 0
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._acked: dict[TopicPartition, int] = {}
        self._pending: set[asyncio.Future[Any]] = set()

    def stop(self) -> None:
        """Stop fetching, wait for acknowledgements, commit, return from ``run``."""
        self._stop.set()

    async def run(self, *, install_signals: bool = True) -> int:
        """Echo until stopped; returns the exit status."""
        k = self.settings.kafka
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        self._producer = make_producer(k)
        self._consumer = make_consumer(k)
        try:
            await self._producer.start()
            await self._consumer.start()
        except KafkaError as exc:
            await self._close()
            raise ReplayError(f"echo cannot reach Kafka at {k.bootstrap_servers}: {exc}") from exc
        self._consumer.subscribe(topics=list(k.input_topics), listener=_Listener(self))
        try:
            await self._loop()
        finally:
            if self._pending:
                await asyncio.wait(self._pending, timeout=5.0)
            with contextlib.suppress(KafkaError):
                await self._commit()
            await self._close()
        return 0

    async def _loop(self) -> None:
        assert self._consumer is not None and self._producer is not None
        consumer, producer = self._consumer, self._producer
        k = self.settings.kafka
        out = k.decision_topic
        encode = decision_codec(k.output_encoding).encode
        headers = [("weir-model", MODEL_VERSION.encode()), ("weir-status", b"ok")]
        commit_every = self.settings.delivery.commit_interval_ms / 1000
        next_commit = time.monotonic() + commit_every
        wall = time.time_ns
        while not self._stop.is_set():
            batches = await consumer.getmany(timeout_ms=50, max_records=k.max_poll_records)
            ingest = wall()
            for tp, records in batches.items():
                n = len(records)
                for r in records:
                    key = r.key.decode(errors="replace") if r.key is not None else ""
                    decision = Decision(
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=key,
                        model_version=MODEL_VERSION,
                        status=Status.OK,
                        batch_size=n,
                        stamps=Stamps(
                            kafka_ts_ns=r.timestamp * 1_000_000 if r.timestamp >= 0 else None,
                            ingest_wall_ns=ingest,
                            dispatch_wall_ns=ingest,
                            infer_done_wall_ns=ingest,
                            publish_wall_ns=wall(),
                        ),
                    )
                    fut = await producer.send(
                        out, value=encode(decision), key=r.key, headers=headers
                    )
                    self._pending.add(fut)
                    fut.add_done_callback(self._done_cb(tp, r.offset))
                self.echoed += n
            if time.monotonic() >= next_commit:
                await self._commit()
                next_commit = time.monotonic() + commit_every

    def _done_cb(self, tp: TopicPartition, offset: int) -> Any:
        def done(fut: asyncio.Future[Any]) -> None:
            self._pending.discard(fut)
            # Records of one partition are produced in order, so acks come in order.
            ok = not fut.cancelled() and fut.exception() is None
            if ok and offset + 1 > self._acked.get(tp, -1):
                self._acked[tp] = offset + 1

        return done

    async def _commit(self) -> None:
        if self._consumer is None or not self._acked:
            return
        assigned = self._consumer.assignment()
        offsets = {tp: off for tp, off in self._acked.items() if tp in assigned}
        self._acked.clear()
        if offsets:
            try:
                await self._consumer.commit(offsets)
            except KafkaError:
                return  # the next commit carries newer offsets

    async def _close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(KafkaError):
                    await client.stop()
        self._consumer = self._producer = None


def _run_cli(args: argparse.Namespace) -> int:
    settings = settings_for(args.config, bootstrap=args.bootstrap)
    print(
        f"echo: {', '.join(settings.kafka.input_topics)} -> {settings.kafka.decision_topic} "
        f"at {settings.kafka.bootstrap_servers} (Ctrl-C stops)"
    )
    return asyncio.run(Echo(settings).run())


def register_echo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay echo``: run the pass-through in place of the service."""
    p = sub.add_parser(
        "echo",
        help="run a consume->produce pass-through in place of the service (the latency floor)",
        description="Answer every input with an instant ok decision: what replay measures "
        "against it is the broker's and the clients' own latency.",
    )
    p.add_argument("--config", type=Path, metavar="weir.toml", help="service settings")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka (default: from settings)")
    p.set_defaults(func=_run_cli)
