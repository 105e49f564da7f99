"""The plots of a replay report: latency over time, the percentile spectrum (log scale, CO
corrected beside raw and from-source), throughput, batch sizes, the stage breakdown and
misses over time, each drawn with the ``replay.svg`` kit."""

from __future__ import annotations

import math

from replay.results import LATENCIES, STAGES, RunResult, decode_histogram
from replay.svg import Line, Num, bar_chart, line_chart

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
STAGE_LABELS: dict[str, str] = {
    "broker_in": "broker in",
    "queue_wait": "queue wait",
    "inference": "inference",
    "publish": "publish",
    "broker_out": "broker out",
}


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
                [STAGE_LABELS[k] for k in STAGES],
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
