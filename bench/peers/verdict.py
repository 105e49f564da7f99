"""Verdicts a noisy host cannot fool: interleaved repeats, median rules, marked limits.

The throughput-latency curve runs every offered rate ``repeats`` times per contender,
*interleaved*: for one rate, repeat 1 runs each contender once, then repeat 2 in a
rotated order, and so on (``interleaved``), so a noisy minute on a shared host lands on
every contender rather than on one. A rate is **sustainable** for a contender when the
*median* of its repeats meets the SLO (``point_of``): median e2e p99 within the budget,
median attainment >= ``MIN_ATTAINMENT``, median lost 0 and the sender keeping up in at
least half the repeats. The spread (min / median / max of p50, p99, p99.9) is reported
with each point.

Limits are marked, not hidden: a point is **harness-limited** when the sender fell short
of the offered rate in any repeat (the harness, not the contender, was measured there),
and **host-limited** when the echo floor (no model at all) was not sustainable at that
rate or below it (``mark_host_limits``): past that rate the broker or the host is the
limit for everyone.

The scenarios' figures come from the same trials: goodput (inputs decided ``ok``
within their deadline per second of offered load, ``goodput``) and per-class
attainment on the mixed-deadline service (``class_figures``). ``scenario_checks`` states
each of the issue's targets as met or not met with its figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from bench.peers.base import WEIRS
from bench.peers.results import (
    LONG_HOLD_MS,
    MIN_ATTAINMENT,
    BenchResult,
    Check,
    ClassFigures,
    CurvePoint,
    Spread,
    Trial,
    check_name,
    expectations,
    overlap,
    spread,
)
from replay.results import STAGES
from schemas.decision import Status

ECHO = "echo"
"""The floor contender: its failures mark the host or broker limit."""

_STATUS_CODE = {s: i for i, s in enumerate(Status)}
"""``replay.measure.Recorder.status`` codes: the index into ``Status``; -1 no outcome yet,
``len(Status)`` a dead letter."""


def interleaved(names: Sequence[str], repeats: int, *, step: int = 0) -> list[tuple[int, str]]:
    """(repeat, contender) in run order for one offered rate: each repeat runs every
    contender once, rotated by one per repeat (and by ``step``, the rate's index)."""
    out: list[tuple[int, str]] = []
    n = len(names)
    for r in range(1, repeats + 1):
        shift = (r - 1 + step) % n if n else 0
        out += [(r, name) for name in [*names[shift:], *names[:shift]]]
    return out


def _median(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def point_of(trials: Sequence[Trial], *, budget_ms: float) -> CurvePoint:
    """One contender's point at one offered rate from its repeats (the median rule)."""
    if not trials:
        raise ValueError("a curve point needs at least one trial")
    first = trials[0]
    p99 = _median(t.p99_ms for t in trials)
    attain = _median(t.attainment for t in trials)
    lost = _median(float(t.lost) for t in trials)
    kept_up = sum(not t.harness_limited for t in trials)
    sustainable = (
        p99 is not None
        and p99 <= budget_ms
        and attain is not None
        and attain >= MIN_ATTAINMENT
        and lost == 0
        and 2 * kept_up >= len(trials)
    )
    return CurvePoint(
        contender=first.contender,
        rate=float(first.offered_rate or 0.0),
        repeats=len(trials),
        p50_ms=spread(t.p50_ms for t in trials),
        p99_ms=spread(t.p99_ms for t in trials),
        p999_ms=spread(t.p999_ms for t in trials),
        attainment=spread(t.attainment for t in trials),
        lost=spread(float(t.lost) for t in trials),
        cpu_s_per_1k=spread(t.cpu_s_per_1k for t in trials),
        sustainable=sustainable,
        harness_limited=sum(t.harness_limited for t in trials),
        sender_lagged=sum(t.sender_behind for t in trials),
        service_held=sum(held(t) for t in trials),
    )


def held(t: Trial) -> bool:
    """Whether weir's loop was held ``LONG_HOLD_MS`` or more during ``t`` (False when not
    read: a peer, or several workers)."""
    return t.loop_held_ms is not None and t.loop_held_ms >= LONG_HOLD_MS


def points_of(steps: Iterable[Trial], *, budget_ms: float) -> list[CurvePoint]:
    """Every (contender, rate) point of the curve's steps, contenders in the order they
    first ran (the table's), then by rate."""
    groups: dict[tuple[str, float], list[Trial]] = {}
    first: dict[str, int] = {}
    for t in steps:
        first.setdefault(t.contender, len(first))
        groups.setdefault((t.contender, round(t.offered_rate or 0.0)), []).append(t)
    order = sorted(groups, key=lambda k: (first[k[0]], k[1]))
    return [point_of(groups[k], budget_ms=budget_ms) for k in order]


def mark_host_limits(points: list[CurvePoint]) -> list[CurvePoint]:
    """Mark every point at or above the lowest rate the echo floor failed (or beyond the
    highest rate the echo was measured at when its ramp stopped on a failure)."""
    echo = [p for p in points if p.contender == ECHO]
    failed = [p.rate for p in echo if not p.sustainable]
    if not failed:
        return points
    floor = min(failed)
    return [msgspec.structs.replace(p, host_limited=p.rate >= floor) for p in points]


def max_rate(points: Iterable[CurvePoint]) -> float | None:
    """The highest sustainable rate below the lowest unsustainable one (None: none)."""
    pts = sorted((p.rate, p.sustainable) for p in points)
    hi = next((r for r, ok in pts if not ok), None)
    passing = [r for r, ok in pts if ok and (hi is None or r < hi)]
    return max(passing) if passing else None


def repeat_max_rates(steps: Iterable[Trial]) -> list[float | None]:
    """Each repeat's own max sustainable rate (per-trial verdicts): the verdict's spread."""
    by: dict[int, list[tuple[float, bool]]] = {}
    for t in steps:
        by.setdefault(t.repeat, []).append((t.offered_rate or 0.0, t.sustainable))
    out: list[float | None] = []
    for r in sorted(by):
        pts = sorted(by[r])
        hi = next((x for x, ok in pts if not ok), None)
        passing = [x for x, ok in pts if ok and (hi is None or x < hi)]
        out.append(max(passing) if passing else None)
    return out


def rate_spread(steps: Sequence[Trial], points: Sequence[CurvePoint]) -> Spread:
    """The verdict (median rule) as the median, each repeat's own max as min and max."""
    per = [r for r in repeat_max_rates(steps) if r is not None]
    verdict = max_rate(points)
    vals = [*per, *([verdict] if verdict is not None else [])]
    return Spread(
        min=min(vals) if vals else None,
        median=verdict,
        max=max(vals) if vals else None,
        n=len(per),
    )


# -- scenario figures ----------------------------------------------------------------------


def good_inputs(trial: Trial) -> int:
    """Inputs decided ``ok`` within their deadline (``attainment``'s numerator)."""
    warming = trial.by_status.get(Status.WARMING.value, 0)
    denom = trial.events - warming - trial.dead_lettered
    return max(0, denom - trial.misses)


def goodput(trial: Trial) -> float | None:
    """In-deadline ``ok`` decisions per second of the offered load (None: no duration)."""
    if not trial.planned_s:
        return None
    return good_inputs(trial) / trial.planned_s


def good_share(trial: Trial) -> float | None:
    """The share of inputs that got an in-deadline ``ok`` (None: no inputs)."""
    return good_inputs(trial) / trial.events if trial.events else None


def mixed_classes(n: int, tight_share: float) -> npt.NDArray[np.int8]:
    """Class per send sequence (1: tight, 0: loose), ``tight_share`` of them tight,
    spread evenly (``floor((i + 1) s) - floor(i s)``)."""
    if not 0.0 <= tight_share <= 1.0:
        raise ValueError(f"tight_share must be within [0, 1], got {tight_share!r}")
    i = np.arange(n, dtype=np.float64)
    return (np.floor((i + 1) * tight_share) - np.floor(i * tight_share)).astype(np.int8)


def class_figures(
    *,
    status: npt.NDArray[np.int8],
    acked: npt.NDArray[np.bool_],
    late: npt.NDArray[np.bool_],
    e2e_ns: npt.NDArray[np.int64],
    classes: npt.NDArray[np.int8],
    topics: Mapping[int, str],
    budgets_ms: Mapping[int, float],
    stages: Mapping[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]] | None = None,
) -> dict[str, ClassFigures]:
    """Per class (by topic): inputs, in-deadline ``ok``, attainment against that class's
    own budget (``replay.measure``'s definition), p99, lost and, given ``stages`` (a
    ``Recorder.stage_spans()``), each stage's p99; arrays indexed by send sequence, as a
    ``Recorder`` holds them."""
    ok_code = _STATUS_CODE[Status.OK]
    warm_code = _STATUS_CODE[Status.WARMING]
    dead_code = len(_STATUS_CODE)
    out: dict[str, ClassFigures] = {}
    for cls, topic in topics.items():
        m = acked & (classes == cls)
        budget_ns = int(budgets_ms[cls] * 1e6)
        good = m & (status == ok_code) & ~late & (e2e_ns <= budget_ns)
        denom = int(np.count_nonzero(m & (status != warm_code) & (status != dead_code)))
        resp = m & (status >= 0) & (status != warm_code) & (status != dead_code)
        lat = e2e_ns[resp]
        out[topic] = ClassFigures(
            topic=topic,
            budget_ms=budgets_ms[cls],
            inputs=int(np.count_nonzero(m)),
            good=int(np.count_nonzero(good)),
            attainment=int(np.count_nonzero(good)) / denom if denom else None,
            p99_ms=float(np.percentile(lat, 99.0)) / 1e6 if lat.size else None,
            lost=int(np.count_nonzero(m & (status == -1))),
            stages_p99_ms={
                name: float(np.percentile(np.maximum(span[resp & known], 0), 99.0)) / 1e6
                for name, (span, known) in (stages or {}).items()
                if np.any(resp & known)
            },
        )
    return out


def _best_peer(values: Mapping[str, float | None]) -> tuple[str, float] | None:
    known = {n: v for n, v in values.items() if n not in WEIRS and n != ECHO and v is not None}
    if not known:
        return None
    best = max(known, key=lambda n: known[n])
    return best, known[best]


def scenario_checks(
    *,
    overload_goodput: Mapping[str, float | None],
    overload_lost: Mapping[str, float | None],
    tight_attainment: Mapping[str, float | None],
    p99_normal: Mapping[str, float | None],
    overload_offered: Mapping[str, float | None] | None = None,
    overload_late: Mapping[str, tuple[int, int]] | None = None,
    tight_overload: Mapping[str, float | None] | None = None,
    p99_spread: Mapping[str, Spread] | None = None,
    goodput_factor: float = 3.0,
    tight_target: float = 0.99,
) -> list[Check]:
    """The issue's targets, for each weir configuration (``base.WEIRS``) with figures:
    under 3x overload its goodput >= 3x the best peer's with nothing lost; under mixed
    deadlines its tight class >= 99 % while every peer falls below, at the mixed
    scenario's speed (``tight_attainment``) and under overload (``tight_overload``, the
    mixed-overload scenario's); at normal load its
    p99 no worse than the best peer's (figures are medians over repeats; a target with no
    figures is not judged). Peers are every contender that is neither weir nor the echo.

    The details name what bounds a verdict on a shared host: each side's offered rate
    (``overload_offered``: with ``--overload-base own`` a contender measured faster is
    offered more), the overload trials whose sender fell behind by more than 50 ms
    (``overload_late``: late, total), the echo floor's own tight-class attainment, and
    whether the 1x p99s' repeats overlap (``p99_spread``: each contender's spread)."""
    checks: list[Check] = []
    over = tight_overload or {}
    named = dict.fromkeys([*overload_goodput, *tight_attainment, *over, *p99_normal])
    context = _Context(overload_offered or {}, overload_late or {}, p99_spread or {})
    for name in (n for n in named if n in WEIRS):
        checks += _scenario_checks_of(
            name,
            overload_goodput,
            overload_lost.get(name),
            tight_attainment,
            over,
            p99_normal,
            goodput_factor,
            tight_target,
            context,
        )
    return checks


class _Context(msgspec.Struct, frozen=True):
    """What ``scenario_checks`` tells beside the figures it judges."""

    offered: Mapping[str, float | None]
    late: Mapping[str, tuple[int, int]]
    p99_spread: Mapping[str, Spread]
    """Contender -> its 1x p99 over the repeats (``overlap`` in the normal-load verdict)."""

    def load(self, name: str, goodput: float) -> str:
        """``weir 436/s of 6,001/s offered`` (the offered rate where known)."""
        offered = self.offered.get(name)
        at = "" if offered is None else f" of {offered:,.0f}/s offered"
        return f"{name} {goodput:,.0f}/s{at}"

    def overlap(self, a: str, b: str) -> str:
        """``results.overlap`` of ``a``'s and ``b``'s 1x p99 (where both are known)."""
        sa, sb = self.p99_spread.get(a), self.p99_spread.get(b)
        return "" if sa is None or sb is None else overlap(a, sa, b, sb)

    def lateness(self, names: Iterable[str]) -> str:
        """``; the sender fell behind ...`` for those of ``names`` whose trials had it."""
        parts = []
        for n in names:
            late, total = self.late.get(n, (0, 0))
            if late:
                parts.append(f"{n} {late}/{total}")
        if not parts:
            return ""
        return (
            "; the harness's sender fell behind by more than 50 ms in "
            + ", ".join(parts)
            + " trial(s): the host, not only the contender, was the limit"
        )


def _scenario_checks_of(
    name: str,
    overload_goodput: Mapping[str, float | None],
    lost: float | None,
    tight_attainment: Mapping[str, float | None],
    tight_overload: Mapping[str, float | None],
    p99_normal: Mapping[str, float | None],
    goodput_factor: float,
    tight_target: float,
    context: _Context,
) -> list[Check]:
    checks: list[Check] = []
    w = overload_goodput.get(name)
    best = _best_peer(overload_goodput)
    if w is not None and best is not None:
        ratio = w / best[1] if best[1] > 0 else None
        ok = (ratio is None or ratio >= goodput_factor) and not lost
        checks.append(
            Check(
                name=check_name("overload_3x_goodput_vs_best_peer", name),
                expected=f">= {goodput_factor:g}x the best peer's goodput, nothing lost",
                actual=ratio,
                passed=ok,
                detail=f"{context.load(name, w)} vs {context.load(*best)}; "
                f"{name} lost {lost or 0:,.0f}{context.lateness((name, best[0]))}",
            )
        )
    checks += _tight_check("mixed_tight_class_attainment", name, tight_attainment, tight_target)
    checks += _tight_check(
        "mixed_overload_tight_class_attainment", name, tight_overload, tight_target
    )
    w = p99_normal.get(name)
    lowest = {n: v for n, v in p99_normal.items() if n not in WEIRS and n != ECHO and v is not None}
    if w is not None and lowest:
        best_name = min(lowest, key=lambda n: lowest[n])
        ratio = w / lowest[best_name] if lowest[best_name] > 0 else None
        checks.append(
            Check(
                name=check_name("normal_load_p99_vs_best_peer", name),
                expected="<= the best peer's 1x p99",
                actual=ratio,
                passed=ratio is not None and ratio <= 1.0,
                detail=f"{name} {w:.2f} ms vs {best_name} {lowest[best_name]:.2f} ms"
                + context.overlap(name, best_name),
            )
        )
    return checks


def _tight_check(
    check: str, name: str, attainment: Mapping[str, float | None], target: float
) -> list[Check]:
    """``name``'s tight class at ``target`` or above while every peer's falls below (none
    where either side has no figures). Short of the target but at or above the echo floor,
    which is short of it too, the check is undecided: the host and the broker, not the
    scheduling, are what kept it below (a weir below the floor is not met)."""
    w = attainment.get(name)
    peers = {n: v for n, v in attainment.items() if n not in WEIRS and n != ECHO}
    if w is None or not peers:
        return []
    below = all(v is not None and v < target for v in peers.values())
    floor = attainment.get(ECHO)
    if floor is None:
        on_floor = ""
    elif floor < target:
        on_floor = (
            f"; the echo floor (no model) reached {100 * floor:.2f} %: the target is past "
            "this host and broker"
        )
    else:
        on_floor = f"; the echo floor (no model) {100 * floor:.2f} %"
    undecided = ""
    if floor is not None and floor <= w < target:
        undecided = (
            f"{name} is at or above the echo floor (no model), which itself falls short of "
            f"{100 * target:g} % here"
        )
    return [
        Check(
            name=check_name(check, name),
            expected=f"{name} >= {100 * target:g} % while every peer falls below",
            actual=w,
            passed=w >= target and below,
            undecided=undecided,
            unit="{:.2%}",
            detail="; ".join(
                f"{n} {'-' if v is None else f'{100 * v:.2f} %'}"
                for n, v in {name: w, **peers}.items()
            )
            + on_floor,
        )
    ]


# -- scenario summaries -------------------------------------------------------------------


def _groups(trials: Iterable[Trial]) -> dict[tuple[str, str], list[Trial]]:
    out: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        out.setdefault((t.contender, t.load), []).append(t)
    return out


def overload_figures(trials: Iterable[Trial]) -> dict[tuple[str, str], dict[str, Spread]]:
    """(contender, load) -> offered rate, goodput, in-deadline share, p99, lost and every
    explicit outcome by status, each a spread over the repeats."""
    out: dict[tuple[str, str], dict[str, Spread]] = {}
    for key, ts in _groups(trials).items():
        fig = {
            "offered": spread(t.offered_rate for t in ts),
            "goodput": spread(goodput(t) for t in ts),
            "good_share": spread(good_share(t) for t in ts),
            "p99_ms": spread(t.p99_ms for t in ts),
            "lost": spread(float(t.lost) for t in ts),
        }
        for status in (Status.OK, Status.EXPIRED, Status.SHED, Status.ERROR):
            fig[status.value] = spread(float(t.by_status.get(status.value, 0)) for t in ts)
        out[key] = fig
    return out


def _tight(t: Trial) -> ClassFigures | None:
    return min(t.classes.values(), key=lambda c: c.budget_ms) if t.classes else None


def _loose(t: Trial) -> ClassFigures | None:
    return max(t.classes.values(), key=lambda c: c.budget_ms) if t.classes else None


def mixed_figures(trials: Iterable[Trial]) -> dict[str, dict[str, Spread]]:
    """Contender -> offered rate, tight / loose class attainment and p99, lost, and the
    tight class's p99 per stage (``tight_<stage>_p99_ms``), over the repeats."""
    out: dict[str, dict[str, Spread]] = {}
    for (name, _), ts in _groups(trials).items():
        tight = [_tight(t) for t in ts]
        loose = [_loose(t) for t in ts]
        out[name] = {
            "offered": spread(t.offered_rate for t in ts),
            "tight_attainment": spread(c.attainment for c in tight if c),
            "tight_p99_ms": spread(c.p99_ms for c in tight if c),
            "loose_attainment": spread(c.attainment for c in loose if c),
            "loose_p99_ms": spread(c.p99_ms for c in loose if c),
            "lost": spread(float(t.lost) for t in ts),
            **{
                f"tight_{stage}_p99_ms": spread(c.stages_p99_ms.get(stage) for c in tight if c)
                for stage in STAGES
            },
        }
    return out


def checks_of(result: BenchResult) -> list[Check]:
    """Every target of ``result`` judged: the replays' (``expectations``), the
    scenarios' and, once they are in, the in-process figures'."""
    return (
        expectations(result.summary, stops=result.curve_stop)
        + scenario_checks_of(result)
        + inproc_checks(
            result.inproc_us_per_event,
            service_cpu={
                n: f["cpu_s_per_1k_10x"].median
                for n, f in result.summary.items()
                if "cpu_s_per_1k_10x" in f
            },
            ratios=result.inproc_ratios,
        )
    )


def scenario_checks_of(result: BenchResult) -> list[Check]:
    """``scenario_checks`` with the medians of ``result``'s scenarios and 1x replays."""
    by = {sc.name: sc for sc in result.scenarios}
    goodputs: dict[str, float | None] = {}
    lost: dict[str, float | None] = {}
    offered: dict[str, float | None] = {}
    late: dict[str, tuple[int, int]] = {}
    if "overload" in by:
        trials = by["overload"].trials
        figs = overload_figures(trials)
        top = max((load for _, load in figs), key=_factor, default=None)
        for (name, load), fig in figs.items():
            if load == top:
                goodputs[name] = fig["goodput"].median
                lost[name] = fig["lost"].max
                offered[name] = fig["offered"].median
                ts = [t for t in trials if t.contender == name and t.load == load]
                late[name] = (sum(t.sender_behind for t in ts), len(ts))
    tight, tight_over = (
        {
            n: f["tight_attainment"].median
            for n, f in (mixed_figures(by[sc].trials) if sc in by else {}).items()
        }
        for sc in ("mixed", "mixed-overload")
    )
    p99 = {n: s["p99_1x"].median for n, s in result.summary.items() if "p99_1x" in s}
    return scenario_checks(
        overload_goodput=goodputs,
        overload_lost=lost,
        tight_attainment=tight,
        p99_normal=p99,
        overload_offered=offered,
        overload_late=late,
        tight_overload=tight_over,
        p99_spread={n: s["p99_1x"] for n, s in result.summary.items() if "p99_1x" in s},
    )


def inproc_checks(
    us_per_event: Mapping[str, float],
    service_cpu: Mapping[str, float | None] | None = None,
    ratios: Sequence[float] = (),
) -> list[Check]:
    """#14's leaner path: weir's in-process CPU per event (``bench.peers.inproc``, the
    default configuration) no more than the fixed-window batcher's: the median of
    ``ratios`` (weir over the fixed window in each repeat, the paths taking turns) where
    there are two or more, with their range, else the ratio of the bests. ``service_cpu``
    (contender -> median CPU s of its service per 1,000 events in the 10x replay), when it
    holds both, is named beside it: what the whole service pays, Kafka client included."""
    weir, fixed = us_per_event.get("weir"), us_per_event.get("fixed-window")
    if weir is None or not fixed:
        return []
    ratio = weir / fixed
    detail = f"weir {weir:.1f} us vs fixed-window {fixed:.1f} us per event"
    if len(ratios) >= 2:
        ratio = float(np.median(ratios))
        lo, hi = min(ratios), max(ratios)
        detail = (
            f"median of {len(ratios)} repeats, each weir / fixed-window in turn: "
            f"{ratio:.2f}x [{lo:.2f}-{hi:.2f}]"
            + ("; the repeats straddle 1.00x" if lo <= 1.0 < hi else "")
            + f"; best of each: {detail}"
        )
    svc = service_cpu or {}
    svc_weir, svc_fixed = svc.get("weir"), svc.get("fixed-window")
    if svc_weir is not None and svc_fixed:
        detail += (
            f"; the whole service in the 10x replay: weir {svc_weir:.3f} s vs fixed-window "
            f"{svc_fixed:.3f} s of CPU per 1,000 events ({svc_weir / svc_fixed:.2f}x)"
        )
    return [
        Check(
            name="inproc_cpu_vs_fixed_window",
            expected="<= the fixed-window batcher's in-process CPU per event",
            actual=ratio,
            passed=ratio <= 1.0,
            detail=detail,
        )
    ]


def _factor(load: str) -> float:
    """``overload-3x`` -> 3.0."""
    return float(load.removeprefix("overload-").removesuffix("x"))


def curve_rates(steps: Sequence[Trial], points: Sequence[CurvePoint]) -> dict[str, Spread]:
    """Contender -> its max sustainable rate (``rate_spread``), contenders in step order."""
    labels = list(dict.fromkeys(t.contender for t in steps))
    return {
        label: rate_spread(
            [t for t in steps if t.contender == label],
            [p for p in points if p.contender == label],
        )
        for label in labels
    }
