"""aiokafka glue: client settings from ``KafkaSettings``, and the Kafka ``Sink``.

Secrets are revealed only here, into the client constructors. Every aiokafka error that
leaves this module is wrapped in a ``ServiceError`` naming what was being done.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from service.base import AckCallback
from service.settings import KafkaSettings


def _security(k: KafkaSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = create_ssl_context(
            cafile=k.ssl_cafile,
            certfile=k.ssl_certfile,
            keyfile=k.ssl_keyfile,
            password=k.ssl_password.reveal() if k.ssl_password is not None else None,
        )
    if k.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        out["sasl_mechanism"] = k.sasl_mechanism or "PLAIN"
        out["sasl_plain_username"] = k.sasl_username
        out["sasl_plain_password"] = (
            k.sasl_password.reveal() if k.sasl_password is not None else None
        )
    return out


def consumer_kwargs(
    k: KafkaSettings, *, isolation_level: str = "read_uncommitted"
) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaConsumer`` (manual commits, low-latency fetch)."""
    kw: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": k.client_id,
        "group_id": k.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": k.auto_offset_reset,
        "fetch_max_wait_ms": k.fetch_max_wait_ms,
        "fetch_min_bytes": k.fetch_min_bytes,
        "max_partition_fetch_bytes": k.max_partition_fetch_bytes,
        "session_timeout_ms": k.session_timeout_ms,
        "heartbeat_interval_ms": k.heartbeat_interval_ms,
        "max_poll_interval_ms": k.max_poll_interval_ms,
        "request_timeout_ms": k.request_timeout_ms,
        "retry_backoff_ms": k.retry_backoff_ms,
        "isolation_level": isolation_level,
        **_security(k),
    }
    if k.group_instance_id:
        kw["group_instance_id"] = k.group_instance_id
    return kw


def producer_kwargs(k: KafkaSettings, *, transactional_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``."""
    kw: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": k.client_id,
        "acks": k.acks if transactional_id is None else "all",
        "linger_ms": k.linger_ms,
        "compression_type": k.compression_type,
        "request_timeout_ms": k.request_timeout_ms,
        "retry_backoff_ms": k.retry_backoff_ms,
        "enable_idempotence": k.enable_idempotence or transactional_id is not None,
        **_security(k),
    }
    if transactional_id is not None:
        kw["transactional_id"] = transactional_id
    return kw


def make_consumer(k: KafkaSettings, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer from settings (not started, not subscribed)."""
    return AIOKafkaConsumer(**{**consumer_kwargs(k), **overrides})


def make_producer(k: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer from settings (not started)."""
    return AIOKafkaProducer(**{**producer_kwargs(k), **overrides})


class KafkaSink:
    """The ``Sink`` over an ``AIOKafkaProducer``: one delivery future per message."""

    __slots__ = ("_done", "_inflight", "_producer")

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._inflight = 0
        self._done = asyncio.Event()
        self._done.set()

    @property
    def inflight(self) -> int:
        """Messages sent and not yet acknowledged or failed."""
        return self._inflight

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> None:
        """Append to the producer's batch; ``on_ack`` runs when the broker answers."""
        fut = await self._producer.send(topic, value=value, key=key, headers=headers)
        self._inflight += 1
        self._done.clear()
        fut.add_done_callback(functools.partial(self._on_done, token, on_ack))

    def _on_done(self, token: Any, on_ack: AckCallback, fut: asyncio.Future[Any]) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._done.set()
        if fut.cancelled():
            on_ack(token, asyncio.CancelledError("produce cancelled"))
        else:
            on_ack(token, fut.exception())

    async def flush(self) -> None:
        """Wait until every message sent so far has its answer."""
        await self._producer.flush()
        await self._done.wait()
