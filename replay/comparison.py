"""The side-by-side comparison of two runs: key figures, their difference and its ratio."""

from __future__ import annotations

from replay.report import fmt_ms, text_table
from replay.results import RunResult

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
    return "\n".join([*head, *text_table(rows, [False, True, True, True, True])])
