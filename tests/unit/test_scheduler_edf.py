"""weir's EDF scheduler: example cases of the dispatch rule, expiry, shedding, backpressure."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.profile import LatencyProfile
from service.errors import ConfigError
from service.scheduler import Batch, Deadline, EdfScheduler, Item, Outcome, SchedulerError
from service.settings import ExpiryPolicy

US = 1_000


def make_profile(base_us: int = 100, slope_us: int = 10, max_batch: int = 16) -> LatencyProfile:
    """p50 = base + slope*b, p99 = 1.5x, p99.9 = 2x (us); never refreshed online."""
    samples = {}
    b = 1
    while b <= max_batch:
        p50 = (base_us + slope_us * b) * US
        arr = np.empty(1000, dtype=np.int64)
        arr[:990], arr[990:999], arr[999:] = p50, p50 * 3 // 2, p50 * 2
        samples[b] = arr
        b *= 2
    return LatencyProfile(samples, refresh_every=10**9)


def make_edf(**kw: object) -> EdfScheduler[int]:
    """An EDF scheduler on the default test profile, guard 0 unless stated."""
    kw.setdefault("guard_ns", 0)
    return EdfScheduler(make_profile(), **kw)  # type: ignore[arg-type]


def item(p: int, key: object, deadline_ns: int) -> Item[int]:
    """An item with payload ``p``."""
    return Item(p, key, Deadline(deadline_ns))


def test_profile_helper_has_the_stated_quantiles() -> None:
    """The test profile's p99 and p99.9 are 1.5x and 2x its p50."""
    prof = make_profile()
    assert (prof.p50_ns(4), prof.p99_ns(4), prof.p999_ns(4)) == (140 * US, 210 * US, 280 * US)


def test_lone_event_waits_until_latest_safe_start() -> None:
    """One event with slack waits until deadline - p99.9(1) - guard, then dispatches alone."""
    s = make_edf(guard_ns=5 * US)
    assert s.submit(item(0, "a", 10_000 * US), 0) is None
    assert s.poll(0) == 10_000 * US - 220 * US - 5 * US
    batch = s.poll(10_000 * US - 225 * US)
    assert isinstance(batch, Batch)
    assert [i.payload for i in batch.items] == [0] and batch.bucket == 1


def test_dispatches_at_once_when_queue_fills_the_bucket() -> None:
    """When queued events fill the largest bucket that fits, they go now, most urgent first."""
    s = make_edf()
    # Slack 400us: p99(4) = 210us fits, p99(8) = 270us fits, p99(16) = 390us fits.
    for p in range(16):
        s.submit(item(p, p, 400 * US + (15 - p) * US), 0)
    batch = s.poll(0)
    assert isinstance(batch, Batch)
    assert batch.bucket == 16
    assert [i.payload for i in batch.items] == list(range(15, -1, -1))


def test_bucket_is_bounded_by_the_earliest_deadline() -> None:
    """Only as many events go as the earliest deadline allows; the rest wait for the next poll."""
    s = make_edf()
    for p in range(10):
        s.submit(item(p, p, 250 * US), 0)  # p99(4) = 210 fits, p99(8) = 270 does not
    batch = s.poll(0)
    assert isinstance(batch, Batch) and len(batch.items) == 4
    assert s.queued == 6 and s.busy and s.poll(0) is None


def test_hopeless_event_with_idle_key_is_expired_at_submit() -> None:
    """An event that cannot finish even alone, with nothing of its key queued, expires at once."""
    s = make_edf()
    assert s.submit(item(0, "a", 149 * US), 0) is Outcome.EXPIRED
    assert s.queued == 0


def test_event_turning_hopeless_in_queue_is_expired_by_poll() -> None:
    """A queued event whose deadline can no longer be met comes back in batch.expired."""
    s = make_edf()
    s.submit(item(0, "a", 1_000 * US), 0)
    s.submit(item(1, "b", 5_000 * US), 0)
    batch = s.poll(900 * US)
    assert isinstance(batch, Batch)
    assert [i.payload for i in batch.expired] == [0] and batch.items == []
    assert s.queued == 1 and not s.busy


