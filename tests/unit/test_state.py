"""The bounded per-key state store."""

from __future__ import annotations

from schemas.events import SensorReading
from schemas.features import FeatureSpec, Task
from service.state import StateStore


def _r(key: str, v: float = 1.0) -> SensorReading:
    return SensorReading(sensor_id=key, value=v)


def test_keys_bounded_least_recent_evicted() -> None:
    """A third key evicts the least recently updated of two."""
    store = StateStore(FeatureSpec(task=Task.SENSOR, window=2), max_keys=2)
    store.update(_r("a"), 0)
    store.update(_r("b"), 1)
    store.update(_r("a"), 2)
    store.update(_r("c"), 3)
    assert len(store) == 2
    assert store.get("b") is None
    assert store.get("a") is not None and store.get("a").count == 2  # type: ignore[union-attr]
    assert store.evictions == 1


def test_runs_of_one_key_keep_the_eviction_order() -> None:
    """A key updated many times in a row stays the most recent; the one before it is
    evicted first, also after a run of the same key and after a clear."""
    store = StateStore(FeatureSpec(task=Task.SENSOR, window=2), max_keys=2)
    for i, key in enumerate(["a", "b", "b", "a", "a", "a", "c"]):
        store.update(_r(key), i)
    assert store.get("b") is None and store.get("a") is not None
    store.update(_r("a"), 7)
    store.update(_r("d"), 8)
    assert store.get("c") is None and store.get("a") is not None
    store.clear()
    for i, key in enumerate(["x", "y", "x", "z"]):
        store.update(_r(key), i)
    assert store.get("y") is None and store.evictions == 3


def test_update_returns_the_keys_state() -> None:
    """Updates of one key accumulate in one window."""
    store = StateStore(FeatureSpec(task=Task.SENSOR, window=3), max_keys=10)
    for i in range(3):
        state = store.update(_r("s", float(i)), i)
    assert state.ready
    assert store.get("s") is state


def test_wrong_task_event_takes_no_key_slot() -> None:
    """An event the spec cannot use raises before it can evict a real key."""
    import pytest

    from schemas.errors import SchemaError
    from schemas.events import Quote

    store = StateStore(FeatureSpec(task=Task.SENSOR, window=2), max_keys=1)
    store.update(_r("real"), 0)
    with pytest.raises(SchemaError):
        store.update(Quote(symbol="X", bid_px=1.0, bid_qty=1.0, ask_px=2.0, ask_qty=1.0), 1)
    assert store.get("real") is not None and store.get("X") is None
    assert store.evictions == 0


def test_each_key_keeps_its_head_state_beside_its_features() -> None:
    """The head's per-key state is made once per key, reported after each update of that
    key, and evicted with the key."""
    made: list[object] = []

    def new_head_state() -> object:
        made.append(object())
        return made[-1]

    store = StateStore(FeatureSpec(task=Task.SENSOR, window=2), 2, new_head_state)
    store.update(_r("a"), 0)
    store.update(_r("b"), 1)
    store.update(_r("a"), 2)
    assert store.last_head_state is made[0] and store.head_state("b") is made[1]
    store.update(_r("c"), 3)  # evicts b
    assert store.head_state("b") is None and store.last_head_state is made[2]
    store.update(_r("b"), 4)  # b returns with a fresh head state
    assert len(made) == 4 and store.head_state("b") is made[3]
