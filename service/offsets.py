"""Offset tracker: commit only what every decision below it has made safe.

Each consumed record is ``track``-ed when it enters the service and ``ack``-ed once its
decision (or dead letter) has been produced and acknowledged by the broker. Batches finish
out of order; the committable offset of a partition is the lowest offset still in flight,
or one past the highest tracked offset when nothing is in flight. Committing that offset
means a restart re-reads exactly the records whose decisions might not have been published.

Call contract: owned by the event loop (not thread-safe); ``track`` must be called in
offset order per partition (Kafka delivers in that order); ``ack`` in any order, once per
tracked offset. All operations are amortised O(1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from service.errors import ServiceError

TP = TypeVar("TP", bound=Hashable)


class OffsetError(ServiceError):
    """An offset was tracked out of order or acknowledged without being tracked."""


class PartitionOffsets:
    """One partition's in-flight offsets (``OffsetTracker.partition``).

    ``last`` is the highest offset tracked and ``inflight`` the offsets tracked and not
    yet acknowledged, in order: a caller holding this object may track ``offset`` itself
    with ``inflight.append(offset)`` and ``last = offset`` when ``offset > last`` (the
    pipeline does, once per record), else it calls ``track``, which refuses it.
    """

    __slots__ = ("acked", "committed", "inflight", "last", "tp")

    def __init__(self, tp: Hashable) -> None:
        self.tp = tp
        self.inflight: deque[int] = deque()
        self.acked: set[int] = set()
        self.last = -1
        self.committed = -1

    def committable(self) -> int:
        return self.inflight[0] if self.inflight else self.last + 1

    def ack(self, offset: int) -> None:
        """Record that the decision for ``offset`` is durably published (``OffsetTracker.ack``,
        here for a caller holding the object: an acknowledgement made after ``forget`` or
        ``reset`` replaced it changes nothing the tracker holds)."""
        inflight = self.inflight
        if inflight and inflight[0] == offset and not self.acked:
            inflight.popleft()  # in order (the usual case), nothing acknowledged early waits
            return
        if offset > self.last:
            raise OffsetError(f"offset {offset} of {self.tp} acknowledged but never tracked")
        if offset < self.committed:
            return  # sent before a reset (a rewind or a new assignment): nothing waits
        if inflight and inflight[0] == offset:
            inflight.popleft()
            acked = self.acked
            while inflight and inflight[0] in acked:
                acked.discard(inflight.popleft())
        else:
            self.acked.add(offset)

    def track(self, offset: int) -> None:
        """Record that ``offset`` entered the service (``OffsetTracker.track``)."""
        if offset <= self.last:
            raise OffsetError(
                f"offset {offset} of {self.tp} tracked after {self.last}: offsets must increase"
            )
        self.inflight.append(offset)
        self.last = offset


class OffsetTracker(Generic[TP]):
    """Per-partition in-flight offsets and the commit point they allow."""

    __slots__ = ("_gone", "_parts")

    def __init__(self) -> None:
        self._parts: dict[TP, PartitionOffsets] = {}
        self._gone: set[TP] = set()
        """Partitions forgotten (revoked) and not reset since: no longer this worker's."""

    def partition(self, tp: TP) -> PartitionOffsets:
        """``tp``'s offsets, made on first use. The object stays ``tp``'s until ``forget``
        or ``reset`` replaces it: hold it only while neither can run (no ``await``)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = PartitionOffsets(tp)
        return part

    def owned(self, tp: TP) -> PartitionOffsets | None:
        """``partition``, or None where ``tp`` was forgotten (revoked) and not reset since:
        its records, fetched before the revoke, are the new owner's to decide."""
        part = self._parts.get(tp)
        if part is None:
            if tp in self._gone:
                return None
            part = self._parts[tp] = PartitionOffsets(tp)
        return part

    def track(self, tp: TP, offset: int) -> None:
        """Record that ``offset`` of ``tp`` entered the service."""
        self.partition(tp).track(offset)

    def ack(self, tp: TP, offset: int) -> None:
        """Record that the decision for ``offset`` of ``tp`` is durably published (an
        offset below the commit point is from before a ``reset`` and changes nothing)."""
        if not self.ack_held(tp, offset):
            raise OffsetError(f"offset {offset} of {tp} acknowledged but never tracked")

    def ack_held(self, tp: TP, offset: int) -> bool:
        """``ack`` where ``tp`` has state; False, changing nothing, where it has none (it
        was revoked and forgotten while the decision was in flight). One lookup per ack."""
        part = self._parts.get(tp)
        if part is None:
            return False
        part.ack(offset)
        return True

    def pending(self, tp: TP | None = None) -> int:
        """Offsets tracked but not yet acknowledged (of ``tp``, or of all partitions)."""
        parts = list(self._parts.values()) if tp is None else [self._parts[tp]]
        return sum(len(p.inflight) - len(p.acked) for p in parts)

    def committable(self, tp: TP) -> int | None:
        """The offset to commit for ``tp`` now (the next record to read), or None."""
        part = self._parts.get(tp)
        return None if part is None else part.committable()

    def to_commit(self) -> dict[TP, int]:
        """Partitions whose commit point moved since the last ``committed`` call."""
        out: dict[TP, int] = {}
        for tp, part in self._parts.items():
            c = part.committable()
            if c > part.committed and c > 0:
                out[tp] = c
        return out

    def committed(self, offsets: dict[TP, int]) -> None:
        """Record that ``offsets`` were committed to the broker."""
        for tp, off in offsets.items():
            part = self._parts.get(tp)
            if part is not None and off > part.committed:
                part.committed = off

    def forget(self, tp: TP) -> None:
        """Drop all state of ``tp`` (after it was revoked and its last commit made); until
        a ``reset``, ``owned`` refuses it."""
        self._parts.pop(tp, None)
        self._gone.add(tp)

    def reset(self, tp: TP, next_offset: int) -> None:
        """Start ``tp`` afresh at ``next_offset`` (after an assign or a seek)."""
        self._gone.discard(tp)
        part = self._parts[tp] = PartitionOffsets(tp)
        part.last = next_offset - 1
        part.committed = next_offset

    def holds(self, tp: TP) -> bool:
        """Whether ``tp`` has state (it was tracked or reset, and not forgotten since)."""
        return tp in self._parts

    def partitions(self) -> list[TP]:
        """Partitions with state."""
        return list(self._parts)