def test_infer_late_policy_runs_hopeless_events_marked_late() -> None:
    """With the infer-late policy a hopeless event is inferred at once with ``late`` set."""
    s = make_edf(expiry=ExpiryPolicy.INFER_LATE)
    assert s.submit(item(0, "a", 100 * US), 0) is None
    batch = s.poll(0)
    assert isinstance(batch, Batch)
    assert [(i.payload, i.late) for i in batch.items] == [(0, True)] and not batch.expired


def test_later_urgent_event_pulls_its_key_forward() -> None:
    """An earlier event of a key inherits the deadline of a more urgent later one."""
    s = make_edf()
    s.submit(item(0, "slow", 9_000 * US), 0)
    s.submit(item(1, "other", 3_000 * US), 0)
    s.submit(item(2, "slow", 1_000 * US), 0)  # key "slow" is now due at 1 ms
    assert s.poll(0) == 1_000 * US - 280 * US  # latest start for 3 queued (bucket 4)
    batch = s.poll(720 * US)
    assert isinstance(batch, Batch)
    assert [i.payload for i in batch.items] == [0, 2, 1]


def test_queue_bound_sheds_new_events() -> None:
    """Past max_queued a new event is shed and the queue does not grow."""
    s = make_edf(max_queued=2)
    assert s.submit(item(0, "a", 10**9), 0) is None
    assert s.submit(item(1, "a", 10**9), 0) is None
    assert s.submit(item(2, "b", 10**9), 0) is Outcome.SHED
    assert s.queued == 2


def test_backpressure_pauses_and_resumes_with_hysteresis() -> None:
    """Predicted delay past the budget pauses; it resumes only below half of that level."""
    calls: list[bool] = []
    # p99(16) = 390us per 16 events: a 1 ms budget holds 1_000*16//390 = 41 events.
    s = make_edf(budget_ns=1_000 * US, on_backpressure=calls.append)
    for p in range(42):
        s.submit(item(p, p, 10**9), 0)
    assert s.paused and calls == [True]
    while s.queued > 20:
        b = s.poll(10**9 - 10**6)
        assert isinstance(b, Batch)
        assert s.paused or s.queued <= 20
        s.complete(b, 100 * US)
    assert not s.paused and calls == [True, False]


def _overloaded(**kw: object) -> EdfScheduler[int]:
    """Four urgent heads (deadline 200us: only buckets 1 and 2 fit), key "k" urgent then
    relaxed, and 40 relaxed events (1 ms); 45 queued, past the 41 a 1 ms budget holds."""
    s = make_edf(**kw)
    for p in range(4):
        s.submit(item(p, f"u{p}", 200 * US), 0)
    s.submit(item(4, "k", 200 * US), 0)
    s.submit(item(5, "k", 1_000 * US), 0)
    for p in range(6, 45):
        s.submit(item(p, p, 1_000 * US), 0)
    return s


def test_overload_runs_the_bucket_that_decides_most_in_time() -> None:
    """Paused, the 16-bucket (16 in time per 390us) beats the 2-bucket the urgent heads force
    (2 per 180us); the heads it would miss are shed, which frees key "k"'s next event."""
    s = _overloaded(budget_ns=1_000 * US)
    assert s.paused
    batch = s.poll(0)
    assert isinstance(batch, Batch) and batch.bucket == 16 and len(batch.items) == 16
    assert sorted(i.payload for i in batch.shed) == [0, 1, 2, 3, 4] and not batch.expired
    assert [i.payload for i in batch.items] == list(range(5, 21))
    assert s.queued == 45 - 16 - 5


