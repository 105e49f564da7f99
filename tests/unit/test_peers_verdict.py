"""The peer benchmark's verdicts, scenarios and writers, from synthetic results (no Kafka)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench.peers import harness, scenarios
from bench.peers.__main__ import build_parser
from bench.peers.base import CONTENDERS, WEIRS
from bench.peers.config import PeerConfig, weir_settings
from bench.peers.report import render_markdown, write_all
from bench.peers.results import (
    FIGURES,
    BenchResult,
    Check,
    ClassFigures,
    Scenario,
    Trial,
    decode_result,
    encode_result,
    overlap,
    spread,
    summarize,
)
from bench.peers.session import Options, Session
from bench.peers.verdict import (
    checks_of,
    class_figures,
    curve_rates,
    good_inputs,
    good_share,
    goodput,
    inproc_checks,
    interleaved,
    mark_host_limits,
    max_rate,
    mixed_classes,
    point_of,
    points_of,
    scenario_checks,
    scenario_checks_of,
)
from replay.errors import ReplayError
from replay.measure import Recorder
from replay.plan import Plan
from schemas.codec import event_codec
from schemas.decision import Decision, Stamps, Status
from schemas.events import Quote
from service.settings import Anchor

BUDGET = 5.0


def _t(
    name: str = "weir",
    rate: float = 1000.0,
    p99: float = 2.0,
    *,
    repeat: int = 1,
    load: str = "rate",
    **kw: Any,
) -> Trial:
    """A trial whose per-trial verdict follows its p99 unless told otherwise."""
    return Trial(
        contender=name,
        load=load,
        repeat=repeat,
        offered_rate=None if rate is None else float(rate),
        events=kw.pop("events", 10_000),
        p50_ms=p99 / 2,
        p99_ms=p99,
        p999_ms=p99 * 2,
        attainment=kw.pop("attainment", 0.999 if p99 <= BUDGET else 0.5),
        cpu_s_per_1k=0.05,
        sustainable=kw.pop("sustainable", p99 <= BUDGET),
        **kw,
    )


# -- interleaving and the median rule -----------------------------------------------------


def test_interleaved_runs_every_contender_once_per_repeat_rotated() -> None:
    """Each repeat runs each contender once; the first slot rotates per repeat and step."""
    order = interleaved(["weir", "naive", "echo"], 3)
    assert order == [
        (1, "weir"),
        (1, "naive"),
        (1, "echo"),
        (2, "naive"),
        (2, "echo"),
        (2, "weir"),
        (3, "echo"),
        (3, "weir"),
        (3, "naive"),
    ]
    assert interleaved(["a", "b"], 1, step=1) == [(1, "b"), (1, "a")]
    assert interleaved([], 2) == []


def test_median_of_repeats_decides_and_spread_is_reported() -> None:
    """One noisy repeat out of three does not fail a rate; two do; the spread keeps all."""
    one_bad = [_t(p99=2.0, repeat=1), _t(p99=40.0, repeat=2), _t(p99=3.0, repeat=3)]
    p = point_of(one_bad, budget_ms=BUDGET)
    assert p.sustainable and p.repeats == 3
    assert (p.p99_ms.min, p.p99_ms.median, p.p99_ms.max) == (2.0, 3.0, 40.0)
    two_bad = [_t(p99=2.0, repeat=1), _t(p99=40.0, repeat=2), _t(p99=9.0, repeat=3)]
    assert not point_of(two_bad, budget_ms=BUDGET).sustainable


def test_median_lost_or_attainment_fails_a_rate() -> None:
    """A rate whose median repeat lost inputs, or kept < 99 % in budget, is not sustainable."""
    lost = [_t(lost=3), _t(lost=1), _t()]
    assert not point_of(lost, budget_ms=BUDGET).sustainable
    low = [_t(attainment=0.98), _t(attainment=0.97), _t()]
    assert not point_of(low, budget_ms=BUDGET).sustainable


def test_harness_limited_repeats_are_counted_and_a_majority_fails_the_rate() -> None:
    """One lagging sender is marked (1/3) but passes; two out of three fail the rate."""
    one = point_of([_t(harness_limited=True), _t(), _t()], budget_ms=BUDGET)
    assert one.sustainable and one.harness_limited == 1
    two = point_of([_t(harness_limited=True), _t(harness_limited=True), _t()], budget_ms=BUDGET)
    assert not two.sustainable and two.harness_limited == 2


def test_point_of_nothing_is_an_error() -> None:
    """A point needs at least one trial."""
    with pytest.raises(ValueError, match=r"^a curve point needs at least one trial$"):
        point_of([], budget_ms=BUDGET)


def test_host_limit_marks_rates_from_the_echo_floors_first_failure() -> None:
    """Points at or above the lowest rate the echo failed are host-limited; below are not."""
    steps = [
        _t("echo", 1000, 1.0),
        _t("echo", 2000, 9.0),
        _t("weir", 1000, 2.0),
        _t("weir", 2000, 12.0),
        _t("weir", 4000, 30.0),
    ]
    marked = {
        (p.contender, p.rate): p.host_limited
        for p in mark_host_limits(points_of(steps, budget_ms=BUDGET))
    }
    assert marked == {
        ("echo", 1000.0): False,
        ("echo", 2000.0): True,
        ("weir", 1000.0): False,
        ("weir", 2000.0): True,
        ("weir", 4000.0): True,
    }
    clean = points_of([_t("echo", 1000, 1.0), _t("weir", 2000, 9.0)], budget_ms=BUDGET)
    assert not any(p.host_limited for p in mark_host_limits(clean))


def test_max_rate_is_the_median_verdict_with_each_repeats_own_as_spread() -> None:
    """Repeats passing 2000/4000/2000 give verdict 2000 (median rule) with [2000-4000]."""
    steps = []
    for repeat, p99s in ((1, (1.0, 2.0, 9.0)), (2, (1.0, 2.0, 3.0)), (3, (1.0, 8.0, 9.0))):
        for rate, p99 in zip((1000.0, 2000.0, 4000.0), p99s, strict=True):
            steps.append(_t(rate=rate, p99=p99, repeat=repeat))
    points = points_of(steps, budget_ms=BUDGET)
    assert max_rate(points) == 2000.0
    r = curve_rates(steps, points)["weir"]
    assert (r.min, r.median, r.max, r.n) == (1000.0, 2000.0, 4000.0, 3)
    summary = summarize([], curve_rates(steps, points))
    assert summary["weir"]["max_rate"].median == 2000.0


# -- scenario figures --------------------------------------------------------------------


def test_goodput_counts_in_deadline_ok_per_planned_second() -> None:
    """10,000 inputs, 100 warming, 50 dead letters, 2,000 misses over 30 s: 7,850 good."""
    t = _t(
        events=10_000,
        by_status={"warming": 100, "ok": 8_000, "shed": 1_850},
        dead_lettered=50,
        misses=2_000,
        planned_s=30.0,
    )
    assert good_inputs(t) == 7_850
    assert goodput(t) == pytest.approx(7_850 / 30.0)
    assert good_share(t) == pytest.approx(0.785)
    assert goodput(_t(planned_s=None)) is None


def test_mixed_classes_spread_the_tight_share_evenly() -> None:
    """Half the events alternate; a quarter is every fourth; bad shares are refused."""
    assert mixed_classes(6, 0.5).tolist() == [0, 1, 0, 1, 0, 1]
    assert mixed_classes(8, 0.25).tolist() == [0, 0, 0, 1, 0, 0, 0, 1]
    assert int(mixed_classes(1000, 0.3).sum()) == 300
    with pytest.raises(ValueError, match=r"^tight_share must be within \[0, 1\], got 1.5$"):
        mixed_classes(4, 1.5)


def test_class_figures_judge_each_class_by_its_own_budget() -> None:
    """A 20 ms ok meets the loose 100 ms class but misses the tight 5 ms one; warming is
    excluded, a lost input counts as a miss and as lost."""
    ok, warming, shed = (list(Status).index(s) for s in (Status.OK, Status.WARMING, Status.SHED))
    status = np.array([ok, ok, ok, ok, warming, shed, -1], np.int8)
    e2e = np.array([1, 20, 3, 20, 1, 1, 0], np.int64) * 1_000_000
    classes = np.array([1, 1, 0, 0, 1, 1, 1], np.int8)
    figs = class_figures(
        status=status,
        acked=np.ones(7, np.bool_),
        late=np.zeros(7, np.bool_),
        e2e_ns=e2e,
        classes=classes,
        topics={1: "tight", 0: "loose"},
        budgets_ms={1: 5.0, 0: 100.0},
    )
    tight, loose = figs["tight"], figs["loose"]
    assert (tight.inputs, tight.good, tight.lost) == (5, 1, 1)
    assert tight.attainment == pytest.approx(1 / 4)
    assert (loose.inputs, loose.good, loose.attainment) == (2, 2, 1.0)
    assert tight.stages_p99_ms == {} == loose.stages_p99_ms  # no stamps given


def test_class_figures_give_each_class_its_own_stage_tail() -> None:
    """Each class's stage p99 is over its own decided inputs: the tight class's 40 ms
    broker_in shows there and not in the loose class; a warming decision, a lost input and
    an input whose stamps are unknown do not count; a negative span (two clocks) is 0."""
    ok, warming = (list(Status).index(s) for s in (Status.OK, Status.WARMING))
    status = np.array([ok, ok, warming, -1, ok, ok, ok], np.int8)
    classes = np.array([1, 1, 1, 1, 1, 0, 0], np.int8)
    ms = 1_000_000
    broker_in = np.array([40, 40, 900, 900, 900, 1, 1], np.int64) * ms
    known = np.array([True, True, True, True, False, True, True])
    queue = np.array([-3, -3, 0, 0, 0, 2, 2], np.int64) * ms
    figs = class_figures(
        status=status,
        acked=np.ones(7, np.bool_),
        late=np.zeros(7, np.bool_),
        e2e_ns=np.full(7, ms, np.int64),
        classes=classes,
        topics={1: "tight", 0: "loose"},
        budgets_ms={1: 50.0, 0: 500.0},
        stages={"broker_in": (broker_in, known), "queue_wait": (queue, known)},
    )
    assert figs["tight"].stages_p99_ms == pytest.approx({"broker_in": 40.0, "queue_wait": 0.0})
    assert figs["loose"].stages_p99_ms == pytest.approx({"broker_in": 1.0, "queue_wait": 2.0})


def test_scenario_checks_state_each_target_met_or_not() -> None:
    """3.5x goodput with nothing lost is met; the tight class at 99.5 % with the peer at
    95 % is met; weir's p99 above the best peer's is not met."""
    checks = {
        c.name: c
        for c in scenario_checks(
            overload_goodput={"weir": 7000.0, "naive": 2000.0, "fixed-window": 1500.0, "echo": 1.0},
            overload_lost={"weir": 0.0},
            tight_attainment={"weir": 0.995, "naive": 0.95},
            p99_normal={"weir": 3.0, "naive": 2.5, "echo": 1.0},
        )
    }
    over = checks["overload_3x_goodput_vs_best_peer"]
    assert over.passed and over.actual == pytest.approx(3.5)
    assert over.detail == "weir 7,000/s vs naive 2,000/s; weir lost 0"
    mixed = checks["mixed_tight_class_attainment"]
    assert mixed.passed and mixed.detail == "weir 99.50 %; naive 95.00 %"
    assert "mixed_overload_tight_class_attainment" not in checks  # no figures, not judged
    normal = checks["normal_load_p99_vs_best_peer"]
    assert not normal.passed and normal.detail == "weir 3.00 ms vs naive 2.50 ms"


def test_overlap_names_repeats_whose_ranges_meet() -> None:
    """Two spreads of at least two repeats that meet are named with their ranges; apart,
    or with one repeat on a side, they are not."""
    a, b = spread([5.6, 6.5, 7.53]), spread([6.09, 6.09, 7.32])
    assert overlap("weir", a, "naive", b) == (
        "; the repeats overlap (weir 5.60-7.53 ms, naive 6.09-7.32 ms)"
    )
    assert overlap("weir", spread([12.4, 14.7, 15.5]), "naive", spread([10.2, 11.0, 11.5])) == ""
    assert overlap("weir", spread([6.5]), "naive", b) == ""
    assert overlap("weir", a, "naive", spread([])) == ""


def test_p99_verdicts_say_where_the_repeats_overlap() -> None:
    """The normal-load verdict still goes by the medians (3.0 ms against 2.5: not met),
    and its detail says the repeats overlap; without the spreads it says nothing more."""
    kw: dict[str, Any] = {
        "overload_goodput": {},
        "overload_lost": {},
        "tight_attainment": {},
        "p99_normal": {"weir": 3.0, "naive": 2.5},
    }
    spreads = {"weir": spread([2.2, 3.0, 3.1]), "naive": spread([2.4, 2.5, 4.0])}
    (normal,) = scenario_checks(**kw, p99_spread=spreads)
    assert not normal.passed
    assert normal.detail == (
        "weir 3.00 ms vs naive 2.50 ms; the repeats overlap (weir 2.20-3.10 ms, naive 2.40-4.00 ms)"
    )
    (bare,) = scenario_checks(**kw)
    assert bare.detail == "weir 3.00 ms vs naive 2.50 ms"


def test_mixed_overload_is_judged_apart_from_the_mixed_speed() -> None:
    """The same rule on the mixed-overload figures, judged on its own: met there while
    not met at the mixed scenario's speed (a peer also made it)."""
    checks = {
        c.name: c
        for c in scenario_checks(
            overload_goodput={},
            overload_lost={},
            tight_attainment={"weir": 1.0, "fixed-window": 1.0, "echo": 1.0},
            tight_overload={"weir": 0.995, "fixed-window": 0.2, "naive": 0.01},
            p99_normal={},
        )
    }
    assert not checks["mixed_tight_class_attainment"].passed
    over = checks["mixed_overload_tight_class_attainment"]
    assert over.passed and over.actual == pytest.approx(0.995)
    assert over.detail == "weir 99.50 %; fixed-window 20.00 %; naive 1.00 %"
    assert over.expected == "weir >= 99 % while every peer falls below"
    checks = {
        c.name: c
        for c in scenario_checks(
            overload_goodput={},
            overload_lost={},
            tight_attainment={},
            tight_overload={"weir": 0.98, "fixed-window": 0.2},
            p99_normal={},
        )
    }
    assert not checks["mixed_overload_tight_class_attainment"].passed


