"""The worker's HTTP endpoints: metrics, health, status and a live page.

A minimal HTTP/1.1 server on ``asyncio.start_server`` (no new dependency), bound to
``[http] host:port`` (loopback by default), on the worker's own event loop, so every
read of the pipeline's figures happens between two steps of the hot path, never during
one. One request per connection (``Connection: close``); GET and HEAD, and POST to
``/admin/model`` when an ``admin`` handler is given (``[model] admin``), from loopback
peers only (loading a package imports its feature code).

==============  ==============================================================
``/metrics``    Prometheus text format of the worker's own registry
``/healthz``    200 while the event loop answers
``/readyz``     200 when the engine is warmed up and partitions are assigned,
                else 503 with the reason in the body (a background task's
                death or a refused decision fails it at once)
``/status``     JSON: redacted settings, engine and its latency profile,
                assignment with lag, counters, the last seconds of ``/live``
``/live``       JSON: per-second series of the last five minutes
``/``           a self-contained live page (inline JS and canvas, no network
                other than ``/live`` and ``/status`` on the same origin)
``/admin/model``  POST ``{"path": "<package dir>"}``: load, verify, warm up and
                swap in that model version (``service.models``); JSON answer
==============  ==============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST

from service.logs import get_logger
from service.metrics import Metrics
from service.tasks import TaskSupervisor

log = get_logger("weir.http")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)
_READ_TIMEOUT_S = 5.0
_MAX_HEAD = 16_384
_MAX_BODY = 65_536
ADMIN_PATH = "/admin/model"

AdminHandler = Callable[[bytes], Awaitable[tuple[int, bytes]]]
"""``POST /admin/model``: the request body in, (status, JSON body) out."""


class OpsServer:
    """Serves the endpoints of one worker's :class:`Metrics` (see the module docstring).

    ``start`` binds (port 0 picks a free one: see ``port``) and starts the once-a-second
    sampler that refreshes lag and the live series (supervised by ``tasks``: the worker's,
    so its death stops the worker); ``close`` stops both.
    """

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        *,
        sample_interval_s: float = 1.0,
        tasks: TaskSupervisor | None = None,
        admin: AdminHandler | None = None,
    ) -> None:
        self.metrics = metrics
        self._admin = admin
        self._tasks = tasks or TaskSupervisor()
        self.host = host
        self._port = port
        self._interval = sample_interval_s
        self._server: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the asked one, or the one picked for port 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raises ``OSError`` when the address is taken."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self._port, limit=_MAX_HEAD, reuse_address=True
        )
        self._sampler = self._tasks.spawn(
            self.metrics.run_sampler(self._interval), "weir-metrics-sampler"
        )
        log.info("http_listening", url=self.url)

    async def close(self) -> None:
        """Stop the sampler and the listener; idempotent."""
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.wait([self._sampler])  # a death was reported by the supervisor
            self._sampler = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(_READ_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await self._send(writer, 400, _TEXT, b"bad request line\n", head=False)
                return
            method, target, _ = parts
            if method == "POST" and self._admin is not None:
                status, body = await self._post(reader, writer, head, target.split("?", 1)[0])
                await self._send(writer, status, _JSON, body, head=False)
                return
            if method not in ("GET", "HEAD"):
                await self._send(writer, 405, _TEXT, b"only GET and HEAD\n", head=False, allow=True)
                return
            status, ctype, body = await self._route(target.split("?", 1)[0])
            await self._send(writer, status, ctype, body, head=method == "HEAD")
        except ConnectionError:
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _post(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        path: str,
    ) -> tuple[int, bytes]:
        assert self._admin is not None
        if path != ADMIN_PATH:
            return 404, _json_error(f"no such endpoint: POST {path}")
        peer = writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else ""
        if not _is_loopback(host):
            return 403, _json_error(f"{ADMIN_PATH} answers loopback peers only, not {host!r}")
        length = _content_length(head)
        if length is None:
            return 411, _json_error("POST needs a Content-Length header")
        if length > _MAX_BODY:
            return 413, _json_error(f"body of {length} bytes exceeds {_MAX_BODY}")
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                body = await reader.readexactly(length)
        except (TimeoutError, asyncio.IncompleteReadError):
            return 400, _json_error(f"body shorter than its Content-Length {length}")
        return await self._admin(body)

    async def _route(self, path: str) -> tuple[int, str, bytes]:
        m = self.metrics
        match path:
            case "/metrics":
                return 200, CONTENT_TYPE_LATEST, await m.render_async()
            case "/healthz":
                return 200, _TEXT, b"ok\n"
            case "/readyz":
                ok, reason = m.readiness()
                return (200 if ok else 503), _TEXT, reason.encode() + b"\n"
            case "/status":
                return 200, _JSON, msgspec.json.encode(m.status())
            case "/live":
                return 200, _JSON, msgspec.json.encode(m.live())
            case "/" | "/index.html":
                return 200, _HTML, LIVE_PAGE.encode()
            case _:
                return 404, _TEXT, f"no such endpoint: {path}\n".encode()

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        status: int,
        ctype: str,
        body: bytes,
        *,
        head: bool,
        allow: bool = False,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Connection: close",
        ]
        if ctype == _HTML:
            lines.append(f"Content-Security-Policy: {_CSP}")
        if allow:
            lines.append("Allow: GET, HEAD")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head:
            writer.write(body)
        await writer.drain()


def _json_error(message: str) -> bytes:
    return msgspec.json.encode({"error": message})


def _is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool((mapped or addr).is_loopback)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                n = int(value.strip())
            except ValueError:
                return None
            return n if n >= 0 else None
    return None


async def http_get(port: int, path: str, *, timeout_s: float = 1.0) -> tuple[int, bytes]:
    """A client for these endpoints: ``GET http://127.0.0.1:port/path``, its status and
    body; ``(0, b"")`` when unreachable or past ``timeout_s`` (the chaos suite and the peer
    benchmark read running workers with it)."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                data = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, body


