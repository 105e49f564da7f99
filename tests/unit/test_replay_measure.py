"""The recorder: exact outcome counts, stage breakdown, series, and the coordinated-omission effect."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from replay.measure import Recorder, summarize
from replay.results import LatencySummary, decode_histogram
from schemas.decision import Decision, Stamps, Status

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def _decision(
    offset: int,
    status: Status = Status.OK,
    *,
    late: bool = False,
    batch: int = 1,
    stamps: Stamps | None = None,
    topic: str = "in",
) -> Decision:
    return Decision(
        topic=topic,
        partition=0,
        offset=offset,
        key="K",
        model_version="t",
        status=status,
        late=late,
        batch_size=batch,
        stamps=stamps or Stamps(),
    )


@pytest.fixture
def sent_recorder() -> Callable[..., Recorder]:
    """A recorder with ``n`` inputs sent on time every ``gap_ms`` and bound to offset = seq."""

    def make(n: int, gap_ms: float = 1.0) -> Recorder:
        rec = Recorder(4)
        for i in range(n):
            t = T0 + int(i * gap_ms * MS)
            rec.sent(i, t, t)
            rec.bound(i, "in", 0, i)
        return rec

    return make


def test_counts_every_outcome_exactly(sent_recorder: Callable[..., Recorder]) -> None:
    """Lost, duplicated, dead-lettered, unmatched and each status are counted exactly."""
    rec = sent_recorder(100)
    statuses = {10: Status.EXPIRED, 11: Status.SHED, 12: Status.SHED, 13: Status.ERROR}
    warming = {0, 1, 2}
    lost = {50, 51, 52, 53}
    dead = {60}
    for i in range(100):
        if i in lost:
            continue
        t = T0 + i * MS + 2 * MS
        if i in dead:
            rec.dead_lettered("in", 0, i, t)
            continue
        status = Status.WARMING if i in warming else statuses.get(i, Status.OK)
        rec.decided(_decision(i, status), t)
        if i % 20 == 5:
            rec.decided(_decision(i, status), t + MS)
            rec.decided(_decision(i, status), t + 2 * MS)
    rec.decided(_decision(5000), T0)  # names no input of this run
    rec.garbled()
    c = rec.finish(budget_ms=10).completeness
    assert (c.inputs, c.decided, c.lost, c.dead_lettered) == (100, 95, 4, 1)
    assert (c.duplicated, c.duplicated_inputs) == (10, 5)
    assert (c.unmatched, c.undecodable) == (1, 1)
    assert c.by_status == {"ok": 88, "expired": 1, "shed": 2, "warming": 3, "error": 1}
    assert c.misses == 4 + 1 + 2 + 1
    assert c.attainment == pytest.approx(88 / (100 - 3 - 1))


def test_late_and_over_budget_are_misses(sent_recorder: Callable[..., Recorder]) -> None:
    """An ok decision flagged late, published past its deadline, or over budget is a miss."""
    rec = sent_recorder(10)
    for i in range(10):
        t = T0 + i * MS
        stamps = Stamps(publish_wall_ns=t + 3 * MS, deadline_wall_ns=t + 5 * MS)
        if i == 1:
            stamps = Stamps(publish_wall_ns=t + 6 * MS, deadline_wall_ns=t + 5 * MS)
        arrival = t + (20 * MS if i == 2 else 4 * MS)
        rec.decided(_decision(i, late=i == 0, stamps=stamps), arrival)
    c = rec.finish(budget_ms=10).completeness
    assert (c.late, c.over_budget, c.misses) == (2, 1, 3)
    assert c.attainment == pytest.approx(7 / 10)


def test_decision_before_its_coordinates_is_matched_later() -> None:
    """A decision that arrives before the producer's ack names its input is held, then matched."""
    rec = Recorder(2)
    rec.sent(0, T0, T0)
    rec.decided(_decision(7), T0 + 3 * MS)
    assert rec.outstanding == 1
    rec.bound(0, "in", 0, 7)
    c = rec.finish(budget_ms=5).completeness
    assert (c.decided, c.lost, c.unmatched) == (1, 0, 0)


def test_stage_breakdown_from_stamps() -> None:
    """Stages are the differences of consecutive stamps, from send to arrival."""
    rec = Recorder(1)
    rec.sent(0, T0, T0 + 1 * MS)
    rec.bound(0, "in", 0, 0)
    stamps = Stamps(
        ingest_wall_ns=T0 + 3 * MS,
        dispatch_wall_ns=T0 + 7 * MS,
        infer_done_wall_ns=T0 + 8 * MS,
        publish_wall_ns=T0 + 9 * MS,
    )
    rec.decided(_decision(0, stamps=stamps), T0 + 12 * MS)
    m = rec.finish(budget_ms=50)
    want = {"broker_in": 2, "queue_wait": 4, "inference": 1, "publish": 1, "broker_out": 3}
    for stage, ms in want.items():
        assert m.stages[stage].max_ms == pytest.approx(ms), stage
    assert m.latency["e2e"].max_ms == pytest.approx(12)
    assert m.latency["raw"].max_ms == pytest.approx(11)
    assert m.sender.lag.max_ms == pytest.approx(1)