def test_without_overload_edf_serves_the_urgent_heads_first() -> None:
    """Not paused (no budget, large queue bound), the urgent heads go first, bucket 2."""
    s = _overloaded()
    assert not s.paused
    batch = s.poll(0)
    assert isinstance(batch, Batch) and batch.bucket == 2
    assert {i.payload for i in batch.items} <= {0, 1, 2, 3, 4}


def test_overload_keeps_edf_when_the_forced_bucket_is_best() -> None:
    """Paused, but with every head able to wait for a full batch, EDF's own choice stands."""
    s = make_edf(budget_ns=1_000 * US)
    for p in range(45):
        s.submit(item(p, p, 1_000 * US + p * US), 0)
    batch = s.poll(0)
    assert isinstance(batch, Batch) and batch.bucket == 16
    assert [i.payload for i in batch.items] == list(range(16))


def test_publish_tail_is_planned_for_and_a_stall_ages_out() -> None:
    """The longest recent publish tail comes off the slack; a stalled publish counts only
    until 256 newer tails have replaced it."""
    s = make_edf()
    s.note_publish(50_000 * US, 0)  # a stall
    for _ in range(15):
        s.note_publish(60 * US, 0)
    assert s.tail_ns == 50_000 * US
    for _ in range(256):
        s.note_publish(60 * US, 0)
    assert s.tail_ns == 60 * US
    # Slack 400us: without the tail p99(16) = 390us fits; with it only p99(8) = 270us does.
    for p in range(16):
        s.submit(item(p, p, 400 * US), 0)
    batch = s.poll(0)
    assert isinstance(batch, Batch) and batch.bucket == 8


def test_backpressure_pauses_before_the_queue_bound() -> None:
    """Without a budget the flag still rises at pause_fraction of max_queued."""
    s = make_edf(max_queued=8, pause_fraction=0.5)
    for p in range(5):
        s.submit(item(p, p, 10**9), 0)
    assert s.paused


def test_max_hold_caps_the_wait() -> None:
    """With max_hold_ns a lone event waits at most that long after it was queued."""
    s = make_edf(max_hold_ns=50 * US)
    s.submit(item(0, "a", 10_000 * US), 1_000)
    assert s.poll(1_000) == 1_000 + 50 * US


def test_guard_follows_measured_wake_lateness() -> None:
    """Late timer wakes raise the guard (so waits end earlier); it falls back after two windows."""
    s = make_edf(guard_ns=10 * US, guard_window_ns=1_000_000)
    s.submit(item(0, "a", 10_000 * US), 0)
    assert s.poll(0) == 10_000 * US - 220 * US - 10 * US
    s.note_wake(500 * US, 100)
    assert s.guard_ns == 500 * US
    assert s.poll(200) == 10_000 * US - 220 * US - 500 * US
    s.note_wake(5 * US, 1_000_100)  # next window: the last one's maximum still counts
    assert s.guard_ns == 500 * US
    assert s.poll(2_000_200) == 10_000 * US - 220 * US - 10 * US  # two windows on: floor
    assert s.guard_ns == 10 * US


def test_poll_is_none_while_busy_and_complete_checks_the_batch() -> None:
    """A second batch waits for complete(); completing a foreign batch is an error."""
    s = make_edf()
    for p in range(20):
        s.submit(item(p, p, 10**6), 0)
    b = s.poll(10**6)  # everything hopeless: all expired, nothing in flight
    assert isinstance(b, Batch) and len(b.expired) == 20 and not s.busy
    s.submit(item(99, "a", 10**9), 0)
    b = s.poll(10**9 - 200 * US)
    assert isinstance(b, Batch) and s.poll(10**9 - 200 * US) is None
    other: Batch[int] = Batch([], (), 0, 0)
    with pytest.raises(SchedulerError) as e:
        s.complete(other, 1)
    assert str(e.value).startswith("complete() for a batch that is not in flight: Batch(items=0")
    s.complete(b, 123 * US)
    assert not s.busy and s.poll(0) is None


