"""The report's curve and scenario sections: markdown tables and their chart series.

``curve_markdown`` prints, per contender, the throughput-latency curve (p50 / p99 /
p99.9 per offered rate, median [min-max] over the interleaved repeats, the verdict and
the limit marks: ``H`` harness-limited in n of N repeats, ``B`` past the echo floor's
failure, i.e. the host or broker was the limit); ``scenario_markdown`` prints the
capacity, overload, mixed-deadline, heavy-model and scale-out scenarios; ``curve_series`` gives
the plot its lines (``report.write_plot``).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.peers.results import BenchResult, CurvePoint, Scenario, Spread, Trial, spread
from bench.peers.verdict import held, mixed_figures, overload_figures, points_of, rate_spread
from replay.results import STAGES


def _fmt(v: float | None, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.2f}" if v < 100 else f"{v:,.0f}"
    if kind == "pct":
        return f"{100 * v:.2f}%"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "cpu":
        return f"{v:.3f}"
    return f"{v:.0f}"


def cell(s: Spread | None, kind: str) -> str:
    """``median [min-max]`` (just the median with one repeat; ``-`` with none)."""
    if s is None or s.median is None:
        return "-"
    mid = _fmt(s.median, kind)
    if s.n <= 1 or s.min == s.max:
        return mid
    return f"{mid} [{_fmt(s.min, kind)}-{_fmt(s.max, kind)}]"


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (first row is the header; numbers right-aligned)."""
    head = "| " + " | ".join(rows[0]) + " |"
    rule = "|" + "|".join([":---"] + ["---:"] * (len(rows[0]) - 1)) + "|"
    body = ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join([head, rule, *body])


def marks(p: CurvePoint) -> str:
    """``H 1/3`` (sender short of the rate in 1 of 3 repeats), ``L 2/3`` (sender late by
    more than 50 ms at least once in 2 of 3), ``S 1/3`` (weir's loop held 50 ms or more at
    least once in 1 of 3), ``B`` (host/broker)."""
    limits = _limits(p.harness_limited, p.sender_lagged, p.service_held, p.repeats)
    return " ".join(m for m in (limits, "B" if p.host_limited else "") if m)


def _limits(short: int, late: int, held: int, n: int) -> str:
    """``H short/n L late/n S held/n``, each only when not 0."""
    counts = (("H", short), ("L", late), ("S", held))
    return " ".join(f"{mark} {k}/{n}" for mark, k in counts if k)


def trial_marks(trials: Sequence[Trial]) -> str:
    """``marks`` for a scenario's repeats: ``H n/N`` (the sender short of the offered rate),
    ``L n/N`` (the sender late by more than 50 ms at least once), ``S n/N`` (weir's loop
    held 50 ms or more at least once); empty when none."""
    return _limits(
        sum(t.harness_limited for t in trials),
        sum(t.sender_behind for t in trials),
        sum(held(t) for t in trials),
        len(trials),
    )


def curve_rows(points: list[CurvePoint], contender: str) -> list[list[str]]:
    """One contender's curve: header and one row per offered rate."""
    rows = [["offered ev/s", "p50 ms", "p99 ms", "p99.9 ms", "attainment", "CPU s/1k", "verdict"]]
    for p in sorted((p for p in points if p.contender == contender), key=lambda p: p.rate):
        verdict = "ok" if p.sustainable else "✗"
        limit = marks(p)
        rows.append(
            [
                f"{p.rate:,.0f}",
                cell(p.p50_ms, "ms"),
                cell(p.p99_ms, "ms"),
                cell(p.p999_ms, "ms"),
                cell(p.attainment, "pct"),
                cell(p.cpu_s_per_1k, "cpu"),
                f"{verdict} {limit}".strip(),
            ]
        )
    return rows


def curve_markdown(result: BenchResult) -> list[str]:
    """The curve section (empty without curve steps)."""
    if not result.points:
        return []
    budget = result.params.get("budget_ms")
    out = [
        "## Throughput-latency curve",
        "",
        f"Each offered rate ran {result.params.get('repeats')} time(s) per contender, "
        "interleaved across contenders (a noisy minute hits everyone); figures are median "
        f"[min-max] over those repeats; a rate is sustainable (ok) when the median meets the "
        f"SLO (p99 <= {budget} ms, >= 99 % in budget, nothing lost, sender keeping up). "
        "Marks: `H n/N` the harness's sender fell short of the rate in n of N repeats "
        "(harness limit); `L n/N` the sender was late by more than 50 ms at least once in "
        "n of N repeats (its stalls are charged to the latencies); `S n/N` weir's own "
        "event loop was held 50 ms or more at least once in n of N repeats (read from its "
        "ops endpoint: a collection, a long call, or the host not running it; without `S`, "
        "a weir stall was outside its process); `B` the echo floor (no "
        "model) already failed at this rate or below (host or broker limit).",
        "",
    ]
    for name in dict.fromkeys(p.contender for p in result.points):
        stop = result.curve_stop.get(name, "-")
        out += [
            f"### {name} (ramp stopped: {stop})",
            "",
            markdown_table(curve_rows(result.points, name)),
        ]
        out.append("")
    return out


def curve_series(result: BenchResult) -> dict[str, list[tuple[float, float, float, float, bool]]]:
    """Contender -> (rate, p50, p99, p99.9 medians, limited) per point, by rate."""
    out: dict[str, list[tuple[float, float, float, float, bool]]] = {}
    for p in sorted(result.points, key=lambda p: p.rate):
        if p.p99_ms.median is None:
            continue
        out.setdefault(p.contender, []).append(
            (
                p.rate,
                p.p50_ms.median or 0.0,
                p.p99_ms.median,
                p.p999_ms.median or p.p99_ms.median,
                bool(p.harness_limited or p.host_limited),
            )
        )
    return out


