"""Starting a worker's Kafka clients: retried while the brokers cannot be reached, until
``[delivery] startup_timeout_ms`` or a stop; a refused connection is not retried.

aiokafka logs why a bootstrap connection failed and then raises a bare "Unable to
bootstrap"; a credential or certificate refusal is not worth retrying, and its reason is
what the operator needs, so ``start_clients`` watches aiokafka's log for it and names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    KafkaError,
    SaslAuthenticationFailed,
)

from service.base import Clients, Consumer, Producer
from service.errors import BrokerError
from service.logs import get_logger
from service.settings import KafkaSettings

__all__ = ["start_clients"]

log = get_logger("weir.serve")

_REFUSALS: tuple[type[BaseException], ...] = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ssl.SSLCertVerificationError,
)


class _RefusalWatch(logging.Handler):
    """Keeps the last credential or certificate refusal aiokafka logged while bootstrapping."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.refusal: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, _REFUSALS):
                self.refusal = arg


async def start_clients(
    clients: Clients,
    k: KafkaSettings,
    *,
    transactional_id: str | None,
    isolation_level: str,
    startup_timeout_ms: int,
    stop: asyncio.Event,
) -> tuple[Producer, Consumer]:
    """A producer and a consumer made by ``clients`` and started, made afresh after each
    failed try (backing off from 0.2 s to 5 s); ``BrokerError`` on a refusal, past the
    timeout, or when ``stop`` is set while waiting."""
    deadline = time.monotonic() + startup_timeout_ms / 1000
    delay = 0.2
    watch = _RefusalWatch()
    client_log = logging.getLogger("aiokafka")
    client_log.addHandler(watch)
    try:
        while True:
            producer = clients.producer(k, transactional_id=transactional_id)
            consumer = clients.consumer(k, isolation_level=isolation_level)
            try:
                await producer.start()
                await consumer.start()
                return producer, consumer
            except KafkaError as exc:
                with contextlib.suppress(KafkaError):
                    await consumer.stop()
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                if watch.refusal is not None:
                    raise BrokerError(
                        f"Kafka at {k.bootstrap_servers} refused the connection "
                        f"({k.security_protocol}, {k.sasl_mechanism or 'no SASL'}): "
                        f"{watch.refusal}"
                    ) from watch.refusal
                if time.monotonic() + delay > deadline:
                    raise BrokerError(
                        f"cannot reach Kafka at {k.bootstrap_servers} within "
                        f"{startup_timeout_ms} ms: {exc}"
                    ) from exc
                log.warning("kafka_unreachable_retrying", error=str(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    raise BrokerError(
                        f"stopped before Kafka at {k.bootstrap_servers} was reachable: {exc}"
                    ) from exc
                delay = min(delay * 2, 5.0)
    finally:
        client_log.removeHandler(watch)
