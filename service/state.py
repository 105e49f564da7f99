"""Per-key state: a bounded map from key to its feature state and its head's state.

Each key holds the feature state its package's feature implementation made
(``engines.features.FeatureState``) and, beside it, what the head keeps per key (an anomaly
head's ``AnomalyLikelihood``; ``None`` for a classifier). Keys are kept in
least-recently-updated order; when a new key would exceed ``max_keys`` the least recently
updated key is evicted with both (it warms up again if it returns). The feature code is
the same object the training pipeline uses.

Call contract: owned by the event loop; ``update`` is called once per decoded event in the
partition's order and returns the key's feature state after the event; ``last_head_state``
is then that key's head state (set by ``update``, no allocation).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from engines.features import Features, FeatureState
from schemas.base import EventDecoder
from schemas.errors import SchemaError
from schemas.events import Event
from service.base import Record


def _no_head_state() -> None:
    return None


class StateStore:
    """States of up to ``max_keys`` keys, least recently updated evicted first."""

    __slots__ = (
        "_last",
        "_states",
        "evictions",
        "last_head_state",
        "max_keys",
        "new_head_state",
        "spec",
    )

    def __init__(
        self,
        spec: Features,
        max_keys: int,
        new_head_state: Callable[[], object] = _no_head_state,
    ) -> None:
        self.spec = spec
        self.max_keys = max_keys
        self.new_head_state = new_head_state
        self._states: OrderedDict[str, tuple[FeatureState, object]] = OrderedDict()
        self.evictions = 0
        self.last_head_state: object = None
        """The head state of the key ``update`` last saw."""
        self._last: str | None = None
        """The most recently updated key (already last in ``_states``: no move needed)."""

    def update(self, event: Event, arrival_ns: int, key: str | None = None) -> FeatureState:
        """Fold ``event`` into ``key``'s state (default ``event.key``; creating or evicting
        as needed). ``key`` comes from the input's decoder (``schemas.base.Inbound``)."""
        if key is None:
            key = event.key
        states = self._states
        entry = states.get(key)
        if entry is not None:
            if key != self._last:
                states.move_to_end(key)
                self._last = key
            entry[0].update(event, arrival_ns)
            self.last_head_state = entry[1]
            return entry[0]
        state = self.spec.new_state()
        state.update(event, arrival_ns)  # may raise: a bad event never takes a key's place
        if len(states) >= self.max_keys:
            states.popitem(last=False)
            self.evictions += 1
        head_state = self.new_head_state()
        states[key] = (state, head_state)
        self._last = key
        self.last_head_state = head_state
        return state

    def warm(
        self, records: Iterable[Record], decoder: EventDecoder, max_bytes: int, wall_now: int
    ) -> None:
        """Fold already-decided records into their keys' states only (after a seek back):
        ``update`` for each one that decodes (``wall_now``: the arrival of one without a
        timestamp); the rest went to the dead-letter topic the first time."""
        decode = decoder.decode
        for rec in records:
            value = rec.value
            if value is None or len(value) > max_bytes:
                continue
            ts_ms = rec.timestamp
            try:
                event, key, _ = decode(value, rec.headers)
                self.update(event, ts_ms * 1_000_000 if ts_ms >= 0 else wall_now, key)
            except SchemaError:
                continue

    def get(self, key: str) -> FeatureState | None:
        """The feature state of ``key``, if kept."""
        entry = self._states.get(key)
        return None if entry is None else entry[0]

    def head_state(self, key: str) -> object:
        """The head state of ``key`` (``None`` if not kept or the head keeps none)."""
        entry = self._states.get(key)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        """Forget every key (after a rebalance that took all partitions)."""
        self._states.clear()
        self._last = None

    def __len__(self) -> int:
        return len(self._states)
