"""The service's transport seam: what a source hands in and what a sink sends out.

``Record`` is the shape of one consumed record; aiokafka's ``ConsumerRecord`` satisfies it
as it is (no copy). ``Sink`` sends encoded messages and reports each one's durable
acknowledgement through the callback it was given. ``service.memory`` holds the in-memory
fakes of both, used by tests, benchmarks and the in-process replay.

Call contract of ``Sink``: ``send`` is called from the event loop; it may wait when the
sink's buffer is full (that is backpressure) but never waits for acknowledgements.
``on_ack(token, error)`` is called on the event loop once per message, with ``error`` None
when the broker acknowledged it. ``flush`` waits until every message sent so far is
acknowledged (or failed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Record(Protocol):
    """One consumed record (the fields of aiokafka's ``ConsumerRecord`` weir reads)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int:
        """Record timestamp, wall ms since epoch (-1 when absent)."""
        ...

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


AckCallback = Callable[[Any, BaseException | None], None]
"""``on_ack(token, error)``: ``token`` is what the sender passed with the message."""


class Sink(Protocol):
    """Sends encoded messages; acknowledgements come back through ``on_ack``."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        token: Any,
        on_ack: AckCallback,
    ) -> None:
        """Queue one message for ``topic``; ``on_ack(token, error)`` follows later."""
        ...

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged or failed."""
        ...
