"""The HTTP endpoints over real loopback sockets: metrics, health, readiness, status, live page."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import event_codec
from schemas.events import Quote
from service.collector import METRIC_NAMES
from service.http import OpsServer
from service.live import LIVE_SERIES
from service.memory import MemoryRecord
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import load_settings
from service.view import InMemoryView

SECRET = "hunter2-sasl-Secret-9f3a"
TOPIC = "weir.events"
REPO = Path(__file__).resolve().parents[2]


class Served:
    """A pipeline, its metrics and the server in front of them."""

    def __init__(self, pipe: Pipeline, metrics: Metrics, view: InMemoryView, server: OpsServer):
        self.pipe = pipe
        self.metrics = metrics
        self.view = view
        self.server = server

    async def feed(self, n: int, start: int = 0) -> None:
        """Ingest ``n`` quotes over three keys and wait until all are decided."""
        codec = event_codec()
        now_ms = time.time_ns() // 1_000_000
        records = [
            MemoryRecord(
                TOPIC,
                i % 2,
                i,
                codec.encode(
                    Quote(symbol=f"K{i % 3}", bid_px=100.0, bid_qty=1.0, ask_px=100.5, ask_qty=2.0)
                ),
                timestamp=now_ms,
            )
            for i in range(start, start + n)
        ]
        for i in range(0, n, 4):
            await self.pipe.ingest(records[i : i + 4])
            await asyncio.sleep(0)
        assert await self.pipe.drain(5.0)

    async def samples(self, n: int) -> None:
        """Wait until the server's sampler has sampled the live series ``n`` more times."""
        for _ in range(n):
            await asyncio.wait_for(self.metrics.next_sample(), 5)


@pytest.fixture
async def served(
    make_served: Callable[..., tuple[Pipeline, Metrics, InMemoryView]],
) -> AsyncIterator[Served]:
    """An in-memory pipeline served on 127.0.0.1, an ephemeral port, with a SASL password set."""
    settings = load_settings(
        env={
            "WEIR_SCHEDULER__BUDGET_MS": "50",
            "WEIR_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "WEIR_KAFKA__SASL_USERNAME": "weir",
            "WEIR_KAFKA__SASL_PASSWORD": SECRET,
            "WEIR_KAFKA__SSL_PASSWORD": SECRET + "-tls",
        }
    )
    pipe, metrics, view = make_served(settings=settings, model_version="http-1", latency_ns=30_000)
    pipe.start()
    server = OpsServer(metrics, "127.0.0.1", 0, sample_interval_s=0.2)
    await server.start()
    try:
        yield Served(pipe, metrics, view, server)
    finally:
        await server.close()
        await pipe.close()