def test_the_echo_floor_is_named_beside_the_tight_class_verdict() -> None:
    """An echo floor at or above the target is named as a figure; below it, as the reason
    the target is past the host. weir short of the target but not below a floor that is
    short too is undecided; below the floor it is not met."""

    def over(floor: float, weir: float = 0.94) -> Check:
        (check,) = [
            c
            for c in scenario_checks(
                overload_goodput={},
                overload_lost={},
                tight_attainment={},
                tight_overload={"weir": weir, "fixed-window": 0.48, "echo": floor},
                p99_normal={},
            )
            if c.name == "mixed_overload_tight_class_attainment"
        ]
        return check

    high, low = over(0.9942), over(0.97)
    assert not high.passed and not low.passed
    assert high.undecided == low.undecided == ""  # weir below the floor: not met
    for floor in (0.94, 0.90):  # weir at or above a floor that is short itself: undecided
        on = over(floor)
        assert not on.passed and on.undecided == (
            "weir is at or above the echo floor (no model), which itself falls short of 99 % here"
        )
    assert over(0.90, weir=0.995).undecided == ""  # met is met
    assert high.detail == "weir 94.00 %; fixed-window 48.00 %; the echo floor (no model) 99.42 %"
    assert low.detail == (
        "weir 94.00 %; fixed-window 48.00 %; the echo floor (no model) reached 97.00 %: "
        "the target is past this host and broker"
    )


