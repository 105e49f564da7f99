"""Reports of a replay run: the text summary and verdict table, a self-contained HTML page
with inline SVG plots, and the side-by-side comparison of two runs.

The HTML needs nothing from the network (no scripts, no fonts, no CDN): every plot is an
``<svg class="chart" data-chart=NAME>`` drawn here, each series a ``<path class="series"
data-name=...>`` or a group of ``<rect class="bar">``; hovering a point shows its value
(SVG ``<title>``). Plots: latency over time, the percentile spectrum (log scale, CO
corrected beside raw and from-source), throughput, batch sizes, the stage breakdown and
misses over time.

    weir replay report RESULT.json [--out REPORT.html]
    weir replay compare A.json B.json
"""

from __future__ import annotations

import argparse
import html
import math
from collections.abc import Sequence
from pathlib import Path

from replay.errors import ReplayError
from replay.results import (
    LATENCIES,
    STAGES,
    LatencySummary,
    RunResult,
    Verdict,
    decode_histogram,
    read_result,
)

Num = float | int | None

_COLORS = {
    "e2e": "#d62728",
    "raw": "#1f77b4",
    "source": "#9467bd",
    "p50": "#2ca02c",
    "p99": "#d62728",
    "max": "#7f7f7f",
    "raw p99": "#1f77b4",
    "sent": "#1f77b4",
    "decided": "#ff7f0e",
    "mean": "#2ca02c",
    "lost": "#000000",
    "expired": "#d62728",
    "shed": "#ff7f0e",
    "error": "#8c564b",
    "late": "#9467bd",
    "over_budget": "#e377c2",
    "p99.9": "#9467bd",
    "lag": "#bcbd22",
}
_SPECTRUM = (0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999)
_STAGE_LABELS = {
    "broker_in": "broker in",
    "queue_wait": "queue wait",
    "inference": "inference",
    "publish": "publish",
    "broker_out": "broker out",
}


# -- text -----------------------------------------------------------------------------------


def fmt_ms(v: Num) -> str:
    """A latency in ms with 3 significant digits (``-`` for none)."""
    if v is None:
        return "-"
    x = float(v)
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _pcts(s: LatencySummary) -> str:
    if s.count == 0:
        return "no data"
    return (
        f"p50 {fmt_ms(s.pct(50))}  p99 {fmt_ms(s.pct(99))}  p99.9 {fmt_ms(s.pct(99.9))}  "
        f"max {fmt_ms(s.max_ms)} ms"
    )


def _table(rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = right or [False] * len(widths)
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(r, widths, right, strict=True)
        ]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def format_verdict(verdict: Verdict) -> str:
    """The verdict as a table: check, limit, measured, pass/FAIL."""
    head = "PASS" if verdict.passed else "FAIL"
    src = f" (SLO: {verdict.slo_file})" if verdict.slo_file else ""
    rows: list[list[str]] = [["check", "limit", "measured", "result"]]
    for c in verdict.checks:
        unit = f" {c.unit}" if c.unit else ""
        if c.name == "attainment":
            limit = f"{c.op} {c.limit:.2%}"
            actual = "-" if c.actual is None else f"{c.actual:.3%}"
        elif c.unit == "ms":
            limit = f"{c.op} {fmt_ms(c.limit)}{unit}"
            actual = f"{fmt_ms(c.actual)}{unit}"
        else:
            limit = f"{c.op} {c.limit:,.0f}"
            actual = "-" if c.actual is None else f"{c.actual:,.0f}"
        rows.append([c.name, limit, actual, "pass" if c.passed else "FAIL"])
    return "\n".join([f"verdict: {head}{src}", *_table(rows, [False, True, True, False])])


