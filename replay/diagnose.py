"""``weir demo --diagnose``: where a latency tail comes from, per process and per window.

A tail has three usual owners on one host: a process that stops (a garbage collection, a
blocking call on the event loop, a CPU shared with the broker), the broker, or the work
itself. :class:`Diagnosis` collects, for one demo run:

- the harness's own GC pauses by generation and its event-loop lag
  (``service.pauses``, measured in this process while it replays);
- the service's, read from its ``/status`` (``gc`` and ``loop_lag``) just before it stops;
- the broker JVM's stop-the-world GC pauses during the run (its GC log), where the demo
  started the broker;
- the end-to-end latency and each stage's p99 per time window (:func:`windows`), so a tail
  that grows over the run shows as a rising column, and a stage that owns it stands out.

:func:`render` prints them as plain tables.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from replay.measure import Recorder
from service.pauses import GcPauses, LoopLag

DEFAULT_WINDOW_S: Final = 5.0
_STAGE_PAIRS: Final = (
    ("broker_in", "ingest", "actual"),
    ("queue_wait", "dispatch", "ingest"),
    ("inference", "infer_done", "dispatch"),
    ("publish", "publish", "infer_done"),
    ("broker_out", "received", "publish"),
)


class Window(msgspec.Struct, kw_only=True):
    """Latency figures of the events due in ``[start_s, start_s + width)`` (ms)."""

    start_s: float
    events: int
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    e2e_max_ms: float | None
    sender_lag_max_ms: float | None
    stage_p99_ms: dict[str, float | None]


def _pct(values: np.ndarray[Any, Any], q: float) -> float | None:
    return None if values.size == 0 else round(float(np.percentile(values, q)) / 1e6, 3)


def windows(rec: Recorder, width_s: float = DEFAULT_WINDOW_S) -> list[Window]:
    """Per window of ``width_s`` (by intended send time): e2e p50/p99/max, the largest
    sender lag and each stage's p99, over the events that got a decision."""
    n = rec.n_sent
    if n == 0:
        return []
    intended = rec.intended[:n]
    received = rec.received[:n]
    decided = (received > 0) & (intended > 0)
    t0 = int(intended[intended > 0].min())
    width_ns = int(width_s * 1e9)
    win = (intended - t0) // width_ns
    out: list[Window] = []
    for w in range(int(win.max()) + 1):
        m = (win == w) & decided
        sent = (win == w) & (rec.actual[:n] > 0)
        lag = (rec.actual[:n] - intended)[sent]
        stages: dict[str, float | None] = {}
        for name, late_name, early_name in _STAGE_PAIRS:
            late_t = getattr(rec, late_name)[:n]
            early_t = getattr(rec, early_name)[:n]
            ok = m & (late_t > 0) & (early_t > 0)
            stages[name] = _pct((late_t - early_t)[ok], 99)
        e2e = (received - intended)[m]
        out.append(
            Window(
                start_s=w * width_s,
                events=int(np.count_nonzero(m)),
                e2e_p50_ms=_pct(e2e, 50),
                e2e_p99_ms=_pct(e2e, 99),
                e2e_max_ms=None if e2e.size == 0 else round(float(e2e.max()) / 1e6, 3),
                sender_lag_max_ms=None if lag.size == 0 else round(float(lag.max()) / 1e6, 3),
                stage_p99_ms=stages,
            )
        )
    return out


Get = Callable[[str, float], bytes]
"""Reads a URL within a timeout (seconds)."""


