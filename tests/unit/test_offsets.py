"""The offset tracker commits only below the lowest offset still in flight."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.offsets import OffsetError, OffsetTracker


def test_out_of_order_acks_hold_the_commit_point() -> None:
    """A later batch finishing first does not let the commit pass the earlier one."""
    t: OffsetTracker[str] = OffsetTracker()
    for off in range(10, 16):
        t.track("p0", off)
    for off in (13, 14, 15):
        t.ack("p0", off)
    assert t.committable("p0") == 10
    assert t.to_commit() == {"p0": 10}
    t.ack("p0", 10)
    t.ack("p0", 11)
    assert t.committable("p0") == 12
    t.ack("p0", 12)
    assert t.committable("p0") == 16
    assert t.pending() == 0


def test_to_commit_reports_only_moves() -> None:
    """After a commit, only partitions whose point advanced are reported."""
    t: OffsetTracker[str] = OffsetTracker()
    t.track("a", 0)
    t.track("b", 0)
    t.ack("a", 0)
    assert t.to_commit() == {"a": 1}
    t.committed({"a": 1})
    assert t.to_commit() == {}
    t.ack("b", 0)
    assert t.to_commit() == {"b": 1}


def test_errors_name_partition_and_offset() -> None:
    """Out-of-order tracking and unknown acks are refused with the offset named."""
    t: OffsetTracker[str] = OffsetTracker()
    t.track("p", 5)
    with pytest.raises(OffsetError, match=r"offset 5 of p tracked after 5: offsets must increase"):
        t.track("p", 5)
    with pytest.raises(OffsetError, match=r"offset 9 of p acknowledged but never tracked"):
        t.ack("p", 9)
    with pytest.raises(OffsetError, match=r"offset 1 of q acknowledged but never tracked"):
        t.ack("q", 1)


def test_reset_and_forget() -> None:
    """A reset partition starts at the given offset; a forgotten one has no commit point."""
    t: OffsetTracker[str] = OffsetTracker()
    t.reset("p", 100)
    assert t.committable("p") == 100
    assert t.to_commit() == {}
    t.track("p", 100)
    t.ack("p", 100)
    assert t.to_commit() == {"p": 101}
    t.forget("p")
    assert t.committable("p") is None


def test_owned_refuses_a_forgotten_partition_until_it_is_reset() -> None:
    """``owned`` makes a partition's offsets on first use, like ``partition``, but not for
    one forgotten (revoked) since: its records are another member's until a reset (an
    assignment) makes it this one's again."""
    t: OffsetTracker[str] = OffsetTracker()
    first = t.owned("p")
    assert first is not None and first is t.owned("p") is t.partition("p")
    t.forget("p")
    assert t.owned("p") is None and not t.holds("p")
    t.reset("p", 7)
    again = t.owned("p")
    assert again is not None and again is not first and again.last == 6


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60),
    data=st.data(),
)
def test_commit_point_never_passes_an_unacked_offset(gaps: list[int], data: st.DataObject) -> None:
    """In any ack order, the commit point is the lowest unacked offset, and ends one past the last."""
    offsets = []
    off = 0
    for g in gaps:
        off += g
        offsets.append(off)
    t: OffsetTracker[int] = OffsetTracker()
    for o in offsets:
        t.track(0, o)
    order = data.draw(st.permutations(offsets))
    acked: set[int] = set()
    for o in order:
        t.ack(0, o)
        acked.add(o)
        unacked = [x for x in offsets if x not in acked]
        expected = unacked[0] if unacked else offsets[-1] + 1
        assert t.committable(0) == expected
    assert t.pending() == 0


def test_acks_from_before_a_reset_change_nothing() -> None:
    """An acknowledgement of an offset below the reset point (a decision sent before the
    rewind or reassignment) neither moves the commit point nor counts as pending."""
    t: OffsetTracker[str] = OffsetTracker()
    for off in range(5):
        t.track("p", off)
    t.reset("p", 2)
    t.ack("p", 1)
    t.track("p", 2)
    assert t.committable("p") == 2 and t.pending("p") == 1
    t.ack("p", 2)
    assert t.committable("p") == 3 and t.pending("p") == 0
    assert t.holds("p") and not t.holds("q")


def test_ack_held_skips_a_forgotten_partition_and_acks_a_held_one() -> None:
    """``ack_held`` acknowledges like ``ack`` where the partition has state, changes nothing
    and says False where it was forgotten, and refuses an offset never tracked."""
    t: OffsetTracker[str] = OffsetTracker()
    for off in range(3):
        t.track("p", off)
    assert t.ack_held("p", 1) and t.committable("p") == 0
    assert t.ack_held("p", 0) and t.committable("p") == 2
    t.forget("p")
    assert not t.ack_held("p", 2)
    assert t.partitions() == []
    t.track("q", 4)
    with pytest.raises(OffsetError, match=r"offset 7 of q acknowledged but never tracked"):
        t.ack_held("q", 7)


def test_partition_object_tracks_like_the_tracker_until_replaced() -> None:
    """``partition`` gives one object per partition: tracking through it (``track``, or the
    pipeline's own append when the offset is above ``last``) is tracking in the tracker;
    ``reset`` and ``forget`` replace it, and the old one then changes nothing held."""
    t: OffsetTracker[str] = OffsetTracker()
    p = t.partition("p")
    assert t.partition("p") is p and p.tp == "p" and p.last == -1
    p.track(3)
    assert p.last < 4  # the pipeline's fast path
    p.inflight.append(4)
    p.last = 4
    assert t.pending("p") == 2 and t.committable("p") == 3
    with pytest.raises(OffsetError, match=r"offset 4 of p tracked after 4: offsets must increase"):
        p.track(4)
    t.ack("p", 3)
    t.ack("p", 4)
    assert t.committable("p") == 5
    t.reset("p", 50)
    fresh = t.partition("p")
    assert fresh is not p and fresh.last == 49 and t.committable("p") == 50
    p.track(5)  # the replaced object: nothing held moves
    assert t.committable("p") == 50 and t.pending("p") == 0
    t.forget("p")
    assert not t.holds("p")
    assert t.partition("p") is not fresh and t.holds("p")


def test_acks_through_the_partition_object_count_until_it_is_replaced() -> None:
    """``PartitionOffsets.ack`` acknowledges like the tracker's ``ack``, in any order; once a
    ``reset`` replaced the object, an ack through the old one changes nothing held."""
    t: OffsetTracker[str] = OffsetTracker()
    p = t.partition("p")
    for off in range(4):
        p.track(off)
    p.ack(1)
    assert t.committable("p") == 0
    p.ack(0)
    assert t.committable("p") == 2
    with pytest.raises(OffsetError, match=r"offset 9 of p acknowledged but never tracked"):
        p.ack(9)
    t.reset("p", 2)  # a rewind: 2 and 3 are read again
    p.ack(3)
    assert t.committable("p") == 2 and t.pending("p") == 0
    t.track("p", 2)
    p.ack(2)  # the old decision of 2, not the one now in flight
    assert t.committable("p") == 2 and t.pending("p") == 1