def _overload(sc: Scenario) -> list[str]:
    rows = [
        [
            "contender",
            "load",
            "offered ev/s",
            "goodput ev/s",
            "in-deadline ok",
            "p99 ms",
            "ok / expired / shed / error",
            "lost",
            "harness",
        ]
    ]
    for (name, load), f in overload_figures(sc.trials).items():
        outcomes = " / ".join(cell(f[k], "int") for k in ("ok", "expired", "shed", "error"))
        ts = [t for t in sc.trials if t.contender == name and t.load == load]
        rows.append(
            [
                name,
                load,
                cell(f["offered"], "rate"),
                cell(f["goodput"], "rate"),
                cell(f["good_share"], "pct"),
                cell(f["p99_ms"], "ms"),
                outcomes,
                cell(f["lost"], "int"),
                trial_marks(ts),
            ]
        )
    return [
        "Goodput: inputs decided `ok` within their deadline per second of offered load; "
        "every input must get an explicit outcome (lost: none came back). Harness: `H n/N` "
        "the sender fell short of the offered rate, `L n/N` it fell behind its schedule by "
        "more than 50 ms, in n of N repeats (the host, not only the contender, was slow).",
        "",
        markdown_table(rows),
    ]


def _mixed(sc: Scenario) -> list[str]:
    rows = [
        [
            "contender",
            "offered ev/s",
            "tight attainment",
            "tight p99 ms",
            "loose attainment",
            "loose p99 ms",
            "lost",
            "tight p99 by stage ms",
            "harness",
        ]
    ]
    for name, f in mixed_figures(sc.trials).items():
        ts = [t for t in sc.trials if t.contender == name]
        by_stage = [f[f"tight_{stage}_p99_ms"].median for stage in STAGES]
        rows.append(
            [
                name,
                cell(f["offered"], "int"),
                cell(f["tight_attainment"], "pct"),
                cell(f["tight_p99_ms"], "ms"),
                cell(f["loose_attainment"], "pct"),
                cell(f["loose_p99_ms"], "ms"),
                cell(f["lost"], "int"),
                " / ".join("-" if v is None else f"{v:.1f}" for v in by_stage),
                trial_marks(ts),
            ]
        )
    return [
        "Tight p99 by stage: the tight class's p99 of each stage, median over the "
        "repeats, in the order " + " / ".join(STAGES) + " (`replay.measure`: broker_in "
        "from the harness's send to the service's ingest, queue_wait to the batch's "
        "dispatch, inference, publish, broker_out to the harness's receipt).",
        "",
        markdown_table(rows),
    ]


def _heavy(sc: Scenario) -> list[str]:
    rows = [["contender", "p50 ms", "p99 ms", "p99.9 ms", "attainment", "lost", "CPU s/1k"]]
    for name in dict.fromkeys(t.contender for t in sc.trials):
        ts = [t for t in sc.trials if t.contender == name]
        rows.append(
            [
                name,
                cell(spread(t.p50_ms for t in ts), "ms"),
                cell(spread(t.p99_ms for t in ts), "ms"),
                cell(spread(t.p999_ms for t in ts), "ms"),
                cell(spread(t.attainment for t in ts), "pct"),
                cell(spread(float(t.lost) for t in ts), "int"),
                cell(spread(t.cpu_s_per_1k for t in ts), "cpu"),
            ]
        )
    return [markdown_table(rows)]


def _ramp(sc: Scenario, budget_ms: float) -> list[str]:
    """A ramp scenario's max sustainable rates: per weir worker count (scale-out), with
    the rate per worker, or per contender (capacity)."""
    scale = sc.name == "scale"
    points = points_of(sc.trials, budget_ms=budget_ms)
    stops = dict(sc.params.get("stopped") or {})
    head = ["workers" if scale else "contender", "max sustainable ev/s", "CPU s/1k at max"]
    rows = [[*head, *(["per worker ev/s"] if scale else []), "ramp stopped"]]
    for label in dict.fromkeys(t.contender for t in sc.trials):
        ts = [t for t in sc.trials if t.contender == label]
        mine = [p for p in points if p.contender == label]
        rate = rate_spread(ts, mine)
        n = ts[0].workers
        at = next((p for p in mine if rate.median is not None and p.rate == rate.median), None)
        per = "-" if rate.median is None else f"{rate.median / n:,.0f}"
        rows.append(
            [
                str(n) if scale else label,
                cell(rate, "rate"),
                cell(at.cpu_s_per_1k if at else None, "cpu"),
                *([per] if scale else []),
                stops.get(label, "-"),
            ]
        )
    return [
        markdown_table(rows),
        "",
        "A ramp stopped at the ceiling (`ceiling`) only bounds the rate from below.",
    ]


def scenario_markdown(result: BenchResult) -> list[str]:
    """The scenario sections, in run order."""
    out: list[str] = []
    budget = float(result.params.get("budget_ms") or 0.0)
    for sc in result.scenarios:
        out += [f"## {sc.title}", ""]
        if sc.name == "overload":
            out += _overload(sc)
        elif sc.name in ("mixed", "mixed-overload"):
            out += _mixed(sc)
        elif sc.name == "heavy":
            out += _heavy(sc)
        elif sc.name in ("scale", "capacity"):
            out += _ramp(sc, budget)
        out.append("")
        out += [f"- {n}" for n in sc.notes]
        if sc.notes:
            out.append("")
    return out