def format_summary(r: RunResult) -> str:
    """The key figures of a run, one line each."""
    c, cfg, s = r.completeness, r.config, r.sender
    speed = f"{cfg.rate:g}/s" if cfg.rate is not None else f"{cfg.speed}x"
    st = c.by_status
    att = "-" if c.attainment is None else f"{c.attainment:.3%}"
    stage_p99 = "  ".join(
        f"{_STAGE_LABELS[k]} {fmt_ms(r.stages[k].pct(99))}" for k in STAGES if r.stages[k].count
    )
    lines = [
        f"replayed {cfg.rows_replayed:,} events of {cfg.feed} at {speed} into {cfg.mode}"
        + (f" {cfg.bootstrap}" if cfg.bootstrap else "")
        + (f" ({cfg.service})" if cfg.service else ""),
        f"  throughput     {r.throughput:,.0f} decisions/s (sent {s.achieved_rate:,.0f}/s "
        f"over {r.send_span_s:,.1f} s)",
        f"  e2e latency    {_pcts(r.latency['e2e'])}  (from the intended send: CO corrected)",
        f"  raw latency    {_pcts(r.latency['raw'])}  (from the actual send)",
        f"  source latency {_pcts(r.latency['source'])}",
        f"  stages p99     {stage_p99 or 'no stamps'}" + (" ms" if stage_p99 else ""),
        f"  outcomes       inputs {c.inputs:,}  decided {c.decided:,}  lost {c.lost:,}  "
        f"duplicated {c.duplicated:,}  dead-lettered {c.dead_lettered:,}",
        f"  statuses       ok {st.get('ok', 0):,}  expired {st.get('expired', 0):,}  "
        f"shed {st.get('shed', 0):,}  error {st.get('error', 0):,}  "
        f"warming {st.get('warming', 0):,}  late {c.late:,}  over budget {c.over_budget:,}",
        f"  attainment     {att} ok within {c.budget_ms:g} ms (warming excluded)",
        f"  sender lag     p99 {fmt_ms(s.lag.pct(99))} ms  max {fmt_ms(s.lag.max_ms)} ms"
        + (f"  BEHIND (> {s.threshold_ms:g} ms)" if s.behind else "  on schedule"),
    ]
    lines += [f"  note: {n}" for n in cfg.notes]
    return "\n".join(lines)


_COMPARE_ROWS: tuple[tuple[str, str], ...] = (
    ("throughput", "/s"),
    ("e2e p50", "ms"),
    ("e2e p90", "ms"),
    ("e2e p99", "ms"),
    ("e2e p99.9", "ms"),
    ("e2e max", "ms"),
    ("raw p99", "ms"),
    ("raw p99.9", "ms"),
    ("source p99", "ms"),
    ("attainment", "%"),
    ("inputs", ""),
    ("lost", ""),
    ("duplicated", ""),
    ("expired", ""),
    ("shed", ""),
    ("error", ""),
    ("late", ""),
    ("sender lag max", "ms"),
    ("broker_in p99", "ms"),
    ("queue_wait p99", "ms"),
    ("inference p99", "ms"),
    ("publish p99", "ms"),
    ("broker_out p99", "ms"),
    ("batch mean", ""),
)


def _figure(r: RunResult, name: str) -> float | None:
    c = r.completeness
    if name == "throughput":
        return r.throughput
    if name == "attainment":
        return None if c.attainment is None else 100 * c.attainment
    if name in ("inputs", "lost", "duplicated", "late"):
        return float(getattr(c, name))
    if name in ("expired", "shed", "error"):
        return float(c.by_status.get(name, 0))
    if name == "sender lag max":
        return r.sender.lag.max_ms
    if name == "batch mean":
        total = sum(r.batch_sizes.values())
        return sum(int(k) * v for k, v in r.batch_sizes.items()) / total if total else None
    what, stat = name.rsplit(" ", 1)
    s = r.latency.get(what) or r.stages.get(what)
    if s is None or s.count == 0:
        return None
    if stat == "max":
        return s.max_ms
    return s.pct(float(stat[1:]))


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "ms":
        return fmt_ms(v)
    if unit == "%":
        return f"{v:.3f}"
    if unit == "/s" or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.2f}"