def _get(url: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our own URL
        body: bytes = resp.read()
    return body


_JVM_PAUSE = re.compile(rb"^\[(\d+)ms\].* Pause .* ([0-9.]+)ms$")


def jvm_gc_option(path: Path) -> str:
    """The JVM option that logs each collection with its wall time (ms) to ``path``."""
    return f"-Xlog:gc:file={path}:timemillis"


def jvm_pauses(log: bytes, since_wall_ns: int = 0) -> dict[str, Any]:
    """Count, total, p50, p99 and max (ms) of the stop-the-world pauses in a JVM GC log
    written with :func:`jvm_gc_option`, from ``since_wall_ns`` on."""
    pauses = []
    for raw in log.splitlines():
        m = _JVM_PAUSE.match(raw.strip())
        if m and int(m.group(1)) * 1_000_000 >= since_wall_ns:
            pauses.append(float(m.group(2)))
    arr = np.asarray(pauses)
    return {
        "count": len(pauses),
        "total_ms": round(float(arr.sum()), 3),
        "p50_ms": None if not pauses else round(float(np.percentile(arr, 50)), 3),
        "p99_ms": None if not pauses else round(float(np.percentile(arr, 99)), 3),
        "max_ms": round(float(arr.max()), 3) if pauses else 0.0,
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for the service's ``/status``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Diagnosis:
    """What one diagnosed demo run collects (module docstring).

    ``harness_gc`` is installed while the measured replay runs, ``harness_lag`` runs on
    the replay's loop; ``fetch_service`` reads the service's ``/status`` at ``port``.
    """

    def __init__(self, *, port: int | None = None, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.port = free_port() if port is None else port
        self.window_s = window_s
        self.harness_gc = GcPauses()
        self.harness_lag = LoopLag()
        self.service: dict[str, Any] | None = None
        self.service_before: dict[str, Any] | None = None
        """The service's figures when the measured replay began (``fetch_service(before=
        True)``): the run's own collections are the difference."""
        self.service_error = ""
        self.windows: list[Window] = []
        self.broker_gc_log: Path | None = None
        """The broker JVM's GC log (``jvm_gc_option``), where the demo started one."""
        self.t0_wall_ns = 0
        """The first intended send of the measured replay: the windows' time 0."""

    def recorded(self, rec: Recorder) -> None:
        """The measured replay ended: keep its windows."""
        self.windows = windows(rec, self.window_s)
        sent = rec.intended[: rec.n_sent]
        self.t0_wall_ns = int(sent[sent > 0].min()) if (sent > 0).any() else 0

    def fetch_service(
        self, timeout_s: float = 5.0, get: Get | None = None, *, before: bool = False
    ) -> None:
        """Read the service's ``gc``, ``loop_lag`` and ``commit`` from its ``/status`` with
        ``get`` (``urllib``); an error is kept in ``service_error``, not raised: the run's
        figures stand without it."""
        url = f"http://127.0.0.1:{self.port}/status"
        try:
            doc = json.loads((get or _get)(url, timeout_s))
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
        except (OSError, ValueError) as exc:
            self.service_error = f"no /status from the service at {url}: {exc}"
            return
        figures = {k: doc.get(k) for k in ("gc", "loop_lag", "commit")}
        if before:
            self.service_before = figures
        else:
            self.service = figures

    def _service_run_gc(self) -> dict[str, Any] | None:
        """The service's collections during the measured replay, by generation: count and
        total (ms) as differences of the two reads, the largest pause of 1 ms or more."""
        after = ((self.service or {}).get("gc") or {}).get("generations")
        before = ((self.service_before or {}).get("gc") or {}).get("generations")
        if not after or not before:
            return None
        long = ((self.service or {}).get("gc") or {}).get("long") or []
        out: dict[str, Any] = {}
        for gen, a in after.items():
            b = before.get(gen) or {"count": 0, "total_ms": 0.0}
            in_run = [
                p["ms"]
                for p in long
                if str(p["generation"]) == gen and p["wall_ns"] >= self.t0_wall_ns
            ]
            out[gen] = {
                "count": a["count"] - b["count"],
                "total_ms": round(a["total_ms"] - b["total_ms"], 3),
                "max_ms_if_over_1": max(in_run, default=None),
            }
        return out

    def document(self) -> dict[str, Any]:
        """Everything as one JSON-able document."""
        broker = None
        if self.broker_gc_log is not None and self.broker_gc_log.exists():
            broker = jvm_pauses(self.broker_gc_log.read_bytes(), self.t0_wall_ns)
        return {
            "service_run_gc": self._service_run_gc(),
            "broker_gc": broker,
            "harness": {"gc": self.harness_gc.summary(), "loop_lag": self.harness_lag.summary()},
            "service": self.service,
            "service_error": self.service_error,
            "window_s": self.window_s,
            "t0_wall_ns": self.t0_wall_ns,
            "windows": [msgspec.to_builtins(w) for w in self.windows],
        }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(doc: dict[str, Any]) -> str:
    """The ``document`` as plain tables: pauses per process, then the windows."""
    lines = ["process  what        count    total ms   p50 ms   p99 ms   max ms"]
    for who in ("service", "harness"):
        part = doc.get(who) or {}
        gc_doc = part.get("gc") or {}
        for gen, g in sorted((gc_doc.get("generations") or {}).items()):
            lines.append(
                f"{who:8} gc gen{gen}    {g['count']:6d} {g['total_ms']:10.2f} "
                f"{_fmt(g['p50_ms']):>8} {_fmt(g['p99_ms']):>8} {_fmt(g['max_ms']):>8}"
            )
        lag = part.get("loop_lag")
        if lag:
            lines.append(
                f"{who:8} loop lag    {lag['count']:6d} {lag['total_ms']:10.2f} "
                f"{_fmt(lag['p50_ms']):>8} {_fmt(lag['p99_ms']):>8} {_fmt(lag['max_ms']):>8}"
            )
        if lag and "cpu_s" in lag:
            lines.append(
                f"{who:8} cpu {lag['cpu_s']:.2f} s, preempted {lag['involuntary_switches']} "
                "times (involuntary context switches)"
            )
        commit = part.get("commit")
        if commit:
            lines.append(
                f"{who:8} commits {commit['count']}, p50 {_fmt(commit['p50_ms'])} ms, "
                f"p99 {_fmt(commit['p99_ms'])} ms (the fetch loop waits for each)"
            )
        if gc_doc:
            lines.append(
                f"{who:8} gc threshold {gc_doc.get('threshold')} frozen {gc_doc.get('frozen')}"
            )
            t0 = doc.get("t0_wall_ns") or 0
            long = [p for p in gc_doc.get("long") or [] if p["wall_ns"] >= t0]
            if long:
                at = ", ".join(
                    f"gen{p['generation']} {p['ms']:.1f} ms at {(p['wall_ns'] - t0) / 1e9:.1f} s"
                    for p in long
                )
                lines.append(f"{who:8} gc pauses >= 1 ms during the run: {at}")
    run_gc = doc.get("service_run_gc")
    if run_gc:
        lines.append(
            "service  gc during the measured run: "
            + ", ".join(
                f"gen{g} {v['count']}x {v['total_ms']:.2f} ms"
                + (f" (max {v['max_ms_if_over_1']:.1f})" if v["max_ms_if_over_1"] else "")
                for g, v in sorted(run_gc.items())
            )
        )
    broker = doc.get("broker_gc")
    if broker:
        lines.append(
            f"broker   gc pauses   {broker['count']:6d} {broker['total_ms']:10.2f} "
            f"{_fmt(broker['p50_ms']):>8} {_fmt(broker['p99_ms']):>8} {_fmt(broker['max_ms']):>8}"
        )
    if doc.get("service_error"):
        lines.append(f"service: {doc['service_error']}")
    wins = doc.get("windows") or []
    if wins:
        stages = list(wins[0]["stage_p99_ms"])
        lines.append("")
        lines.append(
            "window s  events  e2e p50  e2e p99  e2e max  lag max  "
            + "  ".join(f"{s} p99" for s in stages)
        )
        for w in wins:
            cells = "  ".join(f"{_fmt(w['stage_p99_ms'][s]):>{len(s) + 4}}" for s in stages)
            lines.append(
                f"{w['start_s']:8.0f} {w['events']:7d} {_fmt(w['e2e_p50_ms']):>8} "
                f"{_fmt(w['e2e_p99_ms']):>8} {_fmt(w['e2e_max_ms']):>8} "
                f"{_fmt(w['sender_lag_max_ms']):>8}  {cells}"
            )
    return "\n".join(lines)
