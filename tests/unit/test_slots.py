"""The pipeline's slot table: bounded slots, named columns, a scratch slot never freed."""

from __future__ import annotations

from service.slots import SlotTable


def test_slots_are_taken_and_given_back_up_to_the_capacity() -> None:
    """``capacity`` slots can be taken (lowest first); a released one can be taken again."""
    table = SlotTable(3, n_features=2)
    assert table.capacity == 3 and table.slab.shape == (4, 2)
    taken = [table.free.pop() for _ in range(3)]
    assert taken == [0, 1, 2] and table.free == []
    table.release(1)
    assert table.free == [1]


def test_fill_writes_every_column_of_one_slot() -> None:
    """``fill`` sets the slot's coordinates and stamps and leaves the other slots alone."""
    table = SlotTable(2, n_features=1)
    table.fill(1, "t", 3, 1200, "BTC", 5, None, 7, 9, None)
    row = [
        getattr(table, c)[1]
        for c in ("topic", "partition", "offset", "key", "kafka_ts", "source_ts", "ingest")
    ]
    assert row == ["t", 3, 1200, "BTC", 5, None, 7]
    assert table.deadline == [None, 9, None]
    assert table.topic[0] == "" and table.offset[0] == 0


def test_the_scratch_slot_is_never_freed() -> None:
    """The scratch slot (for events decided at ingest) is past the queue's slots and stays
    out of the free list when released."""
    table = SlotTable(2, n_features=1)
    assert table.scratch == 2
    table.release(table.scratch)
    assert table.scratch not in table.free and len(table.free) == 2