def compare(a: RunResult, b: RunResult, *, names: tuple[str, str] = ("A", "B")) -> str:
    """A table of key figures of ``a`` and ``b`` with the difference and its ratio."""
    rows: list[list[str]] = [["figure", names[0], names[1], "delta", "delta %"]]
    for name, unit in _COMPARE_ROWS:
        x, y = _figure(a, name), _figure(b, name)
        delta = "-" if x is None or y is None else _num(y - x, unit)
        if delta != "-" and not delta.lstrip("+-").strip("0.,"):
            delta = "0"
        elif delta != "-" and not delta.startswith("-"):
            delta = "+" + delta
        rel = "-"
        tiny = unit == "ms" and x is not None and abs(x) < 0.01
        if x is not None and y is not None and x != 0 and not tiny:
            rel = f"{100 * (y - x) / abs(x):+.1f}%"
        label = f"{name} ({unit})" if unit and unit != "/s" else name
        rows.append([label, _num(x, unit), _num(y, unit), delta, rel])
    va = "-" if a.verdict is None else ("PASS" if a.verdict.passed else "FAIL")
    vb = "-" if b.verdict is None else ("PASS" if b.verdict.passed else "FAIL")
    rows.append(["verdict", va, vb, "", ""])
    head = [
        f"{names[0]}: {a.config.feed} at {a.config.speed}x, {a.config.mode} {a.config.service}",
        f"{names[1]}: {b.config.feed} at {b.config.speed}x, {b.config.mode} {b.config.service}",
    ]
    return "\n".join([*head, *_table(rows, [False, True, True, True, True])])


# -- SVG plots --------------------------------------------------------------------------------


class Line:
    """One series of a plot: y values (None: a gap) against x values."""

    __slots__ = ("color", "dash", "name", "xs", "ys")

    def __init__(
        self, name: str, xs: Sequence[float], ys: Sequence[Num], *, color: str, dash: bool = False
    ) -> None:
        self.name = name
        self.xs = list(xs)
        self.ys = list(ys)
        self.color = color
        self.dash = dash


_W, _H = 860, 270
_ML, _MR, _MT, _MB = 64, 150, 26, 42


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= step * m:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0**k for k in range(a, b + 1)]


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


class _Frame:
    """Maps data to pixels for one plot and draws its axes."""

    def __init__(
        self,
        xlo: float,
        xhi: float,
        ylo: float,
        yhi: float,
        *,
        ylog: bool,
        xticks: list[tuple[float, str]] | None = None,
    ) -> None:
        if ylog:
            ylo = max(ylo, 1e-4)
            yhi = max(yhi, ylo * 10)
            ticks = _log_ticks(ylo, yhi)
            ylo, yhi = ticks[0], ticks[-1]
            self.yticks = ticks
        else:
            ticks = _nice_ticks(min(ylo, 0.0), yhi if yhi > ylo else ylo + 1)
            if ticks[-1] < yhi:
                step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
                ticks.append(ticks[-1] + step)
            ylo, yhi = min(ticks[0], 0.0), ticks[-1]
            self.yticks = ticks
        if not xhi > xlo:
            xhi = xlo + 1.0
        self.xlo, self.xhi, self.ylo, self.yhi, self.ylog = xlo, xhi, ylo, yhi, ylog
        self.xticks = xticks or [(t, _tick_label(t)) for t in _nice_ticks(xlo, xhi, 8)]

    def x(self, v: float) -> float:
        return _ML + (v - self.xlo) / (self.xhi - self.xlo) * (_W - _ML - _MR)

    def y(self, v: float) -> float:
        if self.ylog:
            v = max(v, self.ylo)
            f = (math.log10(v) - math.log10(self.ylo)) / (
                math.log10(self.yhi) - math.log10(self.ylo)
            )
        else:
            f = (v - self.ylo) / (self.yhi - self.ylo)
        return _H - _MB - f * (_H - _MT - _MB)

    def axes(self, xlabel: str, ylabel: str) -> list[str]:
        out = [
            f'<rect x="{_ML}" y="{_MT}" width="{_W - _ML - _MR}" height="{_H - _MT - _MB}" '
            'fill="#fff" stroke="#bbb"/>'
        ]
        for t in self.yticks:
            yy = self.y(t)
            out.append(
                f'<line x1="{_ML}" x2="{_W - _MR}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
                f'<text x="{_ML - 6}" y="{yy + 4:.1f}" text-anchor="end">{_tick_label(t)}</text>'
            )
        for t, label in self.xticks:
            if not self.xlo <= t <= self.xhi:
                continue
            xx = self.x(t)
            out.append(
                f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{_MT}" y2="{_H - _MB}" stroke="#eee"/>'
                f'<text x="{xx:.1f}" y="{_H - _MB + 16}" text-anchor="middle">{_esc(label)}</text>'
            )
        out.append(
            f'<text x="{(_ML + _W - _MR) / 2:.0f}" y="{_H - 6}" text-anchor="middle">'
            f"{_esc(xlabel)}</text>"
            f'<text transform="translate(14,{(_H - _MB + _MT) / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{_esc(ylabel)}</text>'
        )
        return out


