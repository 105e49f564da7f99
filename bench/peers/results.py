"""The figures of a side-by-side run: per trial, per contender run, and the summary.

A *trial* is one replay (a load) against one contender process; a *contender run* is one
repeat of one contender (its trials at 1x and 10x); the *curve* is every fixed-rate step
of every contender, its *points* the per-rate verdicts over interleaved repeats
(``bench.peers.verdict``); *scenarios* hold the overload, mixed-deadline, heavy-model and
scale-out trials; the *summary* gives each figure's min / median / max over the repeats. ``sustainable`` (per trial) is the ramp's
test: e2e p99 within the budget, nothing lost, at least 99 % of inputs decided ``ok`` in
budget (so weir's ``expired``/``shed`` decisions count against it), and the harness's
sender keeping the offered rate (otherwise the trial measured the harness, not the
contender; a stall it recovers from only shows as latency, charged like any other).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from bench.peers.base import WEIRS

RESULT_FORMAT = "weir.bench.peers/1"
MIN_ATTAINMENT = 0.99
MIN_SEND_RATIO = 0.95
"""A sender that achieved less than this share of the offered rate limited the trial."""
LONG_HOLD_MS = 50.0
"""A trial whose weir loop was held this long at least once is marked ``S`` (the same
50 ms as the sender's own ``L`` mark)."""


class Trial(msgspec.Struct, kw_only=True):
    """One replay against one contender."""

    contender: str
    load: str
    """``1x``, ``10x`` or ``rate`` (a ramp step)."""
    repeat: int
    offered_rate: float | None
    """Events per second the schedule asked for."""
    events: int
    """Inputs the broker acknowledged."""
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    attainment: float | None = None
    lost: int = 0
    duplicated: int = 0
    by_status: dict[str, int] = msgspec.field(default_factory=dict)
    unmatched: int = 0
    sender_behind: bool = False
    """The runner's flag: the sender was late by more than 50 ms at least once."""
    harness_limited: bool = False
    """The sender could not keep the offered rate (achieved < 95 % of intended): the
    trial measured the harness, not the contender."""
    sender_lag_max_ms: float = 0.0
    throughput: float = 0.0
    cpu_s: float | None = None
    cpu_s_per_1k: float | None = None
    """Contender CPU (user + system) per 1,000 inputs over the trial, from /proc."""
    harness_cpu_s_per_1k: float | None = None
    """The replay harness's own CPU per 1,000 inputs (sender + decision reader)."""
    broker_cpu_s_per_1k: float | None = None
    """The Kafka broker's CPU per 1,000 inputs (when this run started the broker)."""
    peak_rss_mib: float | None = None
    """The contender's ``VmHWM`` at the end of the trial (since its start)."""
    loadavg: tuple[float, float] = (0.0, 0.0)
    """1-minute load average before and after (the box is shared)."""
    stages_p99_ms: dict[str, float | None] = msgspec.field(default_factory=dict)
    batch_mean: float | None = None
    sustainable: bool = False
    """Sustainable at the SLO budget (see the module docstring)."""
    result_file: str = ""
    notes: list[str] = msgspec.field(default_factory=list)
    dead_lettered: int = 0
    misses: int = 0
    """Inputs that missed (lost, expired, shed, error, late, over budget)."""
    planned_s: float | None = None
    """The offered load's planned duration, s (goodput's denominator)."""
    classes: dict[str, ClassFigures] = msgspec.field(default_factory=dict)
    """Input topic -> its class's figures (the mixed-deadline scenario)."""
    workers: int = 1
    """Contender processes in the consumer group (``--workers``)."""
    loop_held_ms: float | None = None
    """weir only (one worker): its event loop was held at least this long once during the
    trial (``bench.peers.opsprobe``); None: not read."""
    gc_pause_ms: float | None = None
    """weir only (one worker): its longest garbage collection was at least this long."""
    mean_batch: float | None = None
    """weir only (one worker): rows per engine batch during the trial."""


class ClassFigures(msgspec.Struct, kw_only=True):
    """One deadline class (input topic) of a mixed-deadline trial."""

    topic: str
    budget_ms: float
    inputs: int
    good: int
    """Inputs decided ``ok`` within this class's budget."""
    attainment: float | None
    p99_ms: float | None
    lost: int
    stages_p99_ms: dict[str, float] = msgspec.field(default_factory=dict)
    """Each stage's p99 over this class's decided inputs (``replay.measure``: **stages**),
    where the class's tail is spent."""


class CurvePoint(msgspec.Struct, frozen=True, kw_only=True):
    """One contender at one offered rate over its interleaved repeats (``verdict``)."""

    contender: str
    rate: float
    repeats: int
    p50_ms: Spread
    p99_ms: Spread
    p999_ms: Spread
    attainment: Spread
    lost: Spread
    cpu_s_per_1k: Spread
    sustainable: bool
    """The median of the repeats meets the SLO."""
    harness_limited: int = 0
    """Repeats whose sender fell short of the offered rate (the harness was the limit)."""
    sender_lagged: int = 0
    """Repeats whose sender was late by more than the runner's threshold (50 ms) at least
    once: its latencies include the harness's own stalls (coordinated-omission charged)."""
    service_held: int = 0
    """Repeats where weir's own event loop was held ``LONG_HOLD_MS`` or more at least once
    (``Trial.loop_held_ms``): its process, not the broker, stalled there."""
    host_limited: bool = False
    """The echo floor was not sustainable at this rate or below (host or broker limit)."""


class Scenario(msgspec.Struct, kw_only=True):
    """A scheduling-policy scenario run side by side (overload, mixed deadlines, heavy
    model, scale-out): its trials and what it was told."""

    name: str
    title: str
    trials: list[Trial] = msgspec.field(default_factory=list)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    notes: list[str] = msgspec.field(default_factory=list)


class Ramp(msgspec.Struct, kw_only=True):
    """The fixed-rate ramp of one contender in one repeat (results written before the
    interleaved curve, ``BenchResult.curve``, replaced it; read for ``--report``)."""

    steps: list[Trial] = msgspec.field(default_factory=list)
    max_rate: float | None = None
    """Highest sustainable rate found (events/s); None when even the first step failed."""
    limited_by: str = ""
    """Why the ramp stopped: ``slo`` (a step was not sustainable), ``harness`` (the
    sender fell behind with nothing lost), ``ceiling`` (``ramp_max`` passed)."""


class ContenderRun(msgspec.Struct, kw_only=True):
    """One repeat of one contender."""

    contender: str
    repeat: int
    trials: list[Trial] = msgspec.field(default_factory=list)
    ramp: Ramp = msgspec.field(default_factory=Ramp)
    peak_rss_mib: float | None = None
    """Largest ``VmHWM`` of its processes over the whole run."""
    startup_s: float | None = None
    """Process start to the first warm-up decision back."""
    restarts: int = 0
    error: str | None = None


class Spread(msgspec.Struct, kw_only=True):
    """A figure over the repeats."""

    min: float | None
    median: float | None
    max: float | None
    n: int


def spread(values: Iterable[float | None]) -> Spread:
    """Min / median / max of the values that are not None."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return Spread(min=None, median=None, max=None, n=0)
    return Spread(min=min(vals), median=statistics.median(vals), max=max(vals), n=len(vals))


def overlap(a: str, sa: Spread, b: str, sb: Spread) -> str:
    """``; the repeats overlap (a lo-hi ms, b lo-hi ms)`` where the two spreads of at
    least two repeats each overlap, so the order of their medians is within this run's
    noise (the verdict still goes by the medians), else ''."""
    if sa.n < 2 or sb.n < 2:
        return ""
    if sa.min is None or sa.max is None or sb.min is None or sb.max is None:
        return ""
    if sa.max < sb.min or sb.max < sa.min:
        return ""
    return (
        f"; the repeats overlap ({a} {sa.min:.2f}-{sa.max:.2f} ms, "
        f"{b} {sb.min:.2f}-{sb.max:.2f} ms)"
    )


class Check(msgspec.Struct, kw_only=True):
    """One expectation and how the run met it."""

    name: str
    expected: str
    actual: float | None
    passed: bool
    detail: str = ""
    unit: str = "{:.2f}x"
    """How ``actual`` prints (a ratio by default)."""
    undecided: str = ""
    """Why this run cannot decide the check (then ``passed`` is False and the report says
    ``undecided``, not ``NOT met``): e.g. a figure that is only a bound."""


class ProfileSummary(msgspec.Struct, kw_only=True):
    """Where one contender's CPU went during a profiled trial (py-spy samples)."""

    contender: str
    rate: float
    seconds: float
    samples: int
    raw_file: str
    categories: dict[str, float]
    """Category -> share of on-CPU samples (inclusive, first matching frame wins)."""
    top_self: list[tuple[str, float]]
    """Leaf frames with the largest share of samples."""
    trial: Trial | None = None


class BenchResult(msgspec.Struct, kw_only=True):
    """Everything ``python -m bench.peers`` measured."""

    format: str = RESULT_FORMAT
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    contenders: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Name -> title, how, library versions."""
    runs: list[ContenderRun] = msgspec.field(default_factory=list)
    summary: dict[str, dict[str, Spread]] = msgspec.field(default_factory=dict)
    """Contender -> figure -> spread over repeats."""
    checks: list[Check] = msgspec.field(default_factory=list)
    profiles: list[ProfileSummary] = msgspec.field(default_factory=list)
    curve: list[Trial] = msgspec.field(default_factory=list)
    """Every step of the interleaved throughput-latency curve (all contenders)."""
    points: list[CurvePoint] = msgspec.field(default_factory=list)
    """The curve: one point per contender and offered rate (``verdict.points_of``)."""
    curve_stop: dict[str, str] = msgspec.field(default_factory=dict)
    """Contender -> why its ramp stopped: ``slo``, ``harness``, ``ceiling``, ``error: ...``."""
    scenarios: list[Scenario] = msgspec.field(default_factory=list)
    inproc_us_per_event: dict[str, float] = msgspec.field(default_factory=dict)
    """Contender -> CPU microseconds per event of its decision path without Kafka
    (``bench.peers.inproc``)."""
    inproc_ratios: list[float] = msgspec.field(default_factory=list)
    """weir's in-process CPU over the fixed window's in each repeat (the paths taking
    turns within it; ``inproc.measure_paired``)."""
    inproc_loop: str = ""
    """The event loop the in-process paths ran on (empty: asyncio, in results before it
    was recorded)."""
    notes: list[str] = msgspec.field(default_factory=list)


FIGURES: tuple[str, ...] = (
    "max_rate",
    "p50_1x",
    "p99_1x",
    "p999_1x",
    "attainment_1x",
    "p50_10x",
    "p99_10x",
    "p999_10x",
    "attainment_10x",
    "lost",
    "duplicated",
    "cpu_s_per_1k_10x",
    "harness_cpu_s_per_1k_10x",
    "broker_cpu_s_per_1k_10x",
    "peak_rss_mib",
)


def _trial(run: ContenderRun, load: str) -> Trial | None:
    return next((t for t in run.trials if t.load == load), None)


def run_figures(run: ContenderRun) -> dict[str, float | None]:
    """The table's figures of one contender run."""
    t1 = _trial(run, "1x")
    t10 = _trial(run, "10x")
    out: dict[str, float | None] = {"max_rate": run.ramp.max_rate}
    for tag, t in (("1x", t1), ("10x", t10)):
        out[f"p50_{tag}"] = t.p50_ms if t else None
        out[f"p99_{tag}"] = t.p99_ms if t else None
        out[f"p999_{tag}"] = t.p999_ms if t else None
        out[f"attainment_{tag}"] = t.attainment if t else None
    done = [t for t in run.trials if t is not None]
    out["lost"] = float(sum(t.lost for t in done)) if done else None
    out["duplicated"] = float(sum(t.duplicated for t in done)) if done else None
    out["cpu_s_per_1k_10x"] = t10.cpu_s_per_1k if t10 else None
    out["harness_cpu_s_per_1k_10x"] = t10.harness_cpu_s_per_1k if t10 else None
    out["broker_cpu_s_per_1k_10x"] = t10.broker_cpu_s_per_1k if t10 else None
    out["peak_rss_mib"] = run.peak_rss_mib
    return out


def summarize(
    runs: Iterable[ContenderRun], max_rates: dict[str, Spread] | None = None
) -> dict[str, dict[str, Spread]]:
    """Contender -> figure -> spread over its repeats (contenders in first-seen order);
    ``max_rates`` (the interleaved curve's verdicts) replace the runs' own ramps."""
    by: dict[str, list[dict[str, float | None]]] = {}
    for run in runs:
        by.setdefault(run.contender, []).append(run_figures(run))
    out = {name: {f: spread(r[f] for r in rows) for f in FIGURES} for name, rows in by.items()}
    for name, rate in (max_rates or {}).items():
        out.setdefault(name, {f: spread(()) for f in FIGURES})["max_rate"] = rate
    return out


def check_name(target: str, weir: str) -> str:
    """A target's check name for one weir configuration (the default keeps the bare name)."""
    return target if weir == "weir" else f"{target} ({weir})"


BOUND_STOPS = {"harness": "the harness's limit", "ceiling": "the ramp's ceiling"}
"""Ramp stops whose max rate is only a lower bound on the contender's capacity (the
contender itself did not fail), and how the verdicts name them."""


def expectations(
    summary: dict[str, dict[str, Spread]],
    *,
    stops: Mapping[str, str] | None = None,
    rate_factor: float = 3.0,
    p99_factor: float = 1.1,
) -> list[Check]:
    """For each weir configuration in ``summary`` (``base.WEIRS``): its max rate >=
    ``rate_factor`` x the best peer's (a model contender that is not weir); its 1x and 10x
    p99 <= ``p99_factor`` x the echo floor's (#14: 1.1x) and its 10x p99 <= the best
    peer's (the 1x one is ``normal_load_p99_vs_best_peer``); medians over repeats.

    ``stops``: why each contender's ramp stopped (``BenchResult.curve_stop``). A ramp that
    stopped at the harness's limit or the ceiling (``BOUND_STOPS``) bounds that max rate
    from below only, so the rate check is undecided where the bound is what decides it:
    the best peer's rate is a bound and weir reaches the factor, or weir's is and it does
    not (both bounds: either way)."""
    checks: list[Check] = []
    for name in (n for n in summary if n in WEIRS):
        checks += _expectations_of(name, summary, stops or {}, rate_factor, p99_factor)
    return checks


def _rate_bound(name: str, stops: Mapping[str, str], rate: float | None) -> str:
    """Why ``name``'s max rate is only a lower bound (``BOUND_STOPS``), else ''."""
    where = BOUND_STOPS.get(stops.get(name, ""))
    if where is None:
        return ""
    return f"{name}'s ramp stopped at {where} ({rate or 0:,.0f}/s), not at its own"


def _expectations_of(
    name: str,
    summary: dict[str, dict[str, Spread]],
    stops: Mapping[str, str],
    rate_factor: float,
    p99_factor: float,
) -> list[Check]:
    checks: list[Check] = []
    weir = summary[name]
    others = {n: s["max_rate"].median for n, s in summary.items() if n not in WEIRS | {"echo"}}
    w_rate = weir["max_rate"].median
    known = {n: r for n, r in others.items() if r}
    if others and (w_rate is not None or known):
        undecided = ""
        if known:
            best = max(known, key=lambda n: known[n] or 0.0)
            ratio: float | None = (w_rate or 0.0) / known[best]
            detail = f"{name} {w_rate or 0:,.0f}/s vs {best} {known[best]:,.0f}/s"
            # The side whose bound decides: the peer's where weir reaches the factor (the
            # peer may sustain more), weir's where it does not (weir may sustain more).
            undecided = (
                _rate_bound(best, stops, known[best])
                if ratio >= rate_factor
                else _rate_bound(name, stops, w_rate)
            )
        else:
            ratio = None
            detail = f"{name} {w_rate or 0:,.0f}/s; no other contender sustained the first step"
        checks.append(
            Check(
                name=check_name("max_rate_vs_best_peer", name),
                expected=f">= {rate_factor:g}x the best other contender",
                actual=ratio,
                passed=(ratio is None or ratio >= rate_factor) and not undecided,
                detail=detail,
                undecided=undecided,
            )
        )
    echo = summary.get("echo")
    for speed in ("1x", "10x"):
        w_p99 = weir[f"p99_{speed}"].median
        e_p99 = None if echo is None else echo[f"p99_{speed}"].median
        if w_p99 is not None and e_p99:
            ratio = w_p99 / e_p99
            checks.append(
                Check(
                    name=check_name(f"p99_{speed}_vs_echo", name),
                    expected=f"<= {p99_factor:g}x the echo floor's {speed} p99",
                    actual=ratio,
                    passed=ratio <= p99_factor,
                    detail=f"{name} {w_p99:.2f} ms vs echo {e_p99:.2f} ms"
                    + overlap(name, weir[f"p99_{speed}"], "echo", echo[f"p99_{speed}"]),
                )
            )
    w_p99 = weir["p99_10x"].median
    peers = {
        n: s["p99_10x"].median
        for n, s in summary.items()
        if n not in WEIRS | {"echo"} and s["p99_10x"].median is not None
    }
    if w_p99 is not None and peers:
        best = min(peers, key=lambda n: peers[n] or 0.0)
        b_p99 = peers[best] or 0.0
        ratio = w_p99 / b_p99 if b_p99 > 0 else None
        checks.append(
            Check(
                name=check_name("p99_10x_vs_best_peer", name),
                expected="<= the best peer's 10x p99",
                actual=ratio,
                passed=ratio is not None and ratio <= 1.0,
                detail=f"{name} {w_p99:.2f} ms vs {best} {b_p99:.2f} ms"
                + overlap(name, weir["p99_10x"], best, summary[best]["p99_10x"]),
            )
        )
    return checks


_encoder = msgspec.json.Encoder()


def encode_result(result: BenchResult) -> bytes:
    """The result as indented JSON."""
    return msgspec.json.format(_encoder.encode(result), indent=1)


def decode_result(data: bytes) -> BenchResult:
    """A result written by ``encode_result``."""
    return msgspec.json.decode(data, type=BenchResult)
