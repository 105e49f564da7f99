"""Deadlines: value objects, anchors, clock conversion, per-topic budgets."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.scheduler import Budgets, Deadline, DeadlinePolicy, WallToMono
from service.settings import Anchor, SchedulerSettings


def test_deadline_compares_and_counts_down() -> None:
    """A deadline orders by its monotonic ns, counts down and is passed only after it."""
    d = Deadline(1_000)
    assert d < Deadline(1_001) and d <= Deadline(1_000) and d == Deadline(1_000)
    assert d.remaining_ns(400) == 600
    assert not d.passed(1_000) and d.passed(1_001)
    assert Deadline.after(50, clock=lambda: 7) == Deadline(57)
    assert repr(d) == "Deadline(mono_ns=1000)"


def test_ingest_anchor_is_the_default() -> None:
    """With the ingest anchor the deadline is ingest + budget whatever the wall stamps say."""
    p = DeadlinePolicy(budget_ns=5_000)
    assert p.deadline_ns(100, kafka_wall_ns=1, source_wall_ns=2, wall_to_mono_ns=-5) == 5_100


def test_kafka_anchor_converts_wall_time_to_monotonic() -> None:
    """A Kafka timestamp is moved onto the monotonic clock with the measured offset."""
    p = DeadlinePolicy(budget_ns=5_000, anchor=Anchor.KAFKA)
    # wall 10_000 + offset (-9_500) = mono 500, before ingest at 900.
    assert p.deadline_ns(900, kafka_wall_ns=10_000, wall_to_mono_ns=-9_500) == 5_500


def test_anchor_after_ingest_is_clamped_to_ingest() -> None:
    """An anchor later than ingest (the other clock runs ahead) counts from ingest instead."""
    p = DeadlinePolicy(budget_ns=5_000, anchor=Anchor.KAFKA)
    assert p.deadline_ns(900, kafka_wall_ns=20_000, wall_to_mono_ns=-9_500) == 5_900


def test_source_anchor_adds_the_skew_allowance() -> None:
    """The source anchor adds the clock-skew allowance to the budget."""
    p = DeadlinePolicy(budget_ns=5_000, anchor=Anchor.SOURCE, skew_ns=300)
    assert p.deadline(900, source_wall_ns=10_000, wall_to_mono_ns=-9_800) == Deadline(5_500)


def test_missing_wall_timestamp_falls_back_to_ingest() -> None:
    """No timestamp (None, or Kafka's -1) means the ingest time is the anchor."""
    p = DeadlinePolicy(budget_ns=5_000, anchor=Anchor.KAFKA)
    assert p.deadline_ns(900) == 5_900
    assert p.deadline_ns(900, kafka_wall_ns=-1) == 5_900


def test_bad_budget_is_a_config_error() -> None:
    """A zero budget or a negative skew allowance is refused with the value named."""
    with pytest.raises(ConfigError) as e:
        DeadlinePolicy(budget_ns=0)
    assert str(e.value) == "deadline budget must be > 0 ns, got 0"
    with pytest.raises(ConfigError) as e:
        DeadlinePolicy(budget_ns=1, skew_ns=-2)
    assert str(e.value) == "clock-skew allowance must be >= 0 ns, got -2"


def test_wall_to_mono_measures_the_offset() -> None:
    """The offset is mono - wall from the narrowest reading of fake clocks."""
    mono = iter(range(1_000, 10_000, 10))
    bridge = WallToMono(mono=lambda: next(mono), wall=lambda: 50_000, samples=3)
    assert bridge.offset_ns == 1_005 - 50_000
    assert bridge.error_ns == 10
    assert bridge.to_mono(50_100) == 1_105


def test_budgets_come_from_settings_per_topic() -> None:
    """Each topic gets its own budget from the settings, others the default."""
    s = SchedulerSettings(
        budget_ms=5.0, topic_budget_ms={"fast": 1.0}, anchor=Anchor.SOURCE, skew_allowance_ms=0.5
    )
    b = Budgets.from_settings(s)
    assert b.policy("fast") == DeadlinePolicy(
        budget_ns=1_000_000, anchor=Anchor.SOURCE, skew_ns=500_000
    )
    assert b.policy("other").budget_ns == 5_000_000
    assert b.smallest_budget_ns == 1_000_000
