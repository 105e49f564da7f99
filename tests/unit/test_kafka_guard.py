"""The guards around aiokafka's background work (``service.kafka_guard``): a write on a
transport uvloop has closed fails as a reset connection does, and the client watch names a
background task that ended."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest
import uvloop
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.admin import ApiVersionRequest

from service.kafka_guard import WATCHED, guard_closed_writes, watch_clients


async def _reset_connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A client connection the server reset (RST, as ``chaos.proxy`` does), written to
    until the client's transport has seen the reset and closed."""

    def reset(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        w.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(10):
        assert await reader.read() == b""
        while not writer.transport.is_closing():
            writer.write(b"\0")  # the reset is seen on a write, then the transport closes
            await asyncio.sleep(0.001)
    server.close()
    return reader, writer, port


def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> Any:
    """An ``AIOKafkaConnection`` holding these streams, as one whose peer reset it before
    its read task noticed."""
    conn: Any = AIOKafkaConnection("127.0.0.1", port)
    conn._reader, conn._writer = reader, writer
    conn._read_task = asyncio.get_running_loop().create_future()
    conn._read_task.set_result(None)
    return conn


def test_a_request_on_a_connection_uvloop_closed_is_a_connection_error() -> None:
    """uvloop raises RuntimeError on a write to a closed transport (which would end
    aiokafka's fetch task); guarded, the request fails as an OSError would: the connection
    closed and ``KafkaConnectionError`` raised, which every aiokafka caller retries."""

    async def main() -> None:
        reader, writer, port = await _reset_connection()
        with pytest.raises(RuntimeError, match="handler is closed"):
            writer.write(b"x")  # what the guard is for (aiokafka issue #1038)
        conn = _connection(reader, writer, port)
        guard_closed_writes()
        guard_closed_writes()  # idempotent: one wrapper, not two
        with pytest.raises(KafkaConnectionError) as info:
            conn.send(ApiVersionRequest())
        assert str(info.value).startswith(
            f"KafkaConnectionError: Connection at 127.0.0.1:{port} broken: "
        )
        assert isinstance(info.value.__cause__, RuntimeError)
        assert conn._writer is None  # closed, so the client reconnects
        assert not hasattr(AIOKafkaConnection.send.__wrapped__, "__wrapped__")

    uvloop.run(main())


def test_a_runtime_error_on_an_open_connection_is_not_swallowed() -> None:
    """The guard converts only writes on a closing transport; any other RuntimeError from
    a request goes through unchanged."""

    async def main() -> None:
        guard_closed_writes()
        accepted: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = _connection(reader, writer, port)

        class Broken:
            def prepare(self, versions: Any) -> Any:
                raise RuntimeError("not a transport error")

        with pytest.raises(RuntimeError, match=r"^not a transport error$"):
            conn.send(Broken())
        assert conn._writer is writer
        conn.close()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()

    uvloop.run(main())


async def test_the_watch_names_the_first_task_that_ended() -> None:
    """None while every watched task runs; then the ended task and its error's cause."""

    class Part:
        pass

    loop = asyncio.get_running_loop()
    consumer, producer = Part(), Part()
    tasks = {}
    for role, client in (("consumer", consumer), ("producer", producer)):
        for path in WATCHED[role].values():
            holder = getattr(client, path[0], None) or Part()
            setattr(client, path[0], holder)
            fut = loop.create_future()
            setattr(holder, path[1], fut)
            tasks[(id(client), path[0])] = fut
    check = watch_clients(consumer, producer)
    assert check() is None
    sender = tasks[(id(producer), "_sender")]
    try:
        raise KafkaConnectionError("Unexpected error") from RuntimeError("handler is closed")
    except KafkaConnectionError as exc:
        sender.set_exception(exc)
    assert check() == "aiokafka's sender task ended: RuntimeError('handler is closed')"
    tasks[(id(consumer), "_fetcher")].cancel()
    assert check() == "aiokafka's fetcher task was cancelled"
    for fut in tasks.values():
        if not fut.done():
            fut.set_result(None)
    with contextlib.suppress(BaseException):
        sender.result()


async def test_the_watch_of_clients_without_those_tasks_never_answers() -> None:
    """A client that has none of the watched tasks (a fake) is not watched."""
    assert watch_clients(object(), object())() is None
