"""Service-level objectives: the SLO file, and the verdict of a run against it.

An SLO file is TOML::

    budget_ms = 5.0          # required: end-to-end budget of one decision, from its
                             # intended send time (attainment counts ok decisions within it)
    min_attainment = 0.99    # optional: fraction of inputs decided ok within budget_ms
    max_lost = 0             # optional, default 0: inputs with no decision at all
    max_duplicates = 0       # optional: decisions beyond the first per input
    max_sender_lag_ms = 50   # optional: the replay's own sender must keep to its schedule
    latency = "e2e"          # optional: which latency [percentiles] limit: e2e (default,
                             # coordinated-omission corrected), raw, source

    [percentiles]            # optional: upper limits in ms
    p50 = 2.0
    p99 = 5.0
    "p99.9" = 10.0           # or p99_9

Unknown keys and bad values are errors naming the file, the key and the value
(:class:`SloError`). ``evaluate`` turns a run's figures into a :class:`Verdict` with one
:class:`Check` per objective; the run passes when every check does. Without a file the
default SLO checks only ``max_lost = 0``.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Final

import msgspec

from replay.errors import ReplayError
from replay.results import LATENCIES, Check, Completeness, LatencySummary, SenderStats, Verdict

_KEYS: Final = (
    "budget_ms",
    "latency",
    "max_duplicates",
    "max_lost",
    "max_sender_lag_ms",
    "min_attainment",
    "percentiles",
)
DEFAULT_MIN_ATTAINMENT: Final = 0.99
"""What ``weir replay run --budget-ms`` asks of attainment unless ``--min-attainment`` says."""
_PCT_KEY: Final = re.compile(r"^p(\d{1,2})(?:[._](\d{1,6}))?$")


class SloError(ReplayError):
    """An SLO file could not be read or says something impossible."""


class Slo(msgspec.Struct, frozen=True, kw_only=True):
    """The objectives of one run (see the module docstring)."""

    budget_ms: float
    percentiles: tuple[tuple[float, float], ...] = ()
    """``(percentile, limit_ms)`` pairs, ascending by percentile."""
    min_attainment: float | None = None
    max_lost: int = 0
    max_duplicates: int | None = None
    max_sender_lag_ms: float | None = None
    latency: str = "e2e"
    source: str | None = None
    """The file it came from (None for the default)."""

    @classmethod
    def default(cls, budget_ms: float) -> Slo:
        """The SLO without a file: nothing may be lost."""
        return cls(budget_ms=budget_ms, source="default (nothing lost)")


def _number(path: Path, key: str, value: Any, *, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise SloError(f"SLO file {path}: {key} must be {what}, got {value!r}")
    v = float(value)
    if not low <= v <= high:
        raise SloError(f"SLO file {path}: {key} must be {what}, got {value!r}")
    return v


def _count(path: Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SloError(f"SLO file {path}: {key} must be an integer >= 0, got {value!r}")
    return value


def parse_percentile_key(key: str) -> float | None:
    """``"p99"`` -> 99.0, ``"p99.9"``/``"p99_9"`` -> 99.9; None when not of that form."""
    m = _PCT_KEY.match(key)
    if m is None:
        return None
    p = float(f"{m.group(1)}.{m.group(2) or '0'}")
    return p if 0.0 < p < 100.0 else None


def parse_slo(text: str, path: str | Path = "<string>") -> Slo:
    """Parse SLO TOML ``text`` (``path`` names it in errors)."""
    p = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SloError(f"SLO file {p} is not valid TOML: {exc}") from exc
    for key in data:
        if key not in _KEYS and parse_percentile_key(key) is not None:
            raise SloError(f"SLO file {p}: {key} belongs in the [percentiles] table")
        if key not in _KEYS:
            raise SloError(f"SLO file {p}: unknown key {key!r} (known: {', '.join(_KEYS)})")
    if "budget_ms" not in data:
        raise SloError(
            f"SLO file {p}: budget_ms is required (the end-to-end budget of one decision, in ms)"
        )
    positive_ms = "a number of ms > 0"
    budget = _number(p, "budget_ms", data["budget_ms"], low=1e-6, high=1e9, what=positive_ms)
    limits: list[tuple[float, float]] = []
    table = data.get("percentiles", {})
    if not isinstance(table, dict):
        raise SloError(f"SLO file {p}: percentiles must be a table of pN = ms, got {table!r}")
    for key, value in table.items():
        pct = parse_percentile_key(key)
        if pct is None:
            raise SloError(
                f"SLO file {p}: percentile key {key!r} is not pN with 0 < N < 100 "
                '(write p99, p99_9 or "p99.9")'
            )
        ms = _number(p, f"percentiles.{key}", value, low=1e-6, high=1e9, what=positive_ms)
        limits.append((pct, ms))
    limits.sort()
    attainment = None
    if "min_attainment" in data:
        attainment = _number(
            p,
            "min_attainment",
            data["min_attainment"],
            low=0.0,
            high=1.0,
            what="a fraction in [0, 1]",
        )
    lag = None
    if "max_sender_lag_ms" in data:
        lag = _number(
            p, "max_sender_lag_ms", data["max_sender_lag_ms"], low=0.0, high=1e9, what="ms >= 0"
        )
    latency = data.get("latency", "e2e")
    if latency not in LATENCIES:
        raise SloError(
            f"SLO file {p}: latency must be one of {', '.join(LATENCIES)}, got {latency!r}"
        )
    return Slo(
        budget_ms=budget,
        percentiles=tuple(limits),
        min_attainment=attainment,
        max_lost=_count(p, "max_lost", data.get("max_lost", 0)),
        max_duplicates=(
            _count(p, "max_duplicates", data["max_duplicates"])
            if "max_duplicates" in data
            else None
        ),
        max_sender_lag_ms=lag,
        latency=latency,
        source=str(p),
    )


def load_slo(path: str | Path) -> Slo:
    """Read and parse the SLO file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SloError(f"cannot read SLO file {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SloError(f"SLO file {p} is not UTF-8 text: {exc.reason}") from exc
    return parse_slo(text, p)


def evaluate(
    slo: Slo,
    *,
    latency: dict[str, LatencySummary],
    completeness: Completeness,
    sender: SenderStats,
) -> Verdict:
    """Check a run's figures against ``slo``: one ``Check`` per objective."""
    checks: list[Check] = []
    dist = latency.get(slo.latency, LatencySummary(count=0))
    for pct, limit in slo.percentiles:
        actual = dist.pct(pct)
        beyond = dist.beyond_range(pct)
        detail = "no decisions to measure" if actual is None else ""
        if beyond:
            detail = f"beyond the histogram's {dist.range_max_ms:,.0f} ms range: at least this"
        checks.append(
            Check(
                name=f"{slo.latency} p{pct:g}",
                limit=limit,
                actual=actual,
                passed=actual is not None and actual <= limit and not beyond,
                unit="ms",
                detail=detail,
                lower_bound=beyond,
            )
        )
    if slo.min_attainment is not None:
        att = completeness.attainment
        checks.append(
            Check(
                name="attainment",
                limit=slo.min_attainment,
                actual=att,
                passed=att is not None and att >= slo.min_attainment,
                op=">=",
                detail=f"ok within {slo.budget_ms:g} ms",
            )
        )
    checks.append(
        Check(
            name="lost",
            limit=slo.max_lost,
            actual=completeness.lost,
            passed=completeness.lost <= slo.max_lost,
        )
    )
    if slo.max_duplicates is not None:
        checks.append(
            Check(
                name="duplicates",
                limit=slo.max_duplicates,
                actual=completeness.duplicated,
                passed=completeness.duplicated <= slo.max_duplicates,
            )
        )
    if slo.max_sender_lag_ms is not None:
        lag = sender.lag.max_ms or 0.0
        beyond = sender.lag.beyond_range()
        checks.append(
            Check(
                name="sender lag max",
                limit=slo.max_sender_lag_ms,
                actual=lag,
                passed=lag <= slo.max_sender_lag_ms and not beyond,
                unit="ms",
                lower_bound=beyond,
            )
        )
    return Verdict(slo_file=slo.source, passed=all(c.passed for c in checks), checks=checks)
