"""The broker seam: a Kafka broker that weir starts, reaches and stops for dev, tests and CI.

Call contract of every :class:`Broker`:

- All three methods are plain blocking calls; none needs (or may be awaited on) an event loop.
  ``start`` runs its own short-lived loop for the readiness probe, on a helper thread when
  the calling thread already runs one, so it is safe from sync code, from a thread, and from
  a coroutine (where it blocks that loop; prefer ``await asyncio.to_thread(broker.start)``).
- ``start()`` returns the bootstrap address (``"127.0.0.1:PORT"``) once the broker answers
  metadata requests. When a broker with the same state directory already runs, it starts
  nothing, reports ``already running`` through the progress callback and returns that
  broker's address. The broker process outlives the Python process that started it, until
  ``stop()`` (from any process) ends it.
- ``stop()`` ends the broker (SIGTERM, a bounded wait for a clean exit, then SIGKILL) and
  returns once it is gone; stopping a stopped broker is a no-op.
- ``status()`` never starts or stops anything.
- Failures raise :class:`service.errors.BrokerError` naming the bad value and, for a broker
  that died or never became ready, quoting the last lines of its log.

Implementations: :class:`service.broker.kafka.ApacheKafka`, :class:`service.broker.kfake.KFake`,
:class:`service.broker.tansu.Tansu` and the fake :class:`service.broker.external.ExternalBroker`
(an address someone else runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import msgspec

BrokerKind = Literal["kafka", "kfake", "tansu", "external"]

#: Receives one human-readable progress line at a time (``print`` to stderr in the CLI).
Progress = Callable[[str], None]


class BrokerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`Broker.status` reports; ``bootstrap``/``pid`` are the last known ones."""

    kind: BrokerKind
    running: bool
    bootstrap: str | None = None
    pid: int | None = None
    version: str | None = None
    state_dir: str | None = None
    log_file: str | None = None

    def describe(self) -> str:
        """One line for people, e.g. ``kafka: running at 127.0.0.1:9092 (pid 12, 4.1.1)``."""
        if self.running:
            where = f" at {self.bootstrap}" if self.bootstrap else ""
            details = [f"pid {self.pid}"] if self.pid is not None else []
            if self.version:
                details.append(self.version)
            if self.log_file:
                details.append(f"log {self.log_file}")
            extra = f" ({', '.join(details)})" if details else ""
            return f"{self.kind}: running{where}{extra}"
        last = f" (last at {self.bootstrap})" if self.bootstrap else ""
        return f"{self.kind}: stopped{last}"


class Broker(Protocol):
    """A Kafka-protocol broker reachable on loopback; see the module docstring for the contract."""

    @property
    def kind(self) -> BrokerKind:
        """Which implementation this is."""
        ...

    def start(self) -> str:
        """Start (or find running) and wait until ready; returns ``host:port``."""
        ...

    def stop(self) -> None:
        """Stop it and wait until the process is gone; no-op when stopped."""
        ...

    def status(self) -> BrokerStatus:
        """Running or stopped, with the last known address and pid."""
        ...