def _legend(items: list[tuple[str, str, bool]]) -> list[str]:
    out = []
    for i, (name, color, dash) in enumerate(items):
        y = _MT + 14 + 18 * i
        style = ' stroke-dasharray="5,3"' if dash else ""
        out.append(
            f'<line x1="{_W - _MR + 10}" x2="{_W - _MR + 30}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{color}" stroke-width="2"{style}/>'
            f'<text x="{_W - _MR + 36}" y="{y}">{_esc(name)}</text>'
        )
    return out


def _svg(name: str, title: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{_esc(name)}" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="{_esc(title)}"><text class="title" x="{_ML}" y="16">{_esc(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _empty(name: str, title: str, why: str) -> str:
    return _svg(
        name,
        title,
        [f'<text x="{_W / 2:.0f}" y="{_H / 2:.0f}" text-anchor="middle">{_esc(why)}</text>'],
    )


def line_chart(
    name: str,
    title: str,
    lines: list[Line],
    *,
    xlabel: str,
    ylabel: str,
    ylog: bool = False,
    xticks: list[tuple[float, str]] | None = None,
    hline: tuple[float, str] | None = None,
    fmt: str = "{:.3g}",
) -> str:
    """An SVG line chart; ``None`` values break a line."""
    pts = [
        (x, float(y))
        for ln in lines
        for x, y in zip(ln.xs, ln.ys, strict=True)
        if y is not None and (not ylog or y > 0)
    ]
    if not pts:
        return _empty(name, title, "no data")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    if hline is not None:
        ys.append(hline[0])
    frame = _Frame(
        min(xs),
        max(xs),
        min(ys) if ylog else 0.0,
        max(ys),
        ylog=ylog,
        xticks=xticks,
    )
    body = frame.axes(xlabel, ylabel)
    for ln in lines:
        d: list[str] = []
        pen = "M"
        marks: list[str] = []
        for x, y in zip(ln.xs, ln.ys, strict=True):
            if y is None or (ylog and y <= 0):
                pen = "M"
                continue
            px, py = frame.x(x), frame.y(float(y))
            d.append(f"{pen}{px:.1f},{py:.1f}")
            pen = "L"
            if len(ln.xs) <= 120:
                marks.append(
                    f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2" fill="{ln.color}">'
                    f"<title>{_esc(ln.name)} at {x:g}: {fmt.format(float(y))}</title></circle>"
                )
        dash = ' stroke-dasharray="5,3"' if ln.dash else ""
        body.append(
            f'<path class="series" data-name="{_esc(ln.name)}" data-points="{len(d)}" '
            f'd="{" ".join(d)}" fill="none" stroke="{ln.color}" stroke-width="1.6"{dash}/>'
        )
        body.extend(marks)
    if hline is not None:
        yy = frame.y(hline[0])
        body.append(
            f'<line class="limit" x1="{_ML}" x2="{_W - _MR}" y1="{yy:.1f}" y2="{yy:.1f}" '
            f'stroke="#444" stroke-dasharray="2,4"><title>{_esc(hline[1])}</title></line>'
        )
    legend = [(ln.name, ln.color, ln.dash) for ln in lines]
    if hline is not None:
        legend.append((hline[1], "#444", True))
    body.extend(_legend(legend))
    return _svg(name, title, body)


def bar_chart(
    name: str,
    title: str,
    categories: list[str],
    groups: list[tuple[str, list[float], str]],
    *,
    xlabel: str,
    ylabel: str,
    stacked: bool = False,
    ylog: bool = False,
    max_labels: int = 30,
    fmt: str = "{:,.0f}",
) -> str:
    """Grouped (or stacked) bars: one bar per group per category."""
    if not categories or not groups:
        return _empty(name, title, "no data")
    if stacked:
        tops = [sum(g[1][i] for g in groups) for i in range(len(categories))]
    else:
        tops = [max(g[1][i] for g in groups) for i in range(len(categories))]
    positive = [v for g in groups for v in g[1] if v > 0]
    if not positive:
        return _empty(name, title, "none")
    step = max(1, math.ceil(len(categories) / max_labels))
    xticks = [(i + 0.5, c) for i, c in enumerate(categories) if i % step == 0]
    frame = _Frame(
        0.0,
        float(len(categories)),
        min(positive) / 2 if ylog else 0.0,
        max(tops),
        ylog=ylog,
        xticks=xticks,
    )
    body = frame.axes(xlabel, ylabel)
    slot = (frame.x(1) - frame.x(0)) * 0.8
    base_y = frame.y(frame.ylo)
    for gi, (gname, values, color) in enumerate(groups):
        rects = []
        for i, v in enumerate(values):
            if v <= 0:
                continue
            if stacked:
                below = sum(g[1][i] for g in groups[:gi])
                y0, y1 = frame.y(below) if below > 0 else base_y, frame.y(below + v)
                x0, w = frame.x(i) + 0.1 * (frame.x(1) - frame.x(0)), slot
            else:
                w = slot / len(groups)
                x0 = frame.x(i) + 0.1 * (frame.x(1) - frame.x(0)) + gi * w
                y0, y1 = base_y, frame.y(v)
            rects.append(
                f'<rect class="bar" x="{x0:.1f}" y="{y1:.1f}" width="{max(w, 0.5):.1f}" '
                f'height="{max(y0 - y1, 0.5):.1f}" fill="{color}"><title>{_esc(gname)} '
                f"{_esc(categories[i])}: {fmt.format(v)}</title></rect>"
            )
        body.append(
            f'<g class="series" data-name="{_esc(gname)}" data-points="{len(rects)}">'
            + "".join(rects)
            + "</g>"
        )
    body.extend(_legend([(g[0], g[2], False) for g in groups]))
    return _svg(name, title, body)


def _spectrum_x(p: float) -> float:
    return math.log10(1.0 / (1.0 - p / 100.0)) if p < 100 else 6.0


def spectrum_chart(r: RunResult) -> str:
    """Latency by percentile, log-log (HdrHistogram style): e2e (CO corrected), raw, source."""
    lines = []
    for key in LATENCIES:
        s = r.latency.get(key)
        if s is None or s.count == 0 or not s.hdr:
            continue
        hist = decode_histogram(s.hdr)
        ps = [p for p in _SPECTRUM if p <= 100 * (1 - 1 / max(s.count, 1)) or p == 0]
        ps.append(100.0)
        xs = [_spectrum_x(p) for p in ps[:-1]] + [_spectrum_x(100 * (1 - 0.1 / s.count))]
        ys: list[Num] = [hist.get_value_at_percentile(p) / 1e6 for p in ps]
        label = {"e2e": "e2e (CO-corrected)", "raw": "raw (actual send)"}.get(key, "from source")
        lines.append(Line(label, xs, ys, color=_COLORS[key], dash=key == "source"))
    ticks = [(_spectrum_x(p), f"{p:g}%") for p in (0.0, 90.0, 99.0, 99.9, 99.99, 99.999)]
    return line_chart(
        "percentile-spectrum",
        "Latency by percentile (log scale)",
        lines,
        xlabel="percentile",
        ylabel="latency (ms)",
        ylog=True,
        xticks=ticks,
        hline=(r.completeness.budget_ms, f"budget {r.completeness.budget_ms:g} ms"),
        fmt="{:.3g} ms",
    )


def charts(r: RunResult) -> list[tuple[str, str]]:
    """Every plot of the report: ``(heading, svg)``."""
    s = r.series
    t = [float(x) for x in s.t_s]
    out = [
        (
            "Latency over time",
            line_chart(
                "latency-over-time",
                "End-to-end latency per second of intended send (log scale)",
                [
                    Line("e2e p50", t, s.p50_ms, color=_COLORS["p50"]),
                    Line("e2e p99", t, s.p99_ms, color=_COLORS["p99"]),
                    Line("e2e max", t, s.max_ms, color=_COLORS["max"]),
                    Line("raw p99", t, s.raw_p99_ms, color=_COLORS["raw p99"], dash=True),
                    Line(
                        "sender lag max",
                        t[: len(s.sender_lag_max_ms)],
                        s.sender_lag_max_ms,
                        color=_COLORS["lag"],
                        dash=True,
                    ),
                ],
                xlabel="time since start (s)",
                ylabel="latency (ms)",
                ylog=True,
                hline=(r.completeness.budget_ms, f"budget {r.completeness.budget_ms:g} ms"),
                fmt="{:.3g} ms",
            ),
        ),
        ("Percentile spectrum", spectrum_chart(r)),
        (
            "Throughput",
            line_chart(
                "throughput",
                "Events sent and decisions received per second",
                [
                    Line("sent", t, s.sent, color=_COLORS["sent"]),
                    Line("decided", t, s.decided, color=_COLORS["decided"], dash=True),
                ],
                xlabel="time since start (s)",
                ylabel="events / s",
                fmt="{:,.0f}/s",
            ),
        ),
        (
            "Batch sizes",
            line_chart(
                "batch-sizes",
                "Batch size of ok decisions per second",
                [
                    Line("mean", t, s.batch_mean, color=_COLORS["mean"]),
                    Line(
                        "max",
                        t,
                        [float(v) if v is not None else None for v in s.batch_max],
                        color=_COLORS["max"],
                        dash=True,
                    ),
                ],
                xlabel="time since start (s)",
                ylabel="rows per batch",
                fmt="{:.3g}",
            )
            + bar_chart(
                "batch-size-distribution",
                "Decisions by the size of their batch",
                sorted(r.batch_sizes, key=int),
                [
                    (
                        "decisions",
                        [float(r.batch_sizes[k]) for k in sorted(r.batch_sizes, key=int)],
                        _COLORS["mean"],
                    )
                ],
                xlabel="batch size",
                ylabel="decisions",
            ),
        ),
        (
            "Stage breakdown",
            bar_chart(
                "stage-breakdown",
                "Where the time goes, from the decision stamps (log scale)",
                [_STAGE_LABELS[k] for k in STAGES],
                [
                    (
                        label,
                        [r.stages[k].pct(p) or 0.0 for k in STAGES],
                        _COLORS[color],
                    )
                    for label, p, color in (
                        ("p50", 50.0, "p50"),
                        ("p99", 99.0, "p99"),
                        ("p99.9", 99.9, "p99.9"),
                    )
                ],
                xlabel="stage",
                ylabel="ms",
                ylog=True,
                fmt="{:.3g} ms",
            ),
        ),
        (
            "Misses over time",
            bar_chart(
                "misses-over-time",
                "SLO misses per second of intended send, by cause",
                [str(x) for x in s.t_s],
                [
                    (cause, [float(v) for v in s.misses.get(cause, [])], _COLORS[cause])
                    for cause in ("lost", "expired", "shed", "error", "late", "over_budget")
                    if any(s.misses.get(cause, []))
                ]
                or [("none", [0.0] * len(s.t_s), "#ccc")],
                xlabel="time since start (s)",
                ylabel="misses",
                stacked=True,
            ),
        ),
    ]
    return out


# -- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.pass{color:#0a7a20;font-weight:600}.fail{color:#b00020;font-weight:600}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:right}td:first-child,th:first-child{text-align:left}
svg.chart{display:block;margin:8px 0 18px;font-size:11px}svg .title{font-size:13px;font-weight:600}
pre{background:#f6f6f6;padding:8px;overflow:auto}.note{color:#8a5a00}
"""


def _rows(rows: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)


def render_html(r: RunResult) -> str:
    """The whole report page (self-contained)."""
    cfg, c = r.config, r.completeness
    v = r.verdict
    verdict = ""
    if v is not None:
        cls = "pass" if v.passed else "fail"
        rows = "".join(
            f"<tr><td>{_esc(ch.name)}</td><td>{_esc(ch.op)} {_esc(_val(ch.limit, ch))}</td>"
            f"<td>{_esc(_val(ch.actual, ch))}</td>"
            f'<td class="{"pass" if ch.passed else "fail"}">{"pass" if ch.passed else "FAIL"}'
            "</td></tr>"
            for ch in v.checks
        )
        verdict = (
            f'<h2>Verdict: <span class="{cls}">{"PASS" if v.passed else "FAIL"}</span></h2>'
            f"<p>SLO: {_esc(v.slo_file or '-')}</p>"
            f'<table class="verdict"><tr><th>check</th><th>limit</th><th>measured</th>'
            f"<th>result</th></tr>{rows}</table>"
        )
    lat_rows = (
        "".join(
            f"<tr><td>{k}</td><td>{r.latency[k].count:,}</td>"
            + "".join(f"<td>{fmt_ms(r.latency[k].pct(p))}</td>" for p in (50, 90, 99, 99.9, 99.99))
            + f"<td>{fmt_ms(r.latency[k].max_ms)}</td></tr>"
            for k in LATENCIES
        )
        + "".join(
            f"<tr><td>{_STAGE_LABELS[k]}</td><td>{r.stages[k].count:,}</td>"
            + "".join(f"<td>{fmt_ms(r.stages[k].pct(p))}</td>" for p in (50, 90, 99, 99.9, 99.99))
            + f"<td>{fmt_ms(r.stages[k].max_ms)}</td></tr>"
            for k in STAGES
        )
        + (
            f"<tr><td>sender lag</td><td>{r.sender.lag.count:,}</td>"
            + "".join(f"<td>{fmt_ms(r.sender.lag.pct(p))}</td>" for p in (50, 90, 99, 99.9, 99.99))
            + f"<td>{fmt_ms(r.sender.lag.max_ms)}</td></tr>"
        )
    )
    st = c.by_status
    outcome = _rows(
        [
            ("inputs", f"{c.inputs:,}"),
            ("decided", f"{c.decided:,}"),
            ("lost", f"{c.lost:,}"),
            ("duplicated decisions", f"{c.duplicated:,} ({c.duplicated_inputs:,} inputs)"),
            ("dead-lettered", f"{c.dead_lettered:,}"),
            *((s, f"{st.get(s, 0):,}") for s in ("ok", "expired", "shed", "error", "warming")),
            ("late", f"{c.late:,}"),
            ("over budget", f"{c.over_budget:,}"),
            ("SLO misses", f"{c.misses:,}"),
            ("attainment", "-" if c.attainment is None else f"{c.attainment:.3%}"),
            ("unmatched decisions", f"{c.unmatched:,}"),
            ("undecodable", f"{c.undecodable:,}"),
        ]
    )
    speed = f"{cfg.rate:g} events/s" if cfg.rate is not None else f"{cfg.speed}x recorded pace"
    config = _rows(
        [
            (
                "feed",
                f"{cfg.feed} ({cfg.rows_replayed:,} of {cfg.feed_rows:,} rows, "
                f"{cfg.feed_span_s:,.1f} s recorded)",
            ),
            ("mode", f"{cfg.mode} {cfg.bootstrap}".strip()),
            ("service", cfg.service or "-"),
            ("pace", speed + ("" if cfg.co_corrected else " (not CO corrected)")),
            (
                "topics",
                f"{cfg.input_topic} -> {cfg.decision_topic} (dlq {cfg.dlq_topic}), "
                f"{cfg.partitions} partition(s)",
            ),
            ("encodings", f"in {cfg.encoding}, out {cfg.decision_encoding}"),
            ("harness fetch_max_wait_ms", str(cfg.fetch_max_wait_ms)),
            ("source_ts", cfg.source_ts),
            ("budget", f"{cfg.budget_ms:g} ms ({cfg.budget_source})"),
            ("throughput", f"{r.throughput:,.0f} decisions/s"),
            (
                "sent",
                f"{r.sender.sent:,} at {r.sender.achieved_rate:,.0f}/s over "
                f"{r.send_span_s:,.1f} s" + (" - BEHIND SCHEDULE" if r.sender.behind else ""),
            ),
            *((f"env {k}", val) for k, val in r.env.items()),
        ]
    )
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in cfg.notes)
    plots = "".join(f"<h2>{_esc(h)}</h2>{svg}" for h, svg in charts(r))
    definition = _esc(c.attainment_definition)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>weir replay: {_esc(Path(cfg.feed).name)}</title><style>{_CSS}</style></head>"
        f"<body><h1>weir replay: {_esc(Path(cfg.feed).name)}</h1>"
        f"<p>{_esc(speed)} into {_esc(cfg.mode)}; {c.inputs:,} inputs, "
        f"{r.throughput:,.0f} decisions/s</p>{notes}{verdict}"
        '<h2>Latency (ms)</h2><table class="latency"><tr><th></th><th>count</th><th>p50</th>'
        f"<th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr>{lat_rows}"
        "</table><p>e2e: decision arrival minus the intended send time (coordinated-omission "
        "corrected); raw: minus the actual send; source: minus the event's source time. Every "
        "status but warming counts.</p>"
        f"<h2>Outcomes</h2><table>{outcome}</table><p>Attainment: {definition}; warming "
        "decisions are excluded.</p>"
        f"{plots}<h2>Run</h2><table>{config}</table></body></html>\n"
    )


def _val(x: float | None, ch: object) -> str:
    name = getattr(ch, "name", "")
    unit = getattr(ch, "unit", "")
    if x is None:
        return "-"
    if name == "attainment":
        return f"{x:.3%}"
    if unit == "ms":
        return f"{fmt_ms(x)} ms"
    return f"{x:,.0f}"


def write_html(r: RunResult, path: str | Path) -> Path:
    """Write the report page to ``path``; returns it."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render_html(r), encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"cannot write report {p}: {exc.strerror}") from exc
    return p


# -- CLI --------------------------------------------------------------------------------------


def _run_report(args: argparse.Namespace) -> int:
    result = read_result(args.result)
    out = args.out or Path(args.result).with_suffix(".html")
    path = write_html(result, out)
    print(format_summary(result))
    if result.verdict is not None:
        print(format_verdict(result.verdict))
    print(f"report: {path}")
    return 0


def register_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay report RESULT.json [--out X.html]``."""
    p = sub.add_parser(
        "report",
        help="write the HTML report of a results file",
        description="Regenerate the self-contained HTML report (inline SVG plots) of a run.",
    )
    p.add_argument("result", type=Path, metavar="RESULT.json")
    p.add_argument("--out", "-o", type=Path, metavar="X.html", help="default: RESULT with .html")
    p.set_defaults(func=_run_report)


def _run_compare(args: argparse.Namespace) -> int:
    a, b = read_result(args.a), read_result(args.b)
    print(compare(a, b, names=(Path(args.a).stem, Path(args.b).stem)))
    return 0


def register_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay compare A.json B.json``."""
    p = sub.add_parser(
        "compare",
        help="print the key figures of two runs side by side with deltas",
        description="Compare two results files: B's figures against A's.",
    )
    p.add_argument("a", type=Path, metavar="A.json")
    p.add_argument("b", type=Path, metavar="B.json")
    p.set_defaults(func=_run_compare)
