"""In-memory fakes of the transport seam: a record type and a sink that keeps what it got.

``MemoryRecord`` builds records without Kafka; ``MemorySink`` acknowledges each message at
once (or after ``ack_delay_s``, or fails it when ``fail`` says so) and keeps every message,
so tests and the in-process replay can read decisions back. ``MemoryAdmin`` is a cluster's
topic list for ``service.topics``: it creates topics at once, or refuses as a broker would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import KafkaError

from service.base import AckCallback


class MemoryRecord:
    """A consumed record, made by hand."""

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        *,
        key: bytes | None = None,
        timestamp: int = -1,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.value = value
        self.key = key
        self.timestamp = timestamp
        self.headers = headers


class SentMessage:
    """One message a ``MemorySink`` received."""

    __slots__ = ("headers", "key", "topic", "value")

    def __init__(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers

    def header(self, name: str) -> bytes | None:
        """The first header called ``name``."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


class MemorySink:
    """Keeps sent messages in order; acknowledges them immediately unless told otherwise."""

    def __init__(
        self,
        *,
        ack_delay_s: float = 0.0,
        fail: Callable[[SentMessage], BaseException | None] | None = None,
        on_message: Callable[[SentMessage], None] | None = None,
    ) -> None:
        self.messages: list[SentMessage] = []
        self._delay = ack_delay_s
        self._fail = fail
        self._on_message = on_message
        self._pending: set[asyncio.TimerHandle] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> None:
        """Keep the message and acknowledge (or fail) it."""
        self.send_now(topic, key, value, headers, token, on_ack)

    def send_now(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> bool:
        """``send`` without a coroutine (``service.base.SendNow``): it never waits."""
        msg = SentMessage(topic, key, value, headers)
        error = self._fail(msg) if self._fail is not None else None
        if error is None:
            self.messages.append(msg)
            if self._on_message is not None:
                self._on_message(msg)
        if self._delay <= 0:
            on_ack(token, error)
            return True
        loop = asyncio.get_running_loop()
        self._idle.clear()

        def fire() -> None:
            self._pending.discard(handle)
            on_ack(token, error)
            if not self._pending:
                self._idle.set()

        handle = loop.call_later(self._delay, fire)
        self._pending.add(handle)
        return True

    async def flush(self) -> None:
        """Wait for delayed acknowledgements."""
        await self._idle.wait()

    def on(self, topic: str) -> list[SentMessage]:
        """Messages sent to ``topic``, in order."""
        return [m for m in self.messages if m.topic == topic]


class MemoryAdmin:
    """``TopicAdmin`` over a dict of topic -> partitions; records what it was asked."""

    def __init__(
        self,
        topics: dict[str, int] | None = None,
        *,
        refuse: Callable[[str, int, int], KafkaError | None] | None = None,
        leaderless: set[str] | None = None,
        lookup_error: KafkaError | None = None,
    ) -> None:
        self.partitions: dict[str, int] = dict(topics or {})
        """Topic -> partition count, as the cluster holds them."""
        self.created: list[tuple[str, int, int]] = []
        """``(topic, partitions, replication_factor)`` of every topic created here."""
        self.open = False
        self._refuse = refuse
        self._leaderless = set(leaderless or ())
        self._lookup_error = lookup_error

    async def start(self) -> None:
        """Mark the client open."""
        self.open = True

    async def topics(self) -> set[str]:
        """The names of the held topics (or ``lookup_error``, raised)."""
        if self._lookup_error is not None:
            raise self._lookup_error
        return set(self.partitions)

    async def create(self, topic: str, partitions: int, replication_factor: int) -> bool:
        """Add ``topic`` unless it is there, or raise what ``refuse`` returns for it."""
        error = self._refuse(topic, partitions, replication_factor) if self._refuse else None
        if error is not None:
            raise error
        if topic in self.partitions:
            return False
        self.partitions[topic] = partitions
        self.created.append((topic, partitions, replication_factor))
        return True

    async def has_leaders(self, topic: str) -> bool:
        """True unless ``topic`` was named in ``leaderless``."""
        return topic in self.partitions and topic not in self._leaderless

    async def close(self) -> None:
        """Mark the client closed."""
        self.open = False