def test_the_echo_floor_is_offered_weirs_mixed_overload_rate() -> None:
    """The echo has no capacity of its own (no model): it is offered the default weir's
    rate, else the highest weir configuration's; nothing changes without an echo, without
    a weir, or when the echo has a rate already."""
    rates = {"weir": 2000.0, "weir-e2e": 3000.0, "fixed-window": 4000.0}
    names = ["weir", "weir-e2e", "fixed-window", "echo"]
    got, note = scenarios.with_floor(rates, names)
    assert got == {**rates, "echo": 2000.0} and rates == {
        "weir": 2000.0,
        "weir-e2e": 3000.0,
        "fixed-window": 4000.0,
    }
    assert note.startswith("echo: offered weir's rate")
    no_default = {"weir-e2e": 3500.0, "fixed-window": 4000.0}
    assert scenarios.with_floor(no_default, [*no_default, "echo"])[0]["echo"] == 3500.0
    assert scenarios.with_floor(rates, names[:3]) == (rates, "")
    assert scenarios.with_floor({"fixed-window": 4000.0}, ["fixed-window", "echo"]) == (
        {"fixed-window": 4000.0},
        "",
    )
    own = {**rates, "echo": 1.0}
    assert scenarios.with_floor(own, names) == (own, "")


def test_scenario_checks_name_offered_rates_a_late_sender_and_a_short_floor() -> None:
    """Each side's offered rate, the trials whose sender fell behind and an echo floor
    below the tight target are in the details (the verdicts themselves are unchanged)."""
    checks = {
        c.name: c
        for c in scenario_checks(
            overload_goodput={"weir": 456.0, "fixed-window": 1254.0},
            overload_lost={"weir": 0.0},
            tight_attainment={"weir": 0.81, "fixed-window": 0.68, "echo": 0.97},
            p99_normal={},
            overload_offered={"weir": 6001.0, "fixed-window": 3001.0},
            overload_late={"weir": (2, 3), "fixed-window": (0, 3)},
        )
    }
    over = checks["overload_3x_goodput_vs_best_peer"]
    assert not over.passed
    assert over.detail == (
        "weir 456/s of 6,001/s offered vs fixed-window 1,254/s of 3,001/s offered; weir lost 0"
        "; the harness's sender fell behind by more than 50 ms in weir 2/3 trial(s): the "
        "host, not only the contender, was the limit"
    )
    mixed = checks["mixed_tight_class_attainment"]
    assert not mixed.passed
    assert mixed.detail == (
        "weir 81.00 %; fixed-window 68.00 %; the echo floor (no model) reached 97.00 %: "
        "the target is past this host and broker"
    )


def test_inproc_check_compares_weir_with_the_fixed_window() -> None:
    """15.4 us against 12.0 is 1.28x: not met; without both figures nothing is judged; the
    services' own CPU per 1,000 events at 10x is named beside it when both are known; a
    redraw of a result with in-process figures judges them too, with the service figures."""
    (check,) = inproc_checks({"naive": 25.0, "fixed-window": 12.0, "weir": 15.4})
    assert check.name == "inproc_cpu_vs_fixed_window" and not check.passed
    assert check.actual == pytest.approx(15.4 / 12.0)
    assert check.detail == "weir 15.4 us vs fixed-window 12.0 us per event"
    assert inproc_checks({"weir": 9.0, "fixed-window": 12.0})[0].passed
    assert inproc_checks({"weir": 9.0}) == []
    (named,) = inproc_checks(
        {"fixed-window": 12.0, "weir": 15.4}, service_cpu={"fixed-window": 0.2, "weir": 0.22}
    )
    assert named.detail == (
        "weir 15.4 us vs fixed-window 12.0 us per event; the whole service in the 10x "
        "replay: weir 0.220 s vs fixed-window 0.200 s of CPU per 1,000 events (1.10x)"
    )
    assert not named.passed  # judged in process, as #14 states it
    assert inproc_checks({"fixed-window": 12.0, "weir": 15.4}, {"weir": 0.22})[0].detail == (
        "weir 15.4 us vs fixed-window 12.0 us per event"
    )
    result = _result()
    result.inproc_us_per_event = {"fixed-window": 12.0, "weir": 11.0}
    result.summary["weir"]["cpu_s_per_1k_10x"] = spread([0.21, 0.22, 0.23])
    result.summary["fixed-window"] = {f: spread(()) for f in FIGURES}
    result.summary["fixed-window"]["cpu_s_per_1k_10x"] = spread([0.19, 0.2, 0.3])
    checks = checks_of(result)
    assert checks[-1].name == "inproc_cpu_vs_fixed_window"
    assert checks[-1].detail.endswith(
        "weir 0.220 s vs fixed-window 0.200 s of CPU per 1,000 events (1.10x)"
    )


def test_inproc_check_judges_the_median_of_the_paired_repeats() -> None:
    """With two or more repeats' ratios, their median is judged (not the ratio of the
    bests), named with their range; a range across 1.0 is said; one ratio is not enough;
    a redraw judges a result's ratios."""
    best = {"fixed-window": 8.0, "weir": 8.4}  # 1.05x by the bests
    (check,) = inproc_checks(best, ratios=[0.97, 1.02, 0.99, 0.98, 1.04])
    assert check.passed and check.actual == pytest.approx(0.99)
    assert check.detail == (
        "median of 5 repeats, each weir / fixed-window in turn: 0.99x [0.97-1.04]; the "
        "repeats straddle 1.00x; best of each: weir 8.4 us vs fixed-window 8.0 us per event"
    )
    (above,) = inproc_checks(best, ratios=[1.02, 1.03])
    assert not above.passed and "straddle" not in above.detail
    assert inproc_checks(best, ratios=[0.9])[0].actual == pytest.approx(1.05)
    result = _result()
    result.inproc_us_per_event = best
    result.inproc_ratios = [0.95, 0.96, 0.97]
    assert checks_of(result)[-1].actual == pytest.approx(0.96)


def test_report_names_the_loop_the_in_process_paths_ran_on() -> None:
    """The in-process line says which event loop the paths ran on; a result from before the
    loop was recorded ran them on asyncio, and says so."""
    result = _result()
    result.inproc_us_per_event = {"fixed-window": 8.0, "weir": 7.6}
    assert "repeats on asyncio (`bench.peers.inproc`): fixed-window 8.0, weir 7.6." in (
        render_markdown(result)
    )
    result.inproc_loop = "uvloop"
    assert "repeats on uvloop (`bench.peers.inproc`)" in render_markdown(result)


def test_scenario_checks_fail_on_lost_inputs_or_a_peer_meeting_the_tight_class() -> None:
    """weir losing an input under overload, or a peer also reaching 99 %, is not met."""
    checks = {
        c.name: c
        for c in scenario_checks(
            overload_goodput={"weir": 9000.0, "naive": 1000.0},
            overload_lost={"weir": 1.0},
            tight_attainment={"weir": 0.999, "naive": 0.995},
            p99_normal={},
        )
    }
    assert not checks["overload_3x_goodput_vs_best_peer"].passed
    assert not checks["mixed_tight_class_attainment"].passed
    assert "normal_load_p99_vs_best_peer" not in checks


# -- the result and its writers ----------------------------------------------------------


def _classes(tight: float, loose: float) -> dict[str, ClassFigures]:
    return {
        "in": ClassFigures(
            topic="in",
            budget_ms=5.0,
            inputs=500,
            good=int(500 * tight),
            attainment=tight,
            p99_ms=4.0,
            lost=0,
            stages_p99_ms={
                "broker_in": 2.5,
                "queue_wait": 1.5,
                "inference": 0.5,
                "publish": 0.3,
                "broker_out": 1.0,
            },
        ),
        "in1": ClassFigures(
            topic="in1",
            budget_ms=100.0,
            inputs=500,
            good=int(500 * loose),
            attainment=loose,
            p99_ms=30.0,
            lost=0,
        ),
    }