def test_bad_settings_are_refused() -> None:
    """Constructor arguments out of range raise ConfigError naming the value."""
    with pytest.raises(ConfigError, match=r"^max_queued must be >= 1, got 0$"):
        make_edf(max_queued=0)
    with pytest.raises(ConfigError, match=r"^resume_fraction must be in \(0, 1\), got 1.0$"):
        make_edf(resume_fraction=1.0)


def _reference_picks(queues: dict[object, list[tuple[int, int, int]]], n: int) -> list[int]:
    """EDF by hand: ``n`` times, the head of the key whose queue holds the earliest deadline
    (its head's effective deadline), ties to the earlier submitted; payloads in pick order."""
    picks: list[int] = []
    while len(picks) < n and any(queues.values()):
        key = min(
            (k for k, q in queues.items() if q),
            key=lambda k: (min(d for _, d, _ in queues[k]), queues[k][0][2]),
        )
        picks.append(queues[key].pop(0)[0])
    return picks


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2_000)), min_size=1, max_size=60))
def test_batches_take_events_in_effective_deadline_order(events: list[tuple[int, int]]) -> None:
    """A batch holds the events a head-by-head EDF over effective deadlines picks, in that
    order, however the keys' runs interleave (each key's events in submit order)."""
    s = EdfScheduler(make_profile(base_us=1, slope_us=0), guard_ns=0, max_hold_ns=0)
    queues: dict[object, list[tuple[int, int, int]]] = {}
    for p, (key, dl_us) in enumerate(events):
        deadline = 10_000 * US + dl_us * US
        assert s.submit(item(p, key, deadline), 0) is None
        queues.setdefault(key, []).append((p, deadline, p))
    got: list[int] = []
    while s.queued:
        batch = s.poll(0)
        assert isinstance(batch, Batch) and not batch.expired
        want = _reference_picks(queues, len(batch.items))
        assert [i.payload for i in batch.items] == want
        got += want
        s.complete(batch, 1_000)
    assert sorted(got) == list(range(len(events)))


def test_a_key_run_stops_at_an_equal_deadline_submitted_earlier() -> None:
    """After a key's head, its next event goes on only while it comes first: an equal
    deadline of another key submitted earlier goes before it."""
    s = make_edf(max_hold_ns=0)
    for p, (key, dl) in enumerate([("a", 10_000), ("b", 20_000), ("a", 20_000), ("a", 30_000)]):
        assert s.submit(item(p, key, dl * US), 0) is None
    assert s.submit(item(4, "c", 50_000 * US), 0) is None
    batch = s.poll(0)
    assert isinstance(batch, Batch)
    assert [i.payload for i in batch.items] == [0, 1, 2, 3, 4]


def test_backpressure_follows_a_profile_change_between_polls() -> None:
    """A slower profile lowers the pause level for the very next submit, without a poll."""
    prof = make_profile()
    s = EdfScheduler(prof, guard_ns=0, budget_ns=10_000 * US)
    # p99(16) = 390 us: the budget allows 10_000 * 16 // 390 = 410 queued.
    for p in range(300):
        s.submit(item(p, p, 10**12), 0)
    assert not s.paused
    for _ in range(50):  # p99(16) rises to 1 ms: 10_000 * 16 // 1_000 = 160 queued
        prof.observe(16, 1_000 * US, refresh_every=50)
    assert prof.p99_ns(16) == 1_000 * US
    s.submit(item(300, 300, 10**12), 0)
    assert s.paused


