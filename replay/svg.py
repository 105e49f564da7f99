"""A small kit of self-contained SVG charts: line charts (linear or log y) and bar charts
(grouped or stacked), drawn as text with no scripts, fonts or network.

Every chart is an ``<svg class="chart" data-chart=NAME>``; each series a ``<path
class="series" data-name=...>`` or a group of ``<rect class="bar">``; hovering a point
shows its value (SVG ``<title>``). Used by the replay report (``replay.charts``) and the
peers benchmark report (``bench.peers.report``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

Num = float | int | None


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