def _result() -> BenchResult:
    steps = []
    for repeat in (1, 2, 3):
        steps += [
            _t("weir", 1000, 1.5, repeat=repeat),
            _t("weir", 2000, 2.5, repeat=repeat, harness_limited=repeat == 2, sender_behind=True),
            # weir's loop: held 100 ms in one repeat, 25 ms (below the mark) in another.
            _t("weir", 4000, 9.0, repeat=repeat, loop_held_ms={1: 100.0, 2: 25.0}.get(repeat)),
            _t("naive", 1000, 3.0, repeat=repeat),
            _t("naive", 2000, 20.0, repeat=repeat),
            _t("echo", 1000, 1.0, repeat=repeat),
            _t("echo", 2000, 1.2, repeat=repeat),
            _t("echo", 4000, 7.0, repeat=repeat),
        ]
    over = [
        _t(
            "weir",
            6000,
            4.0,
            load="overload-3x",
            events=180_000,
            misses=60_000,
            planned_s=30.0,
            by_status={"ok": 120_000, "shed": 60_000},
        ),
        _t(
            "naive",
            3000,
            900.0,
            load="overload-3x",
            events=90_000,
            misses=88_000,
            planned_s=30.0,
            by_status={"ok": 90_000},
            sender_behind=True,
        ),
    ]
    mixed = [
        _t("weir", None, 40.0, load="mixed", classes=_classes(0.995, 1.0), loop_held_ms=50.0),  # type: ignore[arg-type]
        _t("naive", None, 40.0, load="mixed", classes=_classes(0.6, 0.99)),  # type: ignore[arg-type]
    ]
    scale = [
        _t("weir", 1000, 1.5, load="scale"),
        _t("weir", 2000, 9.0, load="scale"),
        _t("weir x2", 1000, 1.5, load="scale", workers=2),
        _t("weir x2", 2000, 2.0, load="scale", workers=2),
    ]
    result = BenchResult(
        params={"budget_ms": BUDGET, "repeats": 3, "partitions": 1},
        env={"host": "h", "cpus": "2"},
        curve=steps,
        curve_stop={"weir": "slo", "naive": "slo", "echo": "slo"},
        scenarios=[
            Scenario(name="overload", title="Overload", trials=over),
            Scenario(name="mixed", title="Mixed deadlines", trials=mixed),
            Scenario(
                name="capacity",
                title="Capacity with /b/wide",
                trials=[
                    _t("weir", 1000, 1.5, load="capacity"),
                    _t("weir", 2000, 60.0, load="capacity"),
                    _t("naive", 1000, 70.0, load="capacity"),
                ],
                params={"stopped": {"weir": "slo", "naive": "slo"}},
            ),
            Scenario(
                name="scale",
                title="Scale-out",
                trials=scale,
                params={"stopped": {"weir": "slo", "weir x2": "ceiling"}},
                notes=["weir x3: did not start"],
            ),
        ],
    )
    result.points = mark_host_limits(points_of(steps, budget_ms=BUDGET))
    result.summary = summarize([], curve_rates(steps, result.points))
    result.checks = scenario_checks_of(result)
    return result


def test_report_prints_curves_with_limit_marks_and_the_scenarios() -> None:
    """The markdown has each contender's curve (H, L, S and B marks), the overload goodput, the
    per-class attainment, the scale-out table, and each target met or not."""
    md = render_markdown(_result())
    assert "### weir (ramp stopped: slo)" in md
    assert md.index("### weir") < md.index("### naive") < md.index("### echo")  # run order
    assert "| 2,000 | 1.25 | 2.50 | 5.00 | 99.90% | 0.050 | ok H 1/3 L 3/3 |" in md
    assert "| 4,000 | 4.50 | 9.00 | 18.00 | 50.00% | 0.050 | ✗ S 1/3 B |" in md
    assert (
        "| weir | overload-3x | 6,000 | 4,000 | 66.67% | 4.00 | 120,000 / 0 / 60,000 / 0 | 0 |  |"
        in md
    )
    assert (
        "| naive | overload-3x | 3,000 | 67 | 2.22% | 900 | 90,000 / 0 / 0 / 0 | 0 | L 1/1 |" in md
    )
    assert (
        "| naive | - | 60.00% | 4.00 | 99.00% | 30.00 | 0 | 2.5 / 1.5 / 0.5 / 0.3 / 1.0 |  |" in md
    )
    assert (
        "| weir | - | 99.50% | 4.00 | 100.00% | 30.00 | 0 | 2.5 / 1.5 / 0.5 / 0.3 / 1.0 | S 1/1 |"
        in md
    )
    assert "in the order broker_in / queue_wait / inference / publish / broker_out" in md
    assert "| 2 | 2,000 | 0.050 | 1,000 | ceiling |" in md
    assert "| contender | max sustainable ev/s | CPU s/1k at max | ramp stopped |" in md
    assert "| weir | 1,000 | 0.050 | slo |" in md and "| naive | - | - | slo |" in md
    assert "- weir x3: did not start" in md
    assert (
        "overload_3x_goodput_vs_best_peer: expected >= 3x the best peer's goodput, nothing lost; got 60.00x"
        in md
    )
    assert (
        "mixed_tight_class_attainment: expected weir >= 99 % while every peer falls below; got 99.50%"
        in md
    )


def test_writers_round_trip_scenarios_and_draw_the_curve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_all`` writes JSON that reads back equal (points, scenarios, classes) and,
    without matplotlib, a plot whose curve chart names the limited points."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the import fails, as uninstalled
    result = _result()
    paths = write_all(result, tmp_path)
    back = decode_result((tmp_path / "peers.json").read_bytes())
    assert encode_result(back) == encode_result(result)
    assert back.scenarios[1].trials[0].classes["in"].attainment == 0.995
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert "weir 4,000/s" in svg and "weir p99.9" in svg


def test_matplotlib_plot_names_each_series(tmp_path: Path) -> None:
    """With matplotlib (the bench extra) the plot is a PNG and an SVG whose text stays text:
    the legend names each contender's curve."""
    pytest.importorskip("matplotlib", reason="the bench extra's matplotlib is not installed")
    paths = write_all(_result(), tmp_path)
    assert {p.name for p in paths} >= {"peers.png", "peers.svg"}
    svg = (tmp_path / "peers.svg").read_text()
    assert "weir p99" in svg and "naive p99" in svg
    assert (tmp_path / "peers.png").read_bytes().startswith(b"\x89PNG")


# -- configuration -----------------------------------------------------------------------


def test_peer_config_with_two_topics_gives_weir_per_topic_budgets() -> None:
    """Extra input topics are consumed too and weir gets each topic's budget."""
    cfg = PeerConfig(
        bootstrap="b:1",
        input_topic="t",
        extra_input_topics=["l"],
        topic_budget_ms={"t": 5.0, "l": 100.0},
        decision_topic="o",
        dlq_topic="d",
        group_id="g",
        budget_ms=100.0,
    )
    s = weir_settings(cfg)
    assert cfg.input_topics == ["t", "l"]
    assert s.kafka.input_topics == ["t", "l"]
    assert s.scheduler.topic_budget_ms == {"t": 5.0, "l": 100.0}
    assert s.scheduler.budget_ms == 100.0


def test_session_variants_name_topics_partitions_and_workers(tmp_path: Path) -> None:
    """Two workers take two partitions and the label ``weir x2``; two budgets make two
    input topics, the tight first, and the loose budget is the session's SLO."""
    opts = Options(out=tmp_path, feed=tmp_path / "f")
    two = Session(CONTENDERS["weir"], opts, "b:1", "x", print, workers=2)
    assert (two.label, two.partitions, two.cfg.partitions) == ("weir x2", 2, 2)
    mixed = Session(CONTENDERS["naive"], opts, "b:1", "y", print, budgets_ms=(5.0, 100.0))
    assert mixed.cfg.input_topics == ["peers-y-naive-in", "peers-y-naive-in1"]
    assert mixed.cfg.topic_budget_ms == {"peers-y-naive-in": 5.0, "peers-y-naive-in1": 100.0}
    assert mixed.cfg.budget_ms == 100.0 and mixed.label == "naive"


