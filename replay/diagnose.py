"""``weir demo --diagnose``: where a latency tail comes from, per process and per window.

A tail has three usual owners on one host: a process that stops (a garbage collection, a
blocking call on the event loop, a CPU shared with the broker), the broker, or the work
itself. :class:`Diagnosis` collects, for one demo run:

- the harness's own GC pauses by generation and its event-loop lag
  (``service.pauses``, measured in this process while it replays);
- the service's, read from its ``/status`` (``gc`` and ``loop_lag``) just before it stops;
- the end-to-end latency and each stage's p99 per time window (:func:`windows`), so a tail
  that grows over the run shows as a rising column, and a stage that owns it stands out.

:func:`render` prints them as plain tables.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable
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
        self.service_error = ""
        self.windows: list[Window] = []
        self.t0_wall_ns = 0
        """The first intended send of the measured replay: the windows' time 0."""

    def recorded(self, rec: Recorder) -> None:
        """The measured replay ended: keep its windows."""
        self.windows = windows(rec, self.window_s)
        sent = rec.intended[: rec.n_sent]
        self.t0_wall_ns = int(sent[sent > 0].min()) if (sent > 0).any() else 0

    def fetch_service(self, timeout_s: float = 5.0, get: Get | None = None) -> None:
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
        self.service = {k: doc.get(k) for k in ("gc", "loop_lag", "commit")}

    def document(self) -> dict[str, Any]:
        """Everything as one JSON-able document."""
        return {
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
