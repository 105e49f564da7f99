"""The pipeline's slot table: what it keeps of each queued event until its decision is out.

A queued event holds one slot: a row of the input slab (its model input, written at ingest:
the key's window moves on with later events), the head's target for it and the key's head
state (an anomaly head's likelihood), and its coordinates and stamps in named columns
(plain lists indexed by slot, so filling a slot allocates nothing and a batch's columns are
read without a per-event object). The table has ``capacity`` slots, never more: with none
free the event is shed.

The events of a key queued since the last hand-over to the scheduler (a run, as a fetch of
one instrument's feed brings them) have their windows written to the slab at once, before
they are handed over (``place``, ``write_runs``): one strided copy from the key's ring
instead of a copy per event; each key has a run of its own open.

One more slot, :attr:`SlotTable.scratch`, never queued and never freed, holds an event
decided at ingest (``warming``, or ``shed`` for want of a slot) while its decision is
published, so every decision is made from a slot the same way.

Owned by the event loop (not thread-safe).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.features import FeatureState
from schemas.features import RUN_WINDOWS, KeyState
from service.offsets import PartitionOffsets

__all__ = ["RUN_CAP", "SlotTable"]

RUN_CAP = RUN_WINDOWS - 1
"""The most slots of one run (``SlotTable.place``): the key may take one more event, not
queued, before the run's windows are written, and its ring keeps ``RUN_WINDOWS``."""


class _Run:
    """One key's events queued since the last ``SlotTable.write_runs``, windows unwritten."""

    __slots__ = ("first", "rows", "state")

    def __init__(self, state: KeyState, slot: int) -> None:
        self.state = state
        self.first = state.count
        """The ``count`` of the key's state right after the run's first event."""
        self.rows = [slot]


class SlotTable:
    """Feature slab, targets and per-slot columns of the queued events (module docstring)."""

    __slots__ = (
        "_last",
        "_none",
        "_runs",
        "deadline",
        "free",
        "head_state",
        "ingest",
        "kafka_ts",
        "key",
        "numbers",
        "offset",
        "partition",
        "scratch",
        "slab",
        "source_ts",
        "targets",
        "topic",
        "tracked",
    )

    def __init__(self, capacity: int, n_features: int) -> None:
        rows = capacity + 1
        self.slab = np.zeros((rows, n_features), dtype=np.float32)
        """One feature row per slot (the event's window)."""
        self.targets = np.zeros(rows, dtype=np.float64)
        self.head_state: list[Any] = [None] * rows
        """The key's head state at ingest (``StateStore.last_head_state``), for ``judge``."""
        self.scratch = capacity
        """The slot of an event decided at ingest (see the module docstring)."""
        self.free = list(range(capacity - 1, -1, -1))
        """Free slots; ``pop`` takes one, ``release`` gives it back."""
        self.topic: list[str] = [""] * rows
        self.partition = [0] * rows
        self.offset = [0] * rows
        self.key: list[str] = [""] * rows
        self.kafka_ts: list[int | None] = [None] * rows
        """Kafka record timestamp, wall ns (None: the record had none)."""
        self.source_ts: list[int | None] = [None] * rows
        """The event's own timestamp, wall ns (None: it carries none)."""
        self.ingest = [0] * rows
        """Ingest time, monotonic ns."""
        self.deadline: list[int | None] = [None] * rows
        """Deadline, monotonic ns (None: decided at ingest, never queued)."""
        self.tracked: list[PartitionOffsets | None] = [None] * rows
        """The partition offsets the event's offset was tracked in
        (``OffsetTracker.partition``): its decision's acknowledgement goes there."""
        self.numbers = list(range(rows))
        """Every slot's number, in order: a run of consecutive slots is a slice of it."""
        self._runs: dict[int, _Run] = {}
        """The open runs, by their state's ``id``: each key's events whose windows are not
        written yet (``place``, ``write_runs``)."""
        self._none: list[int] = []
        """``place``'s answer where no run took the slot: always empty."""
        self._last: FeatureState | None = None

    @property
    def capacity(self) -> int:
        """Slots events can be queued in (the scratch slot not counted)."""
        return self.scratch

    def fill(
        self,
        slot: int,
        topic: str,
        partition: int,
        offset: int,
        key: str,
        kafka_ts: int | None,
        source_ts: int | None,
        ingest: int,
        deadline: int | None,
        tracked: PartitionOffsets | None,
    ) -> None:
        """Write an event's coordinates and stamps into ``slot``."""
        self.topic[slot] = topic
        self.partition[slot] = partition
        self.offset[slot] = offset
        self.key[slot] = key
        self.kafka_ts[slot] = kafka_ts
        self.source_ts[slot] = source_ts
        self.ingest[slot] = ingest
        self.deadline[slot] = deadline
        self.tracked[slot] = tracked

    def place(self, state: FeatureState, slot: int) -> list[int]:
        """Have the input of ``state``'s event just folded in written to ``slot``'s row: at
        once, or with the other events of ``state`` queued until the next ``write_runs``, as
        a run (one copy for them all: ``KeyState.write_windows``). Returns the run's slots
        (empty where the input was written at once): while the caller's next events are of
        ``state``, it appends their slots there itself, up to ``RUN_CAP``. Each key has a
        run of its own, so keys whose events come interleaved keep theirs open. A state that
        takes runs is widened (``KeyState.widen``) when its key is placed twice in a row:
        keys whose events never come so keep the narrow ring."""
        runs = self._runs
        run = runs.get(id(state))
        if run is not None:
            rows = run.rows
            if len(rows) >= RUN_CAP:
                self._write(run)
                run.first = run.state.count
            rows.append(slot)
        elif (
            isinstance(state, KeyState)
            and state.takes_runs
            and (state.runs > 1 or (state is self._last and state.widen()))
        ):
            run = runs[id(state)] = _Run(state, slot)
            rows = run.rows
        else:
            state.write_input(self.slab[slot])
            rows = self._none
        self._last = state
        return rows

    def write_runs(self) -> None:
        """Write the windows of every open run's events to their rows (before they are
        queued: the dispatcher reads the rows)."""
        runs = self._runs
        if runs:
            for run in runs.values():
                self._write(run)
            runs.clear()

    def _write(self, run: _Run) -> None:
        """Write ``run``'s windows and empty it."""
        rows = run.rows
        state = run.state
        k = len(rows)
        first = rows[0]
        if k == 1 and state.count == run.first:
            state.write_input(self.slab[first])
        elif self.consecutive(rows):  # the usual case (``Dispatcher._gather``): one slice
            state.write_windows(self.slab, slice(first, first + k), run.first)
        else:
            state.write_windows(self.slab, rows, run.first)
        rows.clear()

    def consecutive(self, slots: list[int]) -> bool:
        """Whether ``slots`` (at least one) are consecutive and rising: their rows one slice."""
        first = slots[0]
        n = len(slots)
        return slots[-1] - first == n - 1 and slots == self.numbers[first : first + n]

    def release(self, slot: int) -> None:
        """``slot``'s decision is out: it may take another event (the scratch never)."""
        self.head_state[slot] = None
        if slot != self.scratch:
            self.free.append(slot)