def test_weir_configurations_run_their_settings_and_the_run_s_bundle(tmp_path: Path) -> None:
    """``weir-e2e`` runs weir with deadlines from the Kafka timestamp, plus the run's
    diagnostic overrides; a peer gets no weir settings; every session serves ``--bundle``
    unless its variant names another (the heavy-model scenario)."""
    opts = Options(
        out=tmp_path,
        feed=tmp_path / "f",
        bundle="/b/wide",
        weir_env={"WEIR_SCHEDULER__MAX_HOLD_MS": "1.0"},
    )
    e2e = Session(CONTENDERS["weir-e2e"], opts, "b:1", "x", print)
    assert e2e.settings.scheduler.anchor is Anchor.KAFKA
    assert e2e.settings.scheduler.max_hold_ms == 1.0
    assert e2e.cfg.bundle == "/b/wide" and e2e.settings.engine.bundle == "/b/wide"
    default = Session(CONTENDERS["weir"], opts, "b:1", "y", print)
    assert default.settings.scheduler.anchor is Anchor.INGEST
    # A single weir worker serves its ops endpoint on a port of its own (opsprobe).
    assert default.ops_port is not None
    assert default.cfg.weir_env == {
        "WEIR_SCHEDULER__MAX_HOLD_MS": "1.0",
        "WEIR_HTTP__ENABLED": "true",
        "WEIR_HTTP__PORT": str(default.ops_port),
    }
    assert default.settings.http.enabled and default.settings.http.port == default.ops_port
    peer = Session(CONTENDERS["fixed-window"], opts, "b:1", "z", print, bundle="/b/teacher")
    assert peer.cfg.weir_env == {} and peer.cfg.bundle == "/b/teacher"
    assert peer.ops_port is None and not peer.settings.http.enabled
    two = Session(CONTENDERS["weir"], opts, "b:1", "w", print, workers=2)
    assert two.ops_port is None and not two.settings.http.enabled  # a port each: not done
    assert {"weir", "weir-e2e"} == WEIRS


def test_each_weir_configuration_is_judged_and_none_counts_as_a_peer() -> None:
    """Both weir configurations get their own checks against the best *peer*: weir-e2e's
    goodput is not the bar weir is held to, and the echo is no peer either."""
    checks = {
        c.name: c
        for c in scenario_checks(
            overload_goodput={"weir": 1000.0, "weir-e2e": 9000.0, "fixed-window": 2000.0},
            overload_lost={"weir": 0.0, "weir-e2e": 0.0},
            tight_attainment={},
            p99_normal={"weir": 9.0, "weir-e2e": 7.0, "fixed-window": 8.0, "echo": 1.0},
        )
    }
    assert not checks["overload_3x_goodput_vs_best_peer"].passed
    e2e = checks["overload_3x_goodput_vs_best_peer (weir-e2e)"]
    assert e2e.passed and e2e.actual == pytest.approx(4.5)
    assert e2e.detail == "weir-e2e 9,000/s vs fixed-window 2,000/s; weir-e2e lost 0"
    assert checks["normal_load_p99_vs_best_peer"].detail == "weir 9.00 ms vs fixed-window 8.00 ms"
    assert checks["normal_load_p99_vs_best_peer (weir-e2e)"].passed


@pytest.fixture
def contenders_restored() -> Any:
    """``CONTENDERS`` and ``WEIRS`` as they were, after a test that adds weir variants."""
    from bench.peers import base

    before, weirs = dict(base.CONTENDERS), set(base.WEIRS)
    yield
    base.CONTENDERS.clear()
    base.CONTENDERS.update(before)
    base.WEIRS.clear()
    base.WEIRS.update(weirs)


def test_a_weir_variant_runs_weir_with_its_settings_beside_the_others(
    tmp_path: Path, contenders_restored: Any
) -> None:
    """``--weir-variant inline:WEIR_ENGINE__OFFLOAD=false`` adds a weir configuration,
    listed with weir's own before the peers, run by weir's worker with its settings, and
    judged as weir, not as a peer; bad variants are refused naming what is wrong."""
    from bench.peers import __main__ as cli

    got = cli._variants(["inline:WEIR_ENGINE__OFFLOAD=false,WEIR_SCHEDULER__MAX_HOLD_MS=1"])
    assert got == {"inline": {"WEIR_ENGINE__OFFLOAD": "false", "WEIR_SCHEDULER__MAX_HOLD_MS": "1"}}
    assert list(CONTENDERS)[:3] == ["weir", "weir-e2e", "inline"] and "inline" in WEIRS
    session = Session(CONTENDERS["inline"], Options(out=tmp_path, feed=tmp_path), "b:1", "x", print)
    assert session.worker == "weir" and session.label == "inline"
    assert session.settings.engine.offload is False
    assert session.settings.scheduler.max_hold_ms == 1.0
    assert Session(CONTENDERS["naive"], session.opts, "b:1", "y", print).worker == "naive"
    checks = scenario_checks(
        overload_goodput={"inline": 10.0, "naive": 5.0},
        overload_lost={},
        tight_attainment={},
        p99_normal={},
    )
    assert [c.name for c in checks] == ["overload_3x_goodput_vs_best_peer (inline)"]
    for bad, why in (
        ("naive:WEIR_A__B=1", "taken by a contender"),
        ("Big:WEIR_A__B=1", "lower-case letters"),
        ("bare", "needs WEIR_SECTION__KEY=VALUE"),
    ):
        with pytest.raises(SystemExit, match=why):
            cli._variants([bad])
    with pytest.raises(SystemExit, match="--weir-setting wants WEIR_SECTION__KEY=VALUE"):
        cli._variants(["v:PATH=x"])


def test_cli_parses_and_refuses_scenario_options() -> None:
    """Scenario flags parse; a loose budget below the tight one and bad worker counts are
    refused with their message."""
    args = build_parser().parse_args(
        [
            "--scenarios",
            "overload,mixed",
            "--overload",
            "1.5,3",
            "--workers",
            "1,2",
            "--mixed-budgets-ms",
            "5,100",
            "--mixed-bundle",
            "build/heavy/wide",
        ]
    )
    assert args.scenarios == ("overload", "mixed") and args.overload == (1.5, 3.0)
    assert args.workers == (1, 2) and args.mixed_budgets_ms == (5.0, 100.0)
    assert args.mixed_bundle == "build/heavy/wide" and args.mixed_overload == 1.5
    assert build_parser().parse_args(["--scenarios", ""]).scenarios == ()
    assert build_parser().parse_args(["--mixed-overload", "0"]).mixed_overload == 0.0
    from bench.peers import __main__ as cli

    with pytest.raises(argparse.ArgumentTypeError, match=r"TIGHT < LOOSE, got '100,5'"):
        cli._two_budgets("100,5")
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^--workers wants integers >= 1, got '0'$"
    ):
        cli._workers("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^unknown scenario\(s\) chaos; known: "):
        cli._scenarios("chaos")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^wants a number >= 0, got '-1'$"):
        cli._factor("-1")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^wants a number >= 0, got 'x'$"):
        cli._factor("x")


# -- the runners, with the trials faked ----------------------------------------------------


