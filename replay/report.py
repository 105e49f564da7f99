"""Reports of a replay run: the text summary and verdict table, and a self-contained HTML
page with inline SVG plots (``replay.charts``).

The HTML needs nothing from the network (no scripts, no fonts, no CDN). ``weir replay
report`` and ``compare`` are in ``replay.commands``; the comparison table in
``replay.comparison``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from replay.charts import STAGE_LABELS, charts
from replay.errors import ReplayError
from replay.results import LATENCIES, STAGES, LatencySummary, RunResult, Verdict, write_result
from replay.svg import Num

# -- text -----------------------------------------------------------------------------------

NOT_JUDGED = "attainment not judged: the SLO sets no min_attainment"


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


def fmt_pct(s: LatencySummary, p: float | None) -> str:
    """Percentile ``p`` of ``s`` (the max when None) in ms, ``>`` before it when it is only a
    lower bound (it fell on values beyond the histogram's range)."""
    value = s.max_ms if p is None else s.pct(p)
    return (">" if s.beyond_range(p) else "") + fmt_ms(value)


def beyond_note(s: LatencySummary) -> str:
    """``"> 60 s: 300 of 300"`` when values fell beyond the histogram's range, else ``""``."""
    if not s.clamped_high:
        return ""
    return f"> {s.range_max_ms / 1000:g} s: {s.clamped_high:,} of {s.count:,}"


def _pcts(s: LatencySummary) -> str:
    if s.count == 0:
        return "no data"
    text = (
        f"p50 {fmt_pct(s, 50)}  p99 {fmt_pct(s, 99)}  p99.9 {fmt_pct(s, 99.9)}  "
        f"max {fmt_pct(s, None)} ms"
    )
    note = beyond_note(s)
    return f"{text}  [{note}]" if note else text


def text_table(rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> list[str]:
    """Rows of cells as aligned text lines (``right``: which columns align right)."""
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
            actual = f"{'>' if c.lower_bound else ''}{fmt_ms(c.actual)}{unit}"
        else:
            limit = f"{c.op} {c.limit:,.0f}"
            actual = "-" if c.actual is None else f"{c.actual:,.0f}"
        rows.append([c.name, limit, actual, "pass" if c.passed else "FAIL"])
    lines = [f"verdict: {head}{src}", *text_table(rows, [False, True, True, False])]
    lines += [f"  {c.name}: {c.detail}" for c in verdict.checks if c.lower_bound]
    if not any(c.name == "attainment" for c in verdict.checks):
        lines.append(f"  {NOT_JUDGED}")
    return "\n".join(lines)


def format_summary(r: RunResult) -> str:
    """The key figures of a run, one line each."""
    c, cfg, s = r.completeness, r.config, r.sender
    speed = f"{cfg.rate:g}/s" if cfg.rate is not None else f"{cfg.speed}x"
    st = c.by_status
    att = "-" if c.attainment is None else f"{c.attainment:.3%}"
    stage_p99 = "  ".join(
        f"{STAGE_LABELS[k]} {fmt_pct(r.stages[k], 99)}" for k in STAGES if r.stages[k].count
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
        f"  sender lag     p99 {fmt_pct(s.lag, 99)} ms  max {fmt_pct(s.lag, None)} ms"
        + (f"  BEHIND (> {s.threshold_ms:g} ms)" if s.behind else "  on schedule"),
    ]
    lines += [f"  note: {n}" for n in cfg.notes]
    return "\n".join(lines)


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


def print_outcome(r: RunResult, *, results: Path | None, html_page: Path | None) -> int:
    """Print the summary and verdict, write the results JSON and the HTML report where
    asked (saying where), and return the exit status: 0 when the SLO passed, else 1."""
    print(format_summary(r))
    assert r.verdict is not None
    print(format_verdict(r.verdict))
    if results is not None:
        print(f"results: {write_result(r, results)}")
    if html_page is not None:
        print(f"report:  {write_html(r, html_page)}   (open it in a browser)")
    return 0 if r.verdict.passed else 1


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


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
            f"<td>{'&gt;' if ch.lower_bound else ''}{_esc(_val(ch.actual, ch))}</td>"
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
        if not any(ch.name == "attainment" for ch in v.checks):
            verdict += f'<p class="note">{_esc(NOT_JUDGED)}</p>'

    summaries = [
        *((k, r.latency[k]) for k in LATENCIES),
        *((STAGE_LABELS[k], r.stages[k]) for k in STAGES),
        ("sender lag", r.sender.lag),
    ]
    lat_rows = "".join(
        f"<tr><td>{_esc(name)}</td><td>{s.count:,}</td>"
        + "".join(f"<td>{fmt_pct(s, p)}</td>" for p in (50, 90, 99, 99.9, 99.99))
        + f"<td>{fmt_pct(s, None)}</td></tr>"
        for name, s in summaries
    )
    beyond = "".join(
        f'<p class="note">{_esc(name)}: {_esc(beyond_note(s))} beyond the histogram\'s range; '
        "figures marked &gt; are lower bounds</p>"
        for name, s in summaries
        if s.clamped_high
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
        f"</table>{beyond}<p>e2e: decision arrival minus the intended send time (coordinated-omission "
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
