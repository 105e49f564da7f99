"""The side-by-side's outputs: JSON, a markdown table, and a plot.

``write_all`` writes, under the output directory: ``peers.json`` (``results.BenchResult``),
``peers.md`` (the table: median over repeats, ``[min-max]`` when there was more than one,
the checks, the profiles), and ``peers.png`` + ``peers.svg`` drawn with matplotlib, or,
where matplotlib is not installed, ``peers.svg`` drawn here (``replay.svg``'s charts,
no dependencies).
"""

from __future__ import annotations

from pathlib import Path

from bench.peers.base import CONTENDERS
from bench.peers.results import BenchResult, Spread, encode_result
from bench.peers.tables import (
    cell,
    curve_markdown,
    curve_series,
    markdown_table,
    scenario_markdown,
)

_COLORS = {
    "weir": "#d62728",
    "weir-e2e": "#ff7f0e",
    "naive": "#7f7f7f",
    "fixed-window": "#1f77b4",
    "faust": "#2ca02c",
    "quix": "#9467bd",
    "echo": "#000000",
}


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("max sustainable rate (ev/s)", "max_rate", "rate"),
    ("1x p50 ms", "p50_1x", "ms"),
    ("1x p99 ms", "p99_1x", "ms"),
    ("1x p99.9 ms", "p999_1x", "ms"),
    ("1x SLO attainment", "attainment_1x", "pct"),
    ("10x p50 ms", "p50_10x", "ms"),
    ("10x p99 ms", "p99_10x", "ms"),
    ("10x p99.9 ms", "p999_10x", "ms"),
    ("10x SLO attainment", "attainment_10x", "pct"),
    ("lost / dup", "", ""),
    ("CPU s / 1k ev (10x)", "cpu_s_per_1k_10x", "cpu"),
    ("peak RSS MiB", "peak_rss_mib", "mib"),
)


def table_rows(result: BenchResult) -> list[list[str]]:
    """The table's header and rows (one per contender, table order)."""
    cols = COLUMNS
    rows = [["contender", *(c[0] for c in cols)]]
    for name in [n for n in CONTENDERS if n in result.summary]:
        s = result.summary[name]
        row = [name]
        for _, key, kind in cols:
            if not key:
                row.append(f"{cell(s['lost'], 'int')} / {cell(s['duplicated'], 'int')}")
            else:
                row.append(cell(s.get(key), kind))
        rows.append(row)
    return rows


def cpu_rows(result: BenchResult) -> list[list[str]]:
    """CPU per 1k events at 10x of the contender, the harness and the broker."""
    rows = [["contender", "contender CPU s/1k", "harness CPU s/1k", "broker CPU s/1k"]]
    for name in [n for n in CONTENDERS if n in result.summary]:
        s = result.summary[name]
        rows.append(
            [
                name,
                cell(s["cpu_s_per_1k_10x"], "cpu"),
                cell(s["harness_cpu_s_per_1k_10x"], "cpu"),
                cell(s["broker_cpu_s_per_1k_10x"], "cpu"),
            ]
        )
    return rows