class _FakeBench:
    """What ``scenarios`` needs of ``harness.Bench``: options, ``ready``, ``report``."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.readied: list[str] = []

    async def ready(self, session: Any, plans: Any) -> Any:
        self.readied.append(session.label)
        return session

    def report(self, t: Trial) -> None:
        pass

    def say(self, text: str) -> None:
        pass


def test_ramp_interleaves_stops_on_the_median_and_refines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """weir passes 500/1000 and fails 2000, naive fails 1000 in two of three repeats: the
    ramp runs each rate interleaved, drops naive after 1000, bisects each between pass and
    fail, and each stop reason is ``slo``."""
    limits = {"weir": 1500.0, "naive": 700.0}
    calls: list[tuple[str, float, int]] = []

    async def fake_trial(session: Any, plan: Any, pacing: Any, **kw: Any) -> Trial:
        rate = float(pacing.rate)
        calls.append((session.label, rate, kw["repeat"]))
        noisy = session.label == "naive" and rate == 500.0 and kw["repeat"] == 2
        ok = rate <= limits[session.label] and not noisy
        return _t(session.label, rate, 1.0 if ok else 50.0, repeat=kw["repeat"])

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    opts = Options(out=tmp_path, feed=tmp_path / "f", ramp_start=500, ramp_max=4000, refine=1)
    bench = _FakeBench(opts)
    plans = SimpleNamespace(at_rate=lambda rate, seconds: rate)
    sessions = [SimpleNamespace(label="weir"), SimpleNamespace(label="naive")]
    steps, stops, held = asyncio.run(scenarios.ramp(bench, plans, sessions))  # type: ignore[arg-type]
    assert calls[:6] == [
        ("weir", 500.0, 1),
        ("naive", 500.0, 1),
        ("naive", 500.0, 2),
        ("weir", 500.0, 2),
        ("weir", 500.0, 3),
        ("naive", 500.0, 3),
    ]
    rates = {name: sorted({r for n, r, _ in calls if n == name}) for name in limits}
    assert rates == {"weir": [500.0, 1000.0, 1400.0, 2000.0], "naive": [500.0, 710.0, 1000.0]}
    assert stops == {"weir": "slo", "naive": "slo"}
    assert len(steps) == len(calls) and [s.label for s in held] == ["weir", "naive"]
    points = points_of(steps, budget_ms=BUDGET)
    naive = curve_rates(steps, points)["naive"]
    assert (naive.median, naive.n) == (500.0, 2)


def _plan(n: int) -> Plan:
    quotes = [
        Quote(symbol="AAA", bid_px=1.0, bid_qty=1.0, ask_px=1.1, ask_qty=1.0, source_ts_ns=i)
        for i in range(n)
    ]
    return Plan(
        path=Path("f"),
        feed_rows=n,
        keys=[b"AAA"] * n,
        events=quotes,  # type: ignore[arg-type]
        recv_rel=np.arange(n, dtype=np.int64) * 10_000_000,
        excess=np.zeros(n, np.int64),
        encoding=event_codec("json").encoding,
        source_ts="shift",
    )


def test_overload_offers_each_factor_of_each_capacity_on_the_bursty_feed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """weir (capacity 100/s) gets 150 and 300 events/s for 2 s, on the feed's own pace
    sped up; naive, which sustained no rate of a curve that began at 40/s, gets 60 and
    120/s with a note; the echo and a contender never offered a rate are not overloaded;
    every session comes back to be stopped."""
    seen: list[tuple[str, int, float, str]] = []

    async def fake_trial(session: Any, plan: Plan, pacing: Any, **kw: Any) -> Trial:
        seen.append((session.label, plan.n, plan.span_s / pacing.speed, kw["load"]))
        return _t(session.label, plan.n / 2.0, load=kw["load"])

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    opts = Options(out=tmp_path, feed=tmp_path / "f", overload_s=2.0, repeats=1)
    bench = _FakeBench(opts)
    plans = SimpleNamespace(base=_plan(50))
    sessions = [SimpleNamespace(label=n) for n in ("weir", "naive", "fixed", "echo")]
    capacity = {"weir": 100.0, "naive": None, "fixed": None, "echo": 1e6}
    sc, held = asyncio.run(
        scenarios.overload(bench, plans, sessions, capacity, {"weir": 50.0, "naive": 40.0})  # type: ignore[arg-type]
    )
    assert sorted((n, k, load) for n, k, _, load in seen) == [
        ("naive", 120, "overload-1.5x"),
        ("naive", 240, "overload-3x"),
        ("weir", 300, "overload-1.5x"),
        ("weir", 600, "overload-3x"),
    ]
    assert all(s == pytest.approx(2.0) for _, _, s, _ in seen)
    assert sc.notes == [
        "naive: no rate of the curve was sustained, so its capacity is below 40/s; "
        "overloaded at multiples of that rate (at least the factor)",
        "fixed: no max sustainable rate measured, not overloaded",
    ]
    assert [s.label for s in held] == ["weir", "naive", "fixed", "echo"]


def test_common_overload_offers_every_contender_the_best_peers_multiples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With ``overload_base = "common"`` weir (capacity 200/s) and both peers get the best
    peer's capacity (naive, 100/s) times each factor, so one offered load for all: 150 and
    300 events/s for 2 s; the title names that rate; without any peer that sustained a
    rate, each contender falls back to its own, with a note."""
    seen: list[tuple[str, int]] = []

    async def fake_trial(session: Any, plan: Plan, pacing: Any, **kw: Any) -> Trial:
        seen.append((session.label, plan.n))
        return _t(session.label, plan.n / 2.0, load=kw["load"])

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    opts = Options(
        out=tmp_path, feed=tmp_path / "f", overload_s=2.0, repeats=1, overload_base="common"
    )
    plans = SimpleNamespace(base=_plan(50))
    sessions = [SimpleNamespace(label=n) for n in ("weir", "naive", "fixed", "echo")]
    capacity = {"weir": 200.0, "naive": 100.0, "fixed": 50.0, "echo": 1e6}
    sc, _ = asyncio.run(scenarios.overload(_FakeBench(opts), plans, sessions, capacity))  # type: ignore[arg-type]
    assert sorted(seen) == [
        ("fixed", 300),
        ("fixed", 600),
        ("naive", 300),
        ("naive", 600),
        ("weir", 300),
        ("weir", 600),
    ]
    assert "the best peer's max sustainable rate (100/s)" in sc.title
    assert sc.params["base"] == "common" and sc.notes == []
    seen.clear()
    capacity = {"weir": 200.0, "naive": None, "fixed": None, "echo": 1e6}
    sc, _ = asyncio.run(scenarios.overload(_FakeBench(opts), plans, sessions, capacity))  # type: ignore[arg-type]
    assert sorted(seen) == [("weir", 600), ("weir", 1200)]
    assert sc.notes[0] == "no peer sustained a rate: each contender overloaded at its own"


def test_classed_transport_sends_each_event_to_its_class_topic() -> None:
    """Sequence numbers of class 0 go to the first topic, class 1 to the second, and the
    broker's answer binds each to its own coordinates."""
    cfg = PeerConfig(
        bootstrap="b:1", input_topic="t", decision_topic="o", dlq_topic="d", group_id="g"
    )
    tr = scenarios.ClassedTransport(
        weir_settings(cfg).kafka, topics=["tight", "loose"], classes=np.array([0, 1, 0], np.int8)
    )
    sent: list[str] = []

    class _Producer:
        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_result(SimpleNamespace(topic=topic, partition=0, offset=len(sent)))
            sent.append(topic)
            return fut

    rec = Recorder(3)

    async def run() -> None:
        tr._producer = _Producer()  # type: ignore[assignment]
        tr._rec = rec
        for seq in range(3):
            rec.sent(seq, seq, seq)
            await tr.send(seq, b"k", b"v")
        await asyncio.sleep(0)

    asyncio.run(run())
    assert sent == ["tight", "loose", "tight"]
    d = Decision(
        topic="loose",
        partition=0,
        offset=1,
        key="k",
        model_version="m",
        status=Status.OK,
        stamps=Stamps(),
    )
    rec.decided(d, 10)
    assert rec.n_outcomes == 1 and int(rec.status[1]) == list(Status).index(Status.OK)


def test_report_redraw_recomputes_rates_and_checks_from_the_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], contenders_restored: Any
) -> None:
    """``--report DIR`` re-derives the max rates and the checks from the saved curve and
    scenarios (stale ones in the file do not survive) and prints the whole report; the
    run's weir variants are weir again, not peers."""
    from bench.peers.__main__ import main

    result = _result()
    result.summary = {}
    result.checks = []
    result.params["weir_variants"] = {"inline": {"WEIR_ENGINE__OFFLOAD": "false"}}
    write_all(result, tmp_path)
    assert main(["--report", str(tmp_path)]) == 0
    assert "inline" in WEIRS
    printed = capsys.readouterr().out
    back = decode_result((tmp_path / "peers.json").read_bytes())
    assert back.summary["weir"]["max_rate"].median == 2000.0
    assert {c.name for c in back.checks} >= {
        "overload_3x_goodput_vs_best_peer",
        "mixed_tight_class_attainment",
    }
    assert "## Throughput-latency curve" in printed and "## Overload" in printed


