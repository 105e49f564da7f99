"""Deadlines: when an event's decision is due, on the monotonic clock.

``deadline = anchor + budget``. The anchor is the ingest time (default), the Kafka record
timestamp, or the event's own source timestamp plus a clock-skew allowance. The last two are
wall-clock times from other machines; they are converted to the monotonic clock once, at
ingest, with a ``WallToMono`` offset, so the scheduler only ever compares monotonic ns.

A converted anchor later than the ingest time (the other clock runs ahead of ours) is clamped
to the ingest time: an event cannot have been made after we received it. A missing wall
timestamp (``None`` or negative, as Kafka sends -1) falls back to the ingest time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import msgspec

from service.errors import ConfigError
from service.settings import Anchor, SchedulerSettings

Clock = Callable[[], int]
"""A clock: returns integer nanoseconds. Monotonic unless its name says ``wall``."""


class Deadline:
    """The monotonic time (ns) by which an event's decision must be published."""

    __slots__ = ("mono_ns",)

    def __init__(self, mono_ns: int) -> None:
        self.mono_ns = mono_ns

    @classmethod
    def after(cls, budget_ns: int, *, clock: Clock = time.monotonic_ns) -> Deadline:
        """A deadline ``budget_ns`` from now on ``clock``."""
        return cls(clock() + budget_ns)

    def remaining_ns(self, now_ns: int) -> int:
        """Nanoseconds left at ``now_ns`` (negative once passed)."""
        return self.mono_ns - now_ns

    def passed(self, now_ns: int) -> bool:
        """Whether a decision published at ``now_ns`` would be late."""
        return now_ns > self.mono_ns

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Deadline):
            return self.mono_ns == other.mono_ns
        return NotImplemented

    def __lt__(self, other: Deadline) -> bool:
        return self.mono_ns < other.mono_ns

    def __le__(self, other: Deadline) -> bool:
        return self.mono_ns <= other.mono_ns

    def __gt__(self, other: Deadline) -> bool:
        return self.mono_ns > other.mono_ns

    def __ge__(self, other: Deadline) -> bool:
        return self.mono_ns >= other.mono_ns

    def __hash__(self) -> int:
        return hash(self.mono_ns)

    def __repr__(self) -> str:
        return f"Deadline(mono_ns={self.mono_ns})"


class WallToMono:
    """Converts wall-clock ns (Kafka and source timestamps) to monotonic ns.

    ``offset_ns = mono - wall``, measured as the narrowest of a few back-to-back readings
    (``error_ns`` is that reading's width). The wall clock may be stepped (NTP): call
    ``refresh`` now and then (e.g. once a second), never per event.
    """

    __slots__ = ("_mono", "_samples", "_wall", "error_ns", "offset_ns")

    def __init__(
        self, *, mono: Clock = time.monotonic_ns, wall: Clock = time.time_ns, samples: int = 5
    ) -> None:
        self._mono = mono
        self._wall = wall
        self._samples = max(1, samples)
        self.offset_ns = 0
        self.error_ns = 0
        self.refresh()

    def refresh(self) -> int:
        """Measure the offset again; return it."""
        best_width = -1
        best = 0
        for _ in range(self._samples):
            m0 = self._mono()
            w = self._wall()
            m1 = self._mono()
            width = m1 - m0
            if best_width < 0 or width < best_width:
                best_width = width
                best = (m0 + m1) // 2 - w
        self.offset_ns = best
        self.error_ns = best_width
        return best

    def to_mono(self, wall_ns: int) -> int:
        """The monotonic ns that corresponds to ``wall_ns``."""
        return wall_ns + self.offset_ns


class DeadlinePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How one topic's deadlines are made: budget, anchor and skew allowance (ns)."""

    budget_ns: int
    anchor: Anchor = Anchor.INGEST
    skew_ns: int = 0
    """Added to the budget when the anchor is the source timestamp (clocks disagree)."""

    def __post_init__(self) -> None:
        if self.budget_ns <= 0:
            raise ConfigError(f"deadline budget must be > 0 ns, got {self.budget_ns}")
        if self.skew_ns < 0:
            raise ConfigError(f"clock-skew allowance must be >= 0 ns, got {self.skew_ns}")

    @classmethod
    def for_topic(cls, settings: SchedulerSettings, topic: str) -> DeadlinePolicy:
        """The policy of ``topic`` from the scheduler settings (per-topic budget or default)."""
        ms = settings.topic_budget_ms.get(topic, settings.budget_ms)
        return cls(
            budget_ns=int(ms * 1e6),
            anchor=settings.anchor,
            skew_ns=int(settings.skew_allowance_ms * 1e6),
        )

    def deadline_ns(
        self,
        ingest_mono_ns: int,
        *,
        kafka_wall_ns: int | None = None,
        source_wall_ns: int | None = None,
        wall_to_mono_ns: int = 0,
    ) -> int:
        """The deadline in monotonic ns; ``wall_to_mono_ns`` is ``WallToMono.offset_ns``."""
        anchor = ingest_mono_ns
        extra = 0
        if self.anchor is Anchor.KAFKA:
            if kafka_wall_ns is not None and kafka_wall_ns >= 0:
                anchor = min(kafka_wall_ns + wall_to_mono_ns, ingest_mono_ns)
        elif self.anchor is Anchor.SOURCE and source_wall_ns is not None and source_wall_ns >= 0:
            anchor = min(source_wall_ns + wall_to_mono_ns, ingest_mono_ns)
            extra = self.skew_ns
        return anchor + self.budget_ns + extra

    def deadline(
        self,
        ingest_mono_ns: int,
        *,
        kafka_wall_ns: int | None = None,
        source_wall_ns: int | None = None,
        wall_to_mono_ns: int = 0,
    ) -> Deadline:
        """Like ``deadline_ns`` but as a ``Deadline``."""
        return Deadline(
            self.deadline_ns(
                ingest_mono_ns,
                kafka_wall_ns=kafka_wall_ns,
                source_wall_ns=source_wall_ns,
                wall_to_mono_ns=wall_to_mono_ns,
            )
        )


class Budgets:
    """Deadline policies per topic, with a default; built once from settings."""

    __slots__ = ("_by_topic", "default")

    def __init__(
        self, default: DeadlinePolicy, by_topic: Mapping[str, DeadlinePolicy] | None = None
    ) -> None:
        self.default = default
        self._by_topic = dict(by_topic or {})

    @classmethod
    def from_settings(cls, settings: SchedulerSettings) -> Budgets:
        """Every topic named in ``settings.topic_budget_ms`` plus the default."""
        return cls(
            DeadlinePolicy.for_topic(settings, ""),
            {t: DeadlinePolicy.for_topic(settings, t) for t in settings.topic_budget_ms},
        )

    def policy(self, topic: str) -> DeadlinePolicy:
        """The policy of ``topic`` (the default when it has none of its own)."""
        return self._by_topic.get(topic, self.default)

    def own(self, topic: str) -> bool:
        """``topic`` has a budget of its own (``topic_budget_ms``): a class of its own,
        whose events are ordered per key among themselves only."""
        return topic in self._by_topic

    @property
    def smallest_budget_ns(self) -> int:
        """The tightest budget of any topic (what backpressure should be sized for)."""
        return min([self.default.budget_ns, *(p.budget_ns for p in self._by_topic.values())])