def test_backpressure_follows_an_adopted_profile() -> None:
    """A live model swap adopts the new version's profile in place: the pause level follows
    it at the very next submit (the cached level is keyed on the profile's version)."""
    prof = make_profile()
    s = EdfScheduler(prof, guard_ns=0, budget_ns=10_000 * US)
    for p in range(300):
        s.submit(item(p, p, 10**12), 0)
    assert not s.paused
    slower = LatencyProfile({b: [1_000 * US] * 50 for b in prof.buckets})
    prof.adopt(slower)  # p99(16) = 1 ms: 10_000 * 16 // 1_000 = 160 queued
    s.submit(item(300, 300, 10**12), 0)
    assert s.paused


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 300), st.integers(0, 400), st.booleans()),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([ExpiryPolicy.PUBLISH, ExpiryPolicy.INFER_LATE]),
    st.sampled_from([None, 0, 50 * US]),
)
def test_the_lane_makes_the_batches_the_keyed_queue_makes(
    events: list[tuple[int, int, int, bool]], expiry: ExpiryPolicy, hold: int | None
) -> None:
    """With deadlines that never decrease (one budget, ingest order) the lane hands out the
    same batches, expiries and wake times as the per-key queues and heap it stands for,
    with or without a hold cap, up to the backpressure level."""
    kw = {"expiry": expiry, "max_queued": 30, "max_hold_ns": hold, "budget_ns": 3_000 * US}
    lane = make_edf(**kw)
    keyed = make_edf(**kw)
    now = deadline = 0
    for p, (key, gap_us, step_us, poll) in enumerate(events):
        now += gap_us * US
        deadline = max(deadline, now + step_us * US)
        a, b = item(p, key, deadline), item(p, key, deadline)
        assert lane.submit(a, now) == keyed.submit(b, now)
        keyed._to_keyed()  # the lane's events, moved as a deadline before the last would
        if poll:
            _poll_both(lane, keyed, now)
        assert lane.queued == keyed.queued and lane.paused == keyed.paused


def test_a_deadline_before_the_lane_s_last_keeps_edf_and_key_order() -> None:
    """An event more urgent than the lane's last moves the queue to per-key EDF: it goes
    first, and its key's earlier event inherits its deadline; once empty, the lane again."""
    s = make_edf(max_hold_ns=0)
    for p, (key, dl) in enumerate([("a", 5_000), ("b", 6_000), ("c", 7_000), ("c", 8_000)]):
        assert s.submit(item(p, key, dl * US), 0) is None
    assert s.submit(item(4, "d", 1_000 * US), 0) is None
    assert s.submit(item(5, "b", 2_000 * US), 0) is None
    batch = s.poll(0)
    assert isinstance(batch, Batch)
    assert [i.payload for i in batch.items] == [4, 1, 5, 0, 2, 3]
    s.complete(batch, 1_000)
    for p in (6, 7):
        assert s.submit(item(p, "a", 9_000 * US), 0) is None
    batch = s.poll(0)
    assert isinstance(batch, Batch) and [i.payload for i in batch.items] == [6, 7]


def test_a_hopeless_event_behind_the_lane_expires_at_submit_only_if_its_key_is_idle() -> None:
    """With events queued, a hopeless event of a key with nothing queued is expired at once;
    one of a queued key waits (its key's order) and expires at the poll."""
    s = make_edf()
    assert s.submit(item(0, "a", 10_000 * US), 0) is None
    assert s.submit(item(1, "b", 10_050 * US), 0) is None
    assert s.submit(item(2, "c", 10_100 * US), 9_950 * US) is Outcome.EXPIRED
    assert s.submit(item(3, "a", 10_100 * US), 9_950 * US) is None
    assert s.queued == 3
    batch = s.poll(9_950 * US)
    assert isinstance(batch, Batch)
    assert [i.payload for i in batch.expired] == [0, 1, 3]