def _one_repeat(tmp_path: Path, **options: Any) -> Options:
    """Options of one repeat, the rest as given."""
    return Options(out=tmp_path, feed=tmp_path / "f", repeats=1, **options)


class _FreshBench(_FakeBench):
    """A fake bench that also starts (fake) sessions, recording each variant asked for."""

    def __init__(self, opts: Options, *, fail: str = "") -> None:
        super().__init__(opts)
        self.started: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail
        self.feed = Path("f")
        self.sessions: list[Any] = []

    async def fresh(self, contender: Any, plans: Any, run: Any = None, **variant: Any) -> Any:
        self.started.append((contender.name, variant))
        workers = variant.get("workers", 1)
        if contender.name == self.fail or f"x{workers}" == self.fail:
            raise ReplayError(f"{contender.name} did not answer its warm-up")
        label = contender.name if workers == 1 else f"{contender.name} x{workers}"
        stopped: list[bool] = []
        session = SimpleNamespace(
            label=label, workers=workers, stopped=stopped, stop=lambda: stopped.append(True)
        )
        self.sessions.append(session)
        return session


class _MixedBench(_FreshBench):
    """A ``_FreshBench`` whose sessions consume two input topics, ``t`` and ``l``."""

    async def fresh(self, contender: Any, plans: Any, run: Any = None, **variant: Any) -> Any:
        session = await super().fresh(contender, plans, run, **variant)
        session.cfg = SimpleNamespace(input_topics=("t", "l"))
        session.settings = SimpleNamespace(kafka=None)
        return session


def test_heavy_runs_the_10x_replay_with_the_bundle_and_skips_the_echo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every model contender gets the heavy bundle and the 10x replay; the echo (no model)
    is left out; a contender that does not start is a note, not a crash."""
    loads: list[tuple[str, str]] = []

    async def fake_trial(session: Any, plan: Any, pacing: Any, **kw: Any) -> Trial:
        loads.append((session.label, kw["load"]))
        assert pacing.speed == 10.0 and plan == "x10"
        return _t(session.label, 100.0, load=kw["load"])

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    opts = Options(out=tmp_path, feed=tmp_path / "f", repeats=1, heavy_bundle="/b/teacher")
    bench = _FreshBench(opts, fail="naive")
    plans = SimpleNamespace(x10="x10")
    sc = asyncio.run(scenarios.heavy(bench, plans, ["weir", "naive", "echo"]))  # type: ignore[arg-type]
    assert bench.started == [
        ("weir", {"bundle": "/b/teacher"}),
        ("naive", {"bundle": "/b/teacher"}),
    ]
    assert loads == [("weir", "heavy-10x")]
    assert sc.notes == ["naive: naive did not answer its warm-up"]


def test_mixed_runs_every_contender_on_the_mixed_bundle_with_both_budgets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``mixed_bundle`` and the two budgets reach every contender's session; each trial
    goes through the classed transport; the title names the model."""
    loads: list[tuple[str, str]] = []

    async def fake_trial(session: Any, plan: Any, pacing: Any, **kw: Any) -> Trial:
        loads.append((session.label, kw["load"]))
        assert pacing.speed == 6.0 and kw["transport"] == ("classed", ("t", "l"))
        return _t(session.label, None, 10.0, load=kw["load"])  # type: ignore[arg-type]

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    monkeypatch.setattr(scenarios, "load_plan", lambda feed, seconds: SimpleNamespace(n=10))
    monkeypatch.setattr(
        scenarios, "ClassedTransport", lambda kafka, topics, classes: ("classed", topics)
    )
    opts = Options(
        out=tmp_path,
        feed=tmp_path / "f",
        repeats=1,
        mixed_budgets_ms=(30.0, 300.0),
        mixed_speed=6.0,
        mixed_bundle="/b/wide",
    )
    bench = _MixedBench(opts)
    sc = asyncio.run(scenarios.mixed(bench, SimpleNamespace(), ["weir", "fixed-window"]))  # type: ignore[arg-type]
    assert bench.started == [
        ("weir", {"budgets_ms": (30.0, 300.0), "bundle": "/b/wide"}),
        ("fixed-window", {"budgets_ms": (30.0, 300.0), "bundle": "/b/wide"}),
    ]
    assert loads == [("weir", "mixed"), ("fixed-window", "mixed")]
    assert sc.title.endswith(", model /b/wide") and sc.params["bundle"] == "/b/wide"


def test_mixed_overload_offers_each_contender_its_own_capacity_times_the_factor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With rates, the mixed service gets ``mixed_overload`` x each contender's rate for
    ``mixed_s`` on the tiled feed (weir 100/s -> 300 events over 2 s, fixed 40/s -> 120),
    every event classed (tight share 0.5) through the classed transport; a contender with
    no rate is left out with a note; trials and the scenario are named for it."""
    seen: list[tuple[str, int, float, str, str, int]] = []

    async def fake_trial(session: Any, plan: Plan, pacing: Any, **kw: Any) -> Trial:
        topics, classes = kw["transport"]
        seen.append(
            (session.label, plan.n, plan.span_s / pacing.speed, kw["load"], kw["name"], classes)
        )
        assert topics == ("t", "l")
        return _t(session.label, None, 10.0, load=kw["load"])  # type: ignore[arg-type]

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    monkeypatch.setattr(
        scenarios,
        "ClassedTransport",
        lambda kafka, topics, classes: (topics, int((classes == 0).sum())),
    )
    opts = Options(
        out=tmp_path,
        feed=tmp_path / "f",
        repeats=1,
        mixed_s=2.0,
        mixed_overload=1.5,
        mixed_budgets_ms=(50.0, 500.0),
    )
    bench = _MixedBench(opts)
    plans = SimpleNamespace(base=_plan(50))
    rates = {"weir": 100.0, "fixed-window": 40.0}
    sc = asyncio.run(scenarios.mixed(bench, plans, ["weir", "fixed-window", "naive"], rates))  # type: ignore[arg-type]
    assert [(n, k, load, name, tight) for n, k, _, load, name, tight in seen] == [
        ("weir", 300, "mixed-1.5x", "mixed-overload-r1-weir", 150),
        ("fixed-window", 120, "mixed-1.5x", "mixed-overload-r1-fixed-window", 60),
    ]
    assert all(s == pytest.approx(2.0) for _, _, s, _, _, _ in seen)
    assert sc.name == "mixed-overload" and sc.params["capacity"] == rates
    assert sc.title.startswith("Mixed deadlines under overload: 50 ms and 500 ms")
    assert "1.5x each contender's max sustainable rate for 2 s" in sc.title
    assert sc.notes == ["naive: no max sustainable rate measured, not overloaded"]
    assert [s.label for s in bench.sessions] == ["weir", "fixed-window"]
    assert all(s.stopped == [True] for s in bench.sessions)


def test_mixed_overload_rates_need_the_mixed_bundles_capacity(tmp_path: Path) -> None:
    """The overload's capacities carry over only when its model is the mixed scenario's;
    a contender that sustained no rate gets the lowest it was offered."""
    over = Scenario(name="overload", title="", params={"capacity": {"weir": 1.0, "naive": 1.0}})
    capacity, lowest = {"weir": 4000.0}, {"weir": 1000.0, "naive": 1000.0}
    same = Options(out=tmp_path, feed=None, overload_bundle="/w", mixed_bundle="/w")
    assert scenarios.mixed_overload_rates(same, over, capacity, lowest) == {
        "weir": 4000.0,
        "naive": 1000.0,
    }
    both_default = Options(out=tmp_path, feed=None)
    assert scenarios.mixed_overload_rates(both_default, over, capacity, lowest) is not None
    other = Options(out=tmp_path, feed=None, overload_bundle="/w", mixed_bundle="/teacher")
    assert scenarios.mixed_overload_rates(other, over, capacity, lowest) is None
    run_bundle = Options(out=tmp_path, feed=None, bundle="/w", mixed_bundle="/w")
    assert scenarios.mixed_overload_rates(run_bundle, over, capacity, lowest) is not None


def test_scale_ramps_each_worker_count_and_stops_every_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Workers 1, 2 and 3 are asked for; 3 does not start (noted); 1 and 2 are ramped
    side by side under their labels and both stopped afterwards."""
    labels: list[str] = []

    async def fake_trial(session: Any, plan: Any, pacing: Any, **kw: Any) -> Trial:
        labels.append(session.label)
        return _t(session.label, float(pacing.rate), 1.0, load="scale", workers=session.workers)

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    opts = _one_repeat(tmp_path, ramp_start=100, ramp_max=100, workers=(1, 2, 3))
    bench = _FreshBench(opts, fail="x3")
    plans = SimpleNamespace(at_rate=lambda rate, seconds: rate)
    sc, stops = asyncio.run(scenarios.scale(bench, plans))  # type: ignore[arg-type]
    assert [v for _, v in bench.started] == [{"workers": 1}, {"workers": 2}, {"workers": 3}]
    assert labels == ["weir", "weir x2"] and stops == {"weir": "ceiling", "weir x2": "ceiling"}
    assert sc.notes == ["weir x3: weir did not answer its warm-up"]
    assert [t.workers for t in sc.trials] == [1, 2]
    assert [s.stopped for s in bench.sessions] == [[True], [True]]