LIVE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>weir live</title>
<style>
 body{font:13px/1.4 system-ui,sans-serif;margin:12px;background:#fafafa;color:#222}
 h1{font-size:16px;margin:0 0 4px} #hdr{margin-bottom:8px;color:#555}
 #ready.ok{color:#1a7f37} #ready.bad{color:#cf222e}
 .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:10px}
 .card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
 .card h2{font-size:13px;margin:0 0 4px;font-weight:600}
 canvas{width:100%;height:220px;display:block}
</style></head><body>
<h1>weir &mdash; live</h1>
<div id="hdr"><span id="ready">&hellip;</span> &middot; <span id="model"></span>
 &middot; <span id="now"></span></div>
<div class="grid">
 <div class="card"><h2>Throughput (events/s)</h2><canvas id="c-throughput"></canvas></div>
 <div class="card"><h2>Latency (ms, log scale)</h2><canvas id="c-latency"></canvas></div>
 <div class="card"><h2>Consumer lag (records)</h2><canvas id="c-lag"></canvas></div>
 <div class="card"><h2>Consumer lag (seconds, worst partition)</h2><canvas id="c-lagsec"></canvas></div>
 <div class="card"><h2>Batch size (rows)</h2><canvas id="c-batch"></canvas></div>
 <div class="card"><h2>Deadline misses and dead letters (per s)</h2><canvas id="c-misses"></canvas></div>
</div>
<script>
"use strict";
const COLORS = ["#0969da", "#cf222e", "#8250df", "#1a7f37", "#bf8700", "#57606a"];
const CHARTS = {
  "c-throughput": {series: [["events in", "events_per_s"], ["decisions out", "decisions_per_s"]]},
  "c-latency": {log: true, series: [["e2e p50", "e2e_p50_ms"], ["e2e p99", "e2e_p99_ms"],
    ["e2e p99.9", "e2e_p999_ms"], ["e2e (source) p99", "e2e_source_p99_ms"],
    ["queue wait p99", "queue_wait_p99_ms"], ["inference p99", "inference_p99_ms"]]},
  "c-lag": {series: [["lag records", "lag_records"], ["queued", "queued"]]},
  "c-lagsec": {series: [["lag seconds", "lag_seconds"]]},
  "c-batch": {series: [["mean", "batch_mean"], ["p99", "batch_p99"]]},
  "c-misses": {series: [["misses", "misses_per_s"], ["dead letters", "dead_per_s"]]},
};

function fmt(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a >= 10 || v === 0) return v.toFixed(0);
  if (a >= 0.01) return v.toFixed(2);
  return v.toExponential(0);
}

