"""A TCP proxy the test controls: added latency, stalls, dropped and refused connections.

``ChaosProxy(listen_port, (host, port))`` forwards every connection to the target, in both
directions, on the running event loop. While it runs, the test turns faults on and off:

- ``latency_s``: every chunk is held this long before it is forwarded (order kept);
- ``stall()`` / ``unstall()``: nothing is forwarded (connections stay open, silent);
- ``drop()``: every open connection is reset (RST) on both sides;
- ``refuse``: new connections are accepted and reset at once.

Call contract: ``start``/``close`` and ``drop`` are coroutines of the loop the proxy runs on;
the attributes and ``stall``/``unstall`` are plain and may be set between awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass

__all__ = ["ChaosProxy", "ProxyStats"]

_CHUNK = 65_536


@dataclass
class ProxyStats:
    """Counters of one proxy."""

    connections: int = 0
    dropped: int = 0
    refused: int = 0
    bytes_up: int = 0
    """Client to target."""
    bytes_down: int = 0


class _Link:
    """One client connection and its connection to the target."""

    def __init__(
        self, client: asyncio.StreamWriter, target: asyncio.StreamWriter | None = None
    ) -> None:
        self.client = client
        self.target = target
        self.tasks: list[asyncio.Task[None]] = []
        self.ended = 0

    def close(self) -> None:
        for w in (self.client, self.target):
            if w is not None:
                w.close()

    def abort(self) -> None:
        for w in (self.client, self.target):
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # SO_LINGER 0: close sends RST, as a crashed peer or a middlebox would.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            w.transport.abort()
        for t in self.tasks:
            t.cancel()


class ChaosProxy:
    """Forwards ``127.0.0.1:listen_port`` to ``target`` with injectable faults."""

    def __init__(self, listen_port: int, target: tuple[str, int], *, host: str = "127.0.0.1"):
        self.host = host
        self.listen_port = listen_port
        self.target = target
        self.latency_s = 0.0
        self.refuse = False
        self.stats = ProxyStats()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def stalled(self) -> bool:
        """Whether forwarding is stopped."""
        return not self._flowing.is_set()

    async def start(self) -> None:
        """Listen (the port must be free)."""
        self._server = await asyncio.start_server(
            self._accept, self.host, self.listen_port, reuse_address=True
        )

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
            await self.drop()
            await self._server.wait_closed()
            self._server = None
        else:
            await self.drop()

    def stall(self) -> None:
        """Stop forwarding; bytes wait in buffers until ``unstall``."""
        self._flowing.clear()

    def unstall(self) -> None:
        """Forward again."""
        self._flowing.set()

    async def drop(self) -> int:
        """Reset every open connection; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        self.stats.dropped += len(links)
        await asyncio.sleep(0)
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        if self.refuse:
            self.stats.refused += 1
            link.abort()
            return
        try:
            t_reader, t_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            link.abort()
            return
        link.target = t_writer
        self.stats.connections += 1
        self._links.add(link)
        loop = asyncio.get_running_loop()
        link.tasks = [
            loop.create_task(self._pipe(reader, t_writer, link, up=True)),
            loop.create_task(self._pipe(t_reader, writer, link, up=False)),
        ]

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link, *, up: bool
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        writer = asyncio.get_running_loop().create_task(self._deliver(queue, dst, link))
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(_CHUNK)
                if not data:
                    break
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                queue.put_nowait((time.monotonic() + self.latency_s, data))
            queue.put_nowait((0.0, b""))
            await writer
            link.ended += 1
            if link.ended == 2:
                link.close()
                self._links.discard(link)
        except (OSError, asyncio.IncompleteReadError):
            link.abort()
            self._links.discard(link)
        finally:
            writer.cancel()

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except OSError:
            link.abort()