def test_capacity_ramps_every_model_contender_on_the_overload_bundle(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each model contender starts on ``overload_bundle`` (the echo, with no model, is
    left out; one that does not start is a note) and is ramped under the tag
    ``capacity``; its sessions come back for the overload, and ``capacities`` reads each
    one's median max sustainable rate and the lowest rate it was offered from the steps."""
    limits = {"weir": 250.0, "fixed-window": 50.0}

    async def fake_trial(session: Any, plan: Any, pacing: Any, **kw: Any) -> Trial:
        rate = float(pacing.rate)
        p99 = 1.0 if rate <= limits[session.label] else 60.0
        return _t(session.label, rate, p99, load=kw["load"], repeat=kw["repeat"])

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    opts = _one_repeat(tmp_path, ramp_start=100, ramp_max=800, refine=0, overload_bundle="/b/wide")
    bench = _FreshBench(opts, fail="naive")
    plans = SimpleNamespace(at_rate=lambda rate, seconds: rate)
    names = ["weir", "naive", "fixed-window", "echo"]
    sc, sessions = asyncio.run(scenarios.capacity(bench, plans, names))  # type: ignore[arg-type]
    assert bench.started == [
        ("weir", {"bundle": "/b/wide"}),
        ("naive", {"bundle": "/b/wide"}),
        ("fixed-window", {"bundle": "/b/wide"}),
    ]
    assert sc.notes == ["naive: naive did not answer its warm-up"]
    assert {t.load for t in sc.trials} == {"capacity"} and sc.params["bundle"] == "/b/wide"
    assert sc.params["stopped"] == {"weir": "slo", "fixed-window": "slo"}
    assert [s.label for s in sessions] == ["weir", "fixed-window"]
    capacity, lowest = scenarios.capacities(sc.trials, BUDGET)
    assert capacity == {"weir": 200.0} and lowest == {"weir": 100.0, "fixed-window": 100.0}


def test_overload_on_its_own_bundle_names_it_and_keeps_the_capacities(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With ``overload_bundle`` the title names the model and the scenario keeps the rate
    each contender's factors multiplied."""

    async def fake_trial(session: Any, plan: Plan, pacing: Any, **kw: Any) -> Trial:
        return _t(session.label, plan.n / 2.0, load=kw["load"])

    monkeypatch.setattr(scenarios, "run_trial", fake_trial)
    opts = _one_repeat(tmp_path, overload_s=2.0, overload=(3.0,), overload_bundle="/b/wide")
    plans = SimpleNamespace(base=_plan(50))
    sessions = [SimpleNamespace(label=n) for n in ("weir", "naive")]
    sc, _ = asyncio.run(
        scenarios.overload(_FakeBench(opts), plans, sessions, {"weir": 100.0}, {"naive": 40.0})  # type: ignore[arg-type]
    )
    assert sc.title == (
        "Overload: the bursty feed at 3x each contender's max sustainable rate with /b/wide for 2 s"
    )
    assert sc.params["capacity"] == {"weir": 100.0, "naive": 40.0}
    assert sc.params["bundle"] == "/b/wide"


def test_ready_replaces_a_dirty_session_with_the_same_variant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A session that left work undecided is stopped and replaced by a fresh one with the
    same contender, workers, budgets and bundle; its restart count goes up; a clean one is
    kept."""
    opts = Options(out=tmp_path, feed=tmp_path / "f", settle_s=0.0)
    bench = harness.Bench(opts, say=lambda text: None)
    asked: list[dict[str, Any]] = []

    async def fresh(contender: Any, plans: Any, run: Any = None, **variant: Any) -> Any:
        asked.append({"contender": contender.name, **variant})
        return SimpleNamespace(restarts=0)

    monkeypatch.setattr(bench, "fresh", fresh)
    stopped: list[bool] = []
    old = SimpleNamespace(
        dirty=True,
        alive=True,
        contender=CONTENDERS["weir"],
        workers=2,
        cfg=SimpleNamespace(topic_budget_ms={"a": 5.0, "b": 100.0}, bundle="/b"),
        restarts=1,
        stop=lambda: stopped.append(True),
    )
    new = asyncio.run(bench.ready(old, None))  # type: ignore[arg-type]
    assert stopped == [True] and new.restarts == 2
    assert asked == [
        {"contender": "weir", "workers": 2, "budgets_ms": (5.0, 100.0), "bundle": "/b"}
    ]
    old.dirty = False
    assert asyncio.run(bench.ready(old, None)) is old  # type: ignore[arg-type]


def test_broker_warm_up_goes_through_the_echo_and_a_failure_only_notes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The warm-up replays broker_warmup_s at broker_warmup_rate into a fresh echo, stops it
    and notes what was decided; an echo that fails to start leaves a note, not an error."""
    opts = Options(out=tmp_path, feed=tmp_path / "f", broker_warmup_s=2.0, broker_warmup_rate=300)
    bench = harness.Bench(opts, say=lambda text: None)
    asked: list[str] = []
    stopped: list[bool] = []
    replayed: list[tuple[int, float | None]] = []

    async def measure(plan: Any, pacing: Any, **kw: Any) -> Any:
        replayed.append((plan.n, pacing.rate))
        return SimpleNamespace(completeness=SimpleNamespace(decided=plan.n)), None

    async def fresh(contender: Any, plans: Any, run: Any = None, **variant: Any) -> Any:
        asked.append(contender.name)
        return SimpleNamespace(measure=measure, stop=lambda: stopped.append(True))

    monkeypatch.setattr(bench, "fresh", fresh)
    plans = SimpleNamespace(at_rate=lambda rate, seconds: SimpleNamespace(n=round(rate * seconds)))
    note = asyncio.run(bench.warm_broker(plans))  # type: ignore[arg-type]
    assert asked == ["echo"] and replayed == [(600, 300)] and stopped == [True]
    assert note == (
        "broker warm-up: 600 events at 300/s through the echo before the first trial, "
        "not measured (600 decided)"
    )

    async def broken(contender: Any, plans: Any, run: Any = None, **variant: Any) -> Any:
        raise ReplayError("echo did not answer its warm-up")

    monkeypatch.setattr(bench, "fresh", broken)
    note = asyncio.run(bench.warm_broker(plans))  # type: ignore[arg-type]
    assert note == (
        "broker warm-up failed, the first trial ran on a cold broker: "
        "echo did not answer its warm-up"
    )