def test_submit_all_queues_every_item_or_none() -> None:
    """``submit_all`` queues a run whose deadlines do not decrease, all below the bound, and
    refuses (queuing nothing) a decreasing run, one past the bound, a hopeless first
    event with nothing in flight, or any run while events are queued per key."""
    s = make_edf(max_queued=6, max_hold_ns=0)
    run = [item(p, p % 2, 5_000 * US + p * US) for p in range(4)]
    assert s.submit_all(run, 10) and s.queued == 4
    assert all(i.enqueued_ns == 10 for i in run)
    assert not s.submit_all([item(4, "x", 6_000 * US), item(5, "y", 5_500 * US)], 10)
    assert not s.submit_all([item(4, "x", 6_000 * US)] * 3, 10)
    assert not s.submit_all([item(4, "x", 100 * US)], 0)
    assert not s.submit_all([], 0)
    assert s.queued == 4
    assert s.submit(item(4, "x", 4_000 * US), 0) is None  # before the lane's last: per key
    assert not s.submit_all([item(5, "y", 9_000 * US)], 0)
    batch = s.poll(0)
    assert isinstance(batch, Batch)
    assert [i.payload for i in batch.items] == [4, 0, 1, 2, 3]
    s.complete(batch, 1_000)
    assert s.submit_all([item(5, "y", 9_000 * US)], 0)  # the queue emptied: the lane again


def test_submit_all_pauses_past_the_backpressure_level() -> None:
    """A run that takes the queue past the pause level turns backpressure on."""
    calls: list[bool] = []
    s = make_edf(max_queued=8, pause_fraction=0.5, on_backpressure=calls.append)
    assert s.submit_all([item(p, p, 10**12) for p in range(5)], 0)
    assert s.paused and calls == [True]


def _poll_both(a: EdfScheduler[int], b: EdfScheduler[int], now: int) -> None:
    """Poll both at ``now``: the same wake time, or the same batch by payload (then both
    complete it)."""
    got, want = a.poll(now), b.poll(now)
    if not isinstance(want, Batch):
        assert got == want
        return
    assert isinstance(got, Batch)
    for attr in ("items", "expired", "shed"):
        assert [i.payload for i in getattr(got, attr)] == [i.payload for i in getattr(want, attr)]
    assert [i.late for i in got.items] == [i.late for i in want.items]
    assert got.bucket == want.bucket
    if got.items:
        a.complete(got, 1_000)
        b.complete(want, 1_000)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(st.integers(0, 3), st.sampled_from([100, 400, 2_000])), max_size=8),
            st.integers(0, 500),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=20,
    ),
    st.integers(1, 30),
    st.sampled_from([ExpiryPolicy.PUBLISH, ExpiryPolicy.INFER_LATE]),
)
def test_submit_all_decides_as_submitting_one_by_one(
    runs: list[tuple[list[tuple[int, int]], int, bool, bool]],
    max_queued: int,
    expiry: ExpiryPolicy,
) -> None:
    """A run handed over with ``submit_all`` (and ``submit`` one by one where it is refused,
    as the pipeline does) leaves the scheduler as submitting each would: the same
    immediate outcomes, batches, expiries, wake times and backpressure."""
    a = make_edf(expiry=expiry, max_queued=max_queued, pause_fraction=0.5, budget_ns=2_000 * US)
    b = make_edf(expiry=expiry, max_queued=max_queued, pause_fraction=0.5, budget_ns=2_000 * US)
    now = p = 0
    for run, gap_us, ordered, poll in runs:
        now += gap_us * US
        spec = sorted(run, key=lambda kb: kb[1]) if ordered else run
        mine = [item(p + i, k, now + budget * US) for i, (k, budget) in enumerate(spec)]
        theirs = [item(p + i, k, now + budget * US) for i, (k, budget) in enumerate(spec)]
        p += len(spec)
        if a.submit_all(mine, now):
            got: list[Outcome | None] = [None] * len(mine)
        else:
            got = [a.submit(it, now) for it in mine]
        assert got == [b.submit(it, now) for it in theirs]
        assert (a.queued, a.paused) == (b.queued, b.paused)
        if poll:
            _poll_both(a, b, now)
            assert (a.queued, a.paused) == (b.queued, b.paused)