function draw(canvas, t, series, log) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 560, h = canvas.clientHeight || 220;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const L = 52, R = 8, T = 18, B = 20, pw = w - L - R, ph = h - T - B;
  let lo = Infinity, hi = -Infinity, points = 0;
  for (const s of series) for (const v of s.values) {
    if (v === null || v === undefined || (log && v <= 0)) continue;
    lo = Math.min(lo, v); hi = Math.max(hi, v); points++;
  }
  if (!points) { lo = log ? 0.01 : 0; hi = 1; }
  if (!log) { lo = Math.min(0, lo); if (hi <= lo) hi = lo + 1; hi *= 1.1; }
  else { lo = Math.pow(10, Math.floor(Math.log10(lo))); hi = Math.pow(10, Math.ceil(Math.log10(hi * 1.0001))); if (hi <= lo) hi = lo * 10; }
  const y = v => log ? T + ph * (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)))
                     : T + ph * (1 - (v - lo) / (hi - lo));
  const t0 = t.length ? t[0] : 0, t1 = t.length > 1 ? t[t.length - 1] : t0 + 1;
  const x = ts => L + pw * (ts - t0) / Math.max(t1 - t0, 1e-9);
  g.strokeStyle = "#e5e5e5"; g.fillStyle = "#666"; g.font = "11px system-ui,sans-serif";
  g.lineWidth = 1; g.textAlign = "right"; g.textBaseline = "middle";
  const ticks = [];
  if (log) for (let v = lo; v <= hi * 1.0001; v *= 10) ticks.push(v);
  else for (let i = 0; i <= 4; i++) ticks.push(lo + (hi - lo) * i / 4);
  for (const v of ticks) {
    const yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(L, yy); g.lineTo(L + pw, yy); g.stroke();
    g.fillText(fmt(v), L - 4, yy);
  }
  g.textAlign = "left"; g.textBaseline = "alphabetic";
  if (t.length > 1) g.fillText("-" + Math.round(t1 - t0) + " s", L, h - 4);
  g.textAlign = "right"; g.fillText("now", L + pw, h - 4);
  let lx = L + 4;
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const ok = v => v !== null && v !== undefined && !(log && v <= 0);
    g.strokeStyle = c; g.fillStyle = c; g.lineWidth = 1.5; g.beginPath();
    let pen = false;
    s.values.forEach((v, k) => {
      if (!ok(v)) { pen = false; return; }
      const px = x(t[k]), py = y(v);
      if (pen) g.lineTo(px, py); else g.moveTo(px, py);
      pen = true;
    });
    g.stroke();
    s.values.forEach((v, k) => {  // a point with no neighbour to join gets a dot
      if (ok(v) && !ok(s.values[k - 1]) && !ok(s.values[k + 1])) {
        g.beginPath(); g.arc(x(t[k]), y(v), 2.5, 0, 2 * Math.PI); g.fill();
      }
    });
    const last = s.values.length ? s.values[s.values.length - 1] : null;
    const label = s.name + (last === null || last === undefined ? "" : " " + fmt(last));
    g.fillStyle = c; g.textAlign = "left"; g.fillText(label, lx, 12);
    lx += g.measureText(label).width + 14;
  });
  canvas.dataset.points = String(points);
  canvas.dataset.series = String(series.length);
  canvas.dataset.drawn = String((Number(canvas.dataset.drawn) || 0) + 1);
}

async function refresh() {
  try {
    const r = await fetch("live", {cache: "no-store"});
    const live = await r.json();
    const s = live.series, t = s.t || [];
    for (const [id, spec] of Object.entries(CHARTS)) {
      draw(document.getElementById(id), t,
           spec.series.map(([name, key]) => ({name, values: s[key] || []})), !!spec.log);
    }
    document.getElementById("now").textContent = new Date().toLocaleTimeString();
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    document.getElementById("now").textContent = "no data: " + e;
  }
}

async function header() {
  try {
    const st = await (await fetch("status", {cache: "no-store"})).json();
    const el = document.getElementById("ready");
    el.textContent = st.ready.ok ? "ready" : "not ready: " + st.ready.reason;
    el.className = st.ready.ok ? "ok" : "bad";
    document.getElementById("model").textContent =
      "model " + st.model_version + " on " + st.engine.kind + "/" + st.engine.device +
      " · worker " + st.worker;
  } catch (e) { /* next round */ }
}

refresh(); header();
setInterval(refresh, 1000); setInterval(header, 5000);
</script></body></html>
"""