def test_stall_shows_in_corrected_latency_only() -> None:
    """A 1 s sender stall at 1000 events/s leaves raw latency at 1 ms but spreads the wait
    over the corrected latency of the 1000 events due meanwhile (wrk2's correction)."""
    rec = Recorder(16)
    n = 10_000
    stall_from, stall_to = 5_000, 6_000  # events due in [5 s, 6 s) go out at 6 s
    for i in range(n):
        intended = T0 + i * MS
        actual = T0 + stall_to * MS if stall_from <= i < stall_to else intended
        rec.sent(i, intended, actual)
        rec.bound(i, "in", 0, i)
        rec.decided(_decision(i), actual + MS)
    m = rec.finish(budget_ms=10, lag_threshold_ms=50)
    raw, e2e = m.latency["raw"], m.latency["e2e"]
    assert raw.pct(99.99) == pytest.approx(1.0, rel=2e-3)
    # 10 % of events waited U(0, 1 s]: the top 10 % spread linearly up to 1 s.
    for p, want_ms in ((95.0, 501.0), (99.0, 901.0), (99.9, 991.0)):
        assert e2e.pct(p) == pytest.approx(want_ms, rel=3e-3), p
    assert e2e.pct(89.0) == pytest.approx(1.0, rel=2e-3)
    assert m.sender.behind and m.sender.lag.max_ms == pytest.approx(1000)
    assert m.completeness.over_budget == 1000 - 9
    assert m.series.p99_ms[5] is not None and m.series.p99_ms[5] > 900
    assert m.series.raw_p99_ms[5] == pytest.approx(1.0)
    assert m.series.misses["over_budget"][5] == 1000 - 9


def test_series_bins_by_second(sent_recorder: Callable[..., Recorder]) -> None:
    """Per-second series count sends, decisions, misses and batch sizes in the right second."""
    rec = sent_recorder(3000)  # 3 s at 1000/s
    for i in range(3000):
        status = Status.SHED if i in (1500, 1501) else Status.OK
        rec.decided(_decision(i, status, batch=4 if i < 1000 else 8), T0 + i * MS + 2 * MS)
    s = rec.finish(budget_ms=10).series
    assert s.t_s == [0, 1, 2, 3]
    assert s.sent == [1000, 1000, 1000, 0]
    assert s.decided == [998, 1000, 1000, 2]
    assert s.misses["shed"] == [0, 2, 0, 0]
    assert s.batch_mean[:3] == [4.0, 8.0, 8.0] and s.batch_max[:3] == [4, 8, 8]
    assert s.p50_ms[0] == pytest.approx(2.0)


def test_summary_clamps_only_negative_values() -> None:
    """Negative values (two clocks) are recorded as 0 and counted; 70 s is measured as 70 s."""
    s = summarize(np.array([-5 * MS, 2 * MS, 70_000 * MS], dtype=np.int64))
    assert (s.count, s.clamped_low, s.clamped_high) == (3, 1, 0)
    hist = decode_histogram(s.hdr)
    assert hist.get_total_count() == 3
    assert hist.get_max_value() == pytest.approx(70_000 * MS, rel=1e-3)
    assert s.max_ms == 70_000.0 and s.min_ms == 0.0
    assert s.range_max_ms >= 70_000.0
    assert s.pct(50) == pytest.approx(2.0, rel=1e-3)


def test_latency_past_60_s_is_measured(sent_recorder: Callable[..., Recorder]) -> None:
    """A service that answers every decision 300 s after its send is measured at 300 s
    (not at the 60 s top of a fixed histogram range), and every answer is over budget."""
    rec = sent_recorder(300)
    for i in range(300):
        rec.decided(_decision(i), T0 + i * MS + 300_000 * MS)
    m = rec.finish(budget_ms=50)
    e2e = m.latency["e2e"]
    assert e2e.max_ms == 300_000.0 and e2e.mean_ms == 300_000.0
    for p in (50, 99, 99.9):
        assert e2e.pct(p) == pytest.approx(300_000.0, rel=1e-3), p
    assert decode_histogram(e2e.hdr).get_value_at_percentile(50) >= 300_000 * MS
    assert e2e.clamped_high == 0 and not e2e.beyond_range(99)
    assert m.completeness.over_budget == 300 and m.completeness.attainment == 0.0
    assert rec.snapshot().p99_ms == pytest.approx(300_000.0, rel=0.06)


def test_old_results_with_values_past_60_s_are_lower_bounds() -> None:
    """In a summary whose values went past the histogram's range (results written with the old
    fixed 60 s range), the percentiles those values reach are only lower bounds."""
    s = LatencySummary(count=300, max_ms=60_000.0, clamped_high=30)
    assert [s.beyond_range(p) for p in (50.0, 90.0, 90.1, 99.0)] == [False, False, True, True]
    assert s.beyond_range()
    assert not LatencySummary(count=300, max_ms=60_000.0).beyond_range()