def render_markdown(result: BenchResult) -> str:
    """The whole ``peers.md``."""
    p = result.params
    out = [
        "# Side-by-side: weir and the systems users would pick instead",
        "",
        f"SLO budget {p.get('budget_ms')} ms end to end (weir's deadline budget too); e2e = decision arrival - "
        f"intended send, coordinated-omission corrected; {p.get('repeats')} repeat(s): median "
        "[min-max]; one worker each (1x and 10x: each contender alone on the box; the "
        "curve and the overload scenario: every contender's process started once and kept, "
        "idle while another is measured, so repeats interleave), same Apache Kafka, topics of "
        f"{p.get('partitions')} partition(s), the same ONNX model "
        f"({p.get('bundle') or 'the default bundle'}) and feature code.",
        "",
        markdown_table(table_rows(result)),
        "",
        "Max sustainable rate: the highest fixed rate whose e2e p99 stays within the budget "
        "with nothing lost, >= 99 % of inputs decided ok within budget, and the harness's "
        "sender keeping >= 95 % of the offered rate, judged on the median of the rate's "
        "interleaved repeats (the curve below); [min-max]: each repeat's own verdict.",
        "",
        "CPU seconds per 1,000 events during the 10x replay, by process (the contender, the "
        "replay harness, the Kafka broker), from /proc:",
        "",
        markdown_table(cpu_rows(result)),
        "",
    ]
    overrides = dict(p.get("weir_env") or {})
    if overrides:
        out += [
            "**Diagnostic run: weir with non-default settings** "
            + ", ".join(f"`{k}={v}`" for k, v in sorted(overrides.items())),
            "",
        ]
    if result.inproc_us_per_event:
        out += [
            "Decision path without Kafka (decode, features, batching or scheduling, "
            "inference, decision encoding), CPU µs per event, best of each path's repeats "
            f"on {result.inproc_loop or 'asyncio'} (`bench.peers.inproc`): "
            + ", ".join(f"{k} {v:.1f}" for k, v in result.inproc_us_per_event.items())
            + ".",
            "",
        ]
    if result.checks:
        out += ["## Expectations", ""]
        for c in result.checks:
            actual = "-" if c.actual is None else c.unit.format(c.actual)
            mark = "met" if c.passed else f"undecided: {c.undecided}" if c.undecided else "NOT met"
            out.append(f"- {c.name}: expected {c.expected}; got {actual} ({c.detail}): {mark}")
        out.append("")
    out += ["## Contenders", ""]
    for name, meta in result.contenders.items():
        versions = ", ".join(f"{k} {v}" for k, v in dict(meta.get("versions", {})).items())
        out.append(f"- **{name}**: {meta.get('how')} ({versions})")
    out.append("")
    out += curve_markdown(result)
    out += scenario_markdown(result)
    for prof in result.profiles:
        out += [
            f"## Profile: {prof.contender} at {prof.rate:,.0f} ev/s "
            f"(py-spy, {prof.samples:,} on-CPU samples, {prof.seconds:g} s; raw: {prof.raw_file})",
            "",
            "| where | share of CPU samples |",
            "|:---|---:|",
        ]
        out += [f"| {k} | {100 * v:.1f}% |" for k, v in prof.categories.items()]
        out += ["", "Top leaf functions:", ""]
        out += [f"- {100 * v:.1f}% {k}" for k, v in prof.top_self]
        out.append("")
    if result.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    env = result.env
    out.append(
        f"Host: {env.get('host')} ({env.get('cpus')} CPUs, {env.get('platform')}), Python "
        f"{env.get('python')}, load average at start {env.get('loadavg_at_start')}."
    )
    return "\n".join(out) + "\n"