async def _request(
    served: Served, path: str, method: str = "GET", raw: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    writer.write(raw or f"{method} {path} HTTP/1.1\r\nHost: weir\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    assert int(headers["content-length"]) == len(body) or method == "HEAD"
    return status, headers, body


async def test_healthz_answers_while_the_loop_runs(served: Served) -> None:
    """/healthz is 200 "ok"."""
    status, headers, body = await _request(served, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["connection"] == "close"


async def test_readyz_is_503_with_the_reason_until_ready(served: Served) -> None:
    """/readyz is 200 when ready and 503 naming the reason otherwise."""
    status, _, body = await _request(served, "/readyz")
    assert (status, body) == (200, b"ready\n")
    served.view.ready = False
    status, _, body = await _request(served, "/readyz")
    assert status == 503 and body == b"rebalancing: no partitions assigned yet\n"


async def test_metrics_endpoint_serves_the_registry(served: Served) -> None:
    """/metrics is the Prometheus text format with every weir family and live counts."""
    await served.feed(40)
    status, headers, body = await _request(served, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert set(METRIC_NAMES) <= set(fams)
    events = sum(s.value for s in fams["weir_events"].samples)
    assert events == 40


async def test_status_is_json_without_secrets(served: Served) -> None:
    """/status holds settings (redacted), engine, profile, counters, readiness; the SASL and
    TLS passwords appear in no endpoint's answer."""
    await served.feed(20)
    await served.samples(2)  # the baseline and one live point
    status, headers, body = await _request(served, "/status")
    assert status == 200 and headers["content-type"] == "application/json"
    doc = msgspec.json.decode(body)
    kafka = doc["settings"]["kafka"]
    assert (kafka["sasl_password"], kafka["ssl_password"]) == ("***", "***")
    assert kafka["sasl_username"] == "weir"
    assert doc["engine"]["kind"] == "fake" and doc["model_version"] == "http-1"
    assert [p["bucket"] for p in doc["profile"]] == [1, 2, 4, 8]
    assert doc["counters"]["events_in"] == 20
    assert doc["ready"] == {"ok": True, "reason": "ready"}
    assert set(doc["recent"]) == set(LIVE_SERIES)
    assert len(doc["recent"]["t"]) >= 1
    for path in ("/status", "/metrics", "/live", "/", "/readyz"):
        _, _, page = await _request(served, path)
        assert SECRET.encode() not in page, path
        assert b"hunter2" not in page, path


async def test_live_serves_aligned_per_second_series(served: Served) -> None:
    """/live has every series, all the same length, growing with each sampler tick."""
    await served.samples(1)  # the sampler's first tick is the baseline
    await served.feed(30)
    await served.samples(2)
    status, _, body = await _request(served, "/live")
    assert status == 200
    series = msgspec.json.decode(body)["series"]
    assert list(series) == list(LIVE_SERIES)
    lengths = {len(v) for v in series.values()}
    assert len(lengths) == 1 and lengths.pop() >= 2
    assert max(series["events_per_s"]) > 0


async def test_live_page_is_self_contained(served: Served) -> None:
    """/ is HTML with six canvases, inline script only, nothing fetched from elsewhere, and a
    CSP that forbids other origins."""
    status, headers, body = await _request(served, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert page.count("<canvas") == 6
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]


async def test_unknown_paths_methods_and_garbage_are_refused(served: Served) -> None:
    """404 for an unknown path, 405 for POST, 400 for a bad request line, HEAD without body;
    query strings are ignored."""
    assert (await _request(served, "/nope"))[0] == 404
    status, headers, _ = await _request(served, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert (await _request(served, "/", raw=b"NONSENSE\r\n\r\n"))[0] == 400
    status, headers, body = await _request(served, "/healthz", method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == "3"
    assert (await _request(served, "/healthz?x=1"))[0] == 200


async def test_a_silent_client_does_not_block_others(served: Served) -> None:
    """A connection that sends nothing does not stop other requests from being answered."""
    _, idle = await asyncio.open_connection("127.0.0.1", served.server.port)
    try:
        assert (await _request(served, "/healthz"))[0] == 200
    finally:
        idle.close()
        with contextlib.suppress(ConnectionError):
            await idle.wait_closed()


# -- a real Prometheus scraping the endpoint ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get_json(url: str) -> Any:
    u = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    target = u.path + ("?" + u.query if u.query else "")
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return msgspec.json.decode(body)


@pytest.mark.slow
async def test_prometheus_scrapes_the_endpoint_and_answers_queries(
    served: Served, tmp_path: Path
) -> None:
    """A real Prometheus (Debian package) scrapes /metrics on loopback, loads weir's rules,
    and returns weir_events_total and a recording rule through its HTTP API."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus)")
    await served.feed(25)
    rules = tmp_path / "rules.yml"
    rules.write_text((REPO / "deploy/prometheus/rules.yml").read_text())
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        # Scrapes and rule evaluations every 250 ms: the recording rule's rate() has its
        # two samples within half a second of the first scrape.
        "global:\n  scrape_interval: 250ms\n  scrape_timeout: 250ms\n"
        "  evaluation_interval: 250ms\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n  - job_name: weir\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{served.server.port}']\n"
    )
    port = _free_port()
    with (tmp_path / "prometheus.log").open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
            env={"PATH": os.environ.get("PATH", "")},
        )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        value = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            try:
                got = await _get_json(api + "/query?query=sum(weir_events_total)")
            except (OSError, msgspec.DecodeError, TimeoutError):
                continue
            if got.get("status") == "success" and got["data"]["result"]:
                value = float(got["data"]["result"][0]["value"][1])
                break
        log = (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
        assert value == 25.0, log
        targets = await _get_json(api + "/targets")
        (target,) = targets["data"]["activeTargets"]
        assert target["health"] == "up" and target["labels"]["job"] == "weir"
        rules_doc = await _get_json(api + "/rules")
        groups = {g["name"]: g for g in rules_doc["data"]["groups"]}
        assert set(groups) == {"weir.recording", "weir.alerts"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = await _get_json(api + "/query?query=job:weir_events:rate1m")
            if got["data"]["result"]:
                break
            await asyncio.sleep(0.1)
        assert got["data"]["result"][0]["metric"] == {
            "__name__": "job:weir_events:rate1m",
            "job": "weir",
        }
        rules_doc = await _get_json(api + "/rules")
        for group in rules_doc["data"]["groups"]:
            for rule in group["rules"]:
                assert rule["health"] in ("ok", "unknown"), rule
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the live page in headless Chromium -----------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
async def test_live_page_draws_its_charts_in_headless_chromium(
    served: Served, tmp_path: Path
) -> None:
    """Headless Chromium loads /, polls /live, and every canvas is drawn (data attributes set
    by the page's JS after drawing), the throughput chart with data points; a screenshot is
    written."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    await served.feed(60)
    await served.samples(2)
    await served.feed(60, start=60)
    await served.samples(2)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
        "--virtual-time-budget=3000",
    ]
    url = served.server.url + "/"

    async def run(*extra: str) -> bytes:
        profile = tmp_path / f"profile-{len(extra)}-{time.monotonic_ns()}"
        proc = await asyncio.create_subprocess_exec(
            browser,
            *flags,
            f"--user-data-dir={profile}",
            *extra,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return out

    dom = (await run("--dump-dom")).decode()
    canvases = re.findall(r"<canvas[^>]*>", dom)
    assert len(canvases) == 6, dom[:2000]
    for tag in canvases:
        assert re.search(r'data-drawn="[1-9]\d*"', tag), tag
        assert 'data-series="' in tag, tag
    throughput = next(t for t in canvases if 'id="c-throughput"' in t)
    points = int(re.search(r'data-points="(\d+)"', throughput).group(1))  # type: ignore[union-attr]
    assert points > 0, throughput
    assert 'id="ready" class="ok"' in dom
    shot = tmp_path / "live.png"
    await run(f"--screenshot={shot}")
    assert _is_png(shot, min_bytes=10_000)


def _is_png(path: Path, *, min_bytes: int) -> bool:
    return path.exists() and path.stat().st_size > min_bytes and path.read_bytes()[:4] == b"\x89PNG"
