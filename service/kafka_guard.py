"""Two guards around aiokafka's background work, which otherwise can stop without a word.

**Writes on a closed connection under uvloop.** aiokafka's ``AIOKafkaConnection`` writes a
request with ``StreamWriter.write`` and turns an ``OSError`` into ``KafkaConnectionError``,
which every caller retries. A connection reset by the peer can close the transport before
aiokafka notices; asyncio's own transport then ignores the write, but uvloop's raises
``RuntimeError("unable to perform operation on <TCPTransport closed=True ...>")``
(aiokafka issue #1038, open against 0.14.0). Raised inside the consumer's fetch task, it
ends that task: ``getmany`` then returns nothing for ever while the group heartbeat keeps
the partitions assigned. ``guard_closed_writes`` makes that write fail the way an
``OSError`` does (the connection closed, ``KafkaConnectionError`` raised), so the client
reconnects as it does after any reset. Seen here: ``chaos/network.py``'s reset connections
left a worker with every partition and no fetches, 2,401 of 5,100 events never decided.

**A background task that ends anyway.** ``watch_clients`` names the first of a started
consumer's or producer's background tasks (the fetcher, the group coordinator, the
metadata synchroniser, the producer's sender) that has ended; the runtime checks it after
every fetch and stops the worker with the cause, so it restarts from the last commit
instead of serving nothing. These tasks are aiokafka's private attributes: the
integration suite checks that a started client of the locked version has every one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import KafkaConnectionError

__all__ = ["WATCHED", "client_tasks", "guard_closed_writes", "watch_clients"]

_GUARDED = "__weir_guarded__"

WATCHED: dict[str, dict[str, tuple[str, ...]]] = {
    "consumer": {
        "fetcher": ("_fetcher", "_fetch_task"),
        "group coordinator": ("_coordinator", "_coordination_task"),
        "consumer metadata sync": ("_client", "_sync_task"),
    },
    "producer": {
        "sender": ("_sender", "_sender_task"),
        "producer metadata sync": ("client", "_sync_task"),
    },
}
"""Each watched background task, by role and name: its attribute path from the client."""


def _guarded(write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def guarded(self: AIOKafkaConnection, *args: Any, **kwargs: Any) -> Any:
        writer = self._writer
        try:
            return write(self, *args, **kwargs)
        except RuntimeError as err:
            if writer is None or not writer.transport.is_closing():
                raise
            self.close(reason=CloseReason.CONNECTION_BROKEN)
            raise KafkaConnectionError(
                f"Connection at {self._host}:{self._port} broken: {err}"
            ) from err

    setattr(guarded, _GUARDED, True)
    return guarded


def guard_closed_writes() -> None:
    """Make a write on a closed transport fail as an ``OSError`` would (module docstring);
    idempotent, process-wide."""
    for name in ("send", "_send_sasl_token"):
        write = getattr(AIOKafkaConnection, name)
        if not getattr(write, _GUARDED, False):
            setattr(AIOKafkaConnection, name, _guarded(write))


def client_tasks(client: object, role: str) -> dict[str, asyncio.Future[Any] | None]:
    """The watched background tasks of a started ``AIOKafkaConsumer`` (``role="consumer"``)
    or ``AIOKafkaProducer`` (``"producer"``), by name; None where the client has none."""
    out: dict[str, asyncio.Future[Any] | None] = {}
    for name, path in WATCHED[role].items():
        obj: Any = client
        for attr in path:
            obj = getattr(obj, attr, None)
        out[name] = obj if isinstance(obj, asyncio.Future) else None
    return out


def _describe(name: str, task: asyncio.Future[Any]) -> str:
    if task.cancelled():
        return f"aiokafka's {name} task was cancelled"
    exc = task.exception()
    cause = exc.__cause__ if exc is not None and exc.__cause__ is not None else exc
    return f"aiokafka's {name} task ended" + (f": {cause!r}" if cause is not None else "")


def watch_clients(consumer: object, producer: object) -> Callable[[], str | None]:
    """A check of the started clients' background tasks (module docstring): None while
    every one runs, else what ended. The tasks are looked up once, here, so the check is
    a few ``done()`` calls."""
    tasks = [
        (name, task)
        for client, role in ((consumer, "consumer"), (producer, "producer"))
        for name, task in client_tasks(client, role).items()
        if task is not None
    ]

    def check() -> str | None:
        for name, task in tasks:
            if task.done():
                return _describe(name, task)
        return None

    return check