def write_all(result: BenchResult, out: Path) -> list[Path]:
    """Write ``peers.json``, ``peers.md`` and the plot(s) under ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "peers.json", out / "peers.md"]
    paths[0].write_bytes(encode_result(result) + b"\n")
    paths[1].write_text(render_markdown(result), encoding="utf-8")
    paths += write_plot(result, out)
    return paths


def _series(result: BenchResult) -> list[str]:
    return [n for n in CONTENDERS if n in result.summary]


def _bars(spreads: list[Spread]) -> tuple[list[float], list[float], list[float]]:
    """Bar heights (medians, 0 when none) and error bars down and up to the min and max.

    An error bar is never negative: a median of None drawn as 0 beside a measured min
    (a rate no repeat's median sustained, while one repeat did) gets none below."""
    med = [s.median or 0.0 for s in spreads]
    lo = [
        max(0.0, m - (s.min if s.min is not None else m)) for s, m in zip(spreads, med, strict=True)
    ]
    hi = [
        max(0.0, (s.max if s.max is not None else m) - m) for s, m in zip(spreads, med, strict=True)
    ]
    return med, lo, hi


def write_plot(result: BenchResult, out: Path) -> list[Path]:
    """``peers.png`` and ``peers.svg`` (matplotlib), else ``peers.svg`` drawn here."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, smaller
        import matplotlib.pyplot as plt
    except ImportError:
        return [_write_svg(result, out)]
    names = _series(result)
    budget = float(result.params.get("budget_ms") or 0.0)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax = axes[0]
    med, lo, hi = _bars([result.summary[n]["max_rate"] for n in names])
    ax.bar(names, med, yerr=[lo, hi], color=[_COLORS.get(n, "#888") for n in names], capsize=4)
    ax.set_title(f"max sustainable rate at {budget:g} ms (median, min-max)")
    ax.set_ylabel("events/s")
    ax.tick_params(axis="x", rotation=30)
    ax = axes[1]
    width = 0.38
    xs = list(range(len(names)))
    for j, (tag, shade) in enumerate((("1x", 1.0), ("10x", 0.55))):
        vals, err_lo, err_hi = _bars([result.summary[n][f"p99_{tag}"] for n in names])
        ax.bar(
            [x + (j - 0.5) * width for x in xs],
            vals,
            width,
            yerr=[err_lo, err_hi],
            capsize=3,
            label=f"{tag} replay",
            color=[_COLORS.get(n, "#888") for n in names],
            alpha=shade,
        )
    if budget:
        ax.axhline(budget, color="#444", linestyle="--", label=f"budget {budget:g} ms")
    ax.set_xticks(xs, names, rotation=30)
    ax.set_yscale("log")
    ax.set_title("e2e p99 at 1x (solid) and 10x (light)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    ax = axes[2]
    for n, pts in curve_series(result).items():
        color = _COLORS.get(n, "#888")
        rates = [p[0] for p in pts]
        ax.plot(rates, [p[2] for p in pts], "o-", label=f"{n} p99", color=color)
        ax.plot(rates, [p[1] for p in pts], ":", color=color, alpha=0.7)
        ax.plot(rates, [p[3] for p in pts], "--", color=color, alpha=0.7)
        lim = [p for p in pts if p[4]]
        if lim:
            ax.plot([p[0] for p in lim], [p[2] for p in lim], "x", color="#000", markersize=9)
    if budget:
        ax.axhline(budget, color="#444", linestyle="--", label="budget")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("curve: e2e p50 (dotted) / p99 / p99.9 (dashed); x = harness or host limit")
    ax.set_xlabel("events/s")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out / "peers.png", out / "peers.svg"]
    fig.savefig(paths[0], dpi=110)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _write_svg(result: BenchResult, out: Path) -> Path:
    from replay.svg import Line, bar_chart, line_chart

    names = _series(result)
    budget = float(result.params.get("budget_ms") or 0.0)
    charts = [
        bar_chart(
            "max_rate",
            "max sustainable rate (median over repeats)",
            names,
            [("events/s", [result.summary[n]["max_rate"].median or 0.0 for n in names], "#d62728")],
            xlabel="contender",
            ylabel="events/s",
        ),
        bar_chart(
            "p99",
            "e2e p99 (median over repeats)",
            names,
            [
                ("1x", [result.summary[n]["p99_1x"].median or 0.0 for n in names], "#1f77b4"),
                ("10x", [result.summary[n]["p99_10x"].median or 0.0 for n in names], "#ff7f0e"),
            ],
            xlabel="contender",
            ylabel="ms",
            fmt="{:.2f}",
        ),
    ]
    lines = []
    for n, pts in curve_series(result).items():
        color = _COLORS.get(n, "#888")
        xs = [p[0] for p in pts]
        lines.append(Line(f"{n} p99", xs, [p[2] for p in pts], color=color))
        lines.append(Line(f"{n} p99.9", xs, [p[3] for p in pts], color=color, dash=True))
        lines.append(Line(f"{n} p50", xs, [p[1] for p in pts], color=color, dash=True))
    limited = sorted(
        {f"{n} {p[0]:,.0f}/s" for n, pts in curve_series(result).items() for p in pts if p[4]}
    )
    charts.append(
        line_chart(
            "ramp",
            "curve: e2e p50 / p99 / p99.9 (dashed) vs offered rate"
            + (f"; harness/host-limited: {', '.join(limited)}" if limited else ""),
            lines,
            xlabel="events/s",
            ylabel="ms",
            ylog=True,
            hline=(budget, "budget") if budget else None,
        )
    )
    svg_h = 270
    body = "".join(f'<g transform="translate(0,{i * svg_h})">{c}</g>' for i, c in enumerate(charts))
    path = out / "peers.svg"
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="860" height="{svg_h * len(charts)}" '
        f'font-family="sans-serif" font-size="11">{body}</svg>\n',
        encoding="utf-8",
    )
    return path
