"""POST /admin/model over real sockets: handed to the admin handler from loopback peers,
refused from others, off unless a handler is given; /status shows the model serving."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from engines.version import ModelVersion
from service.http import OpsServer
from service.metrics import Metrics
from service.models import ModelControl
from service.pipeline import Pipeline
from service.view import InMemoryView


class Admin:
    """An admin handler that records the bodies it gets and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, body: bytes) -> tuple[int, bytes]:
        self.bodies.append(body)
        return 200, b'{"version":"v2"}'


@pytest.fixture
async def make_server(
    make_served: Callable[..., tuple[Pipeline, Metrics, InMemoryView]],
) -> AsyncIterator[Callable[..., Any]]:
    servers: list[OpsServer] = []

    async def make(host: str = "127.0.0.1", *, admin: Any = None) -> tuple[OpsServer, Any]:
        _, metrics, view = make_served(model_version="v1")
        server = OpsServer(metrics, host, 0, sample_interval_s=5.0, admin=admin)
        await server.start()
        servers.append(server)
        return server, view

    yield make
    for server in servers:
        await server.close()


async def _post(host: str, port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    writer.write_eof()  # all of the request is sent: a short body ends here
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _request(body: bytes, path: str = "/admin/model", length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: weir\r\nContent-Type: application/json\r\n"
        f"Content-Length: {n}\r\n\r\n"
    ).encode() + body


async def test_a_loopback_post_reaches_the_admin_handler(make_server: Any) -> None:
    """The body is handed over whole and the handler's answer comes back as JSON."""
    admin = Admin()
    server, _ = await make_server(admin=admin)
    got = await _post("127.0.0.1", server.port, _request(b'{"path": "/m/v2"}'))
    assert got == (200, b'{"version":"v2"}')
    assert admin.bodies == [b'{"path": "/m/v2"}']


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        (_request(b"{}", path="/admin/other"), 404, "no such endpoint: POST /admin/other"),
        (
            b"POST /admin/model HTTP/1.1\r\nHost: weir\r\n\r\n",
            411,
            "POST needs a Content-Length header",
        ),
        (_request(b"", length=70_000), 413, "body of 70000 bytes exceeds 65536"),
        (
            b"POST /admin/model HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
            411,
            "POST needs a Content-Length header",
        ),
        (_request(b'{"pa', length=10), 400, "body shorter than its Content-Length 10"),
    ],
)
async def test_a_bad_post_is_refused_with_the_reason(
    make_server: Any, raw: bytes, status: int, error: str
) -> None:
    """Another path, no length, an oversized body: refused before the handler runs."""
    admin = Admin()
    server, _ = await make_server(admin=admin)
    got = await _post("127.0.0.1", server.port, raw)
    assert got == (status, msgspec.json.encode({"error": error}))
    assert admin.bodies == []


async def test_without_an_admin_handler_post_is_not_allowed(make_server: Any) -> None:
    """[model] admin off: POST /admin/model is 405 like any POST."""
    server, _ = await make_server()
    status, _ = await _post("127.0.0.1", server.port, _request(b'{"path": "/m"}'))
    assert status == 405


def _outbound_address() -> str | None:
    """This host's address on its default route (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: a route lookup only
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr  # noqa: S104


async def test_a_post_from_another_host_is_forbidden(make_server: Any) -> None:
    """A peer that is not loopback gets 403 naming its address, and the handler never runs."""
    addr = _outbound_address()
    if addr is None:
        pytest.skip("this host has no non-loopback address to connect from")
    admin = Admin()
    server, _ = await make_server(addr, admin=admin)
    got = await _post(addr, server.port, _request(b'{"path": "/m"}'))
    assert got == (
        403,
        msgspec.json.encode({"error": f"/admin/model answers loopback peers only, not {addr!r}"}),
    )
    assert admin.bodies == []


async def test_status_shows_the_model_serving(make_server: Any) -> None:
    """/status carries the model part of the ModelControl: version, path, load counts."""
    server, view = await make_server()
    pipe = view.pipeline
    current = ModelVersion(
        version="v1", engine=pipe.engine, head=pipe.head, features=pipe.spec, path="/m/v1"
    )
    view.models = ModelControl(view.settings, current, pipe)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /status HTTP/1.1\r\nHost: weir\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await view.models.aclose()
    doc = msgspec.json.decode(data.partition(b"\r\n\r\n")[2])
    assert doc["model"] == {
        "version": "v1",
        "path": "/m/v1",
        "loads": {"loaded": 0, "refused": 0},
        "loading": False,
        "last_refusal": None,
        "shadow": None,
    }
    assert doc["counters"]["model_loads"] == {"loaded": 0, "refused": 0}


async def test_weir_swap_posts_to_every_worker_and_reports_each(
    make_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`weir swap PATH` posts {"path": PATH} to each worker's port; one 200 and one refusal
    (nothing of ours listening on port + 1) print a line each and exit 1; all 200 exit 0."""
    from service.cli import main

    admin = Admin()
    server, _ = await make_server(admin=admin)
    env = {"WEIR_HTTP__PORT": str(server.port)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        capsys.readouterr()  # the server's own log lines
        code = await asyncio.to_thread(main, ["swap", "/m/v2", "--workers", "1"])
        assert code == 0
        assert admin.bodies == [b'{"path":"/m/v2"}']
        out = capsys.readouterr().out
        assert out == (
            f'worker 0 (http://127.0.0.1:{server.port}/admin/model): 200 {{"version":"v2"}}\n'
        )
        code = await asyncio.to_thread(main, ["swap", "/m/v2", "--workers", "2", "--timeout", "5"])
    assert code == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith(f"worker 1 (http://127.0.0.1:{server.port + 1}/admin/model): ")
