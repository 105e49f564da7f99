"""Per-key state: a bounded map from key to its feature window (``schemas.features``).

Keys are kept in least-recently-updated order; when a new key would exceed ``max_keys``
the least recently updated key is evicted (its window is lost and it warms up again if it
returns). The feature code is the same object the training pipeline uses.

Call contract: owned by the event loop; ``update`` is called once per decoded event in the
partition's order and returns the key's state after the event.
"""

from __future__ import annotations

from collections import OrderedDict

from schemas.events import Event
from schemas.features import FeatureSpec, KeyState


class StateStore:
    """Feature windows of up to ``max_keys`` keys, least recently updated evicted first."""

    __slots__ = ("_states", "evictions", "max_keys", "spec")

    def __init__(self, spec: FeatureSpec, max_keys: int) -> None:
        self.spec = spec
        self.max_keys = max_keys
        self._states: OrderedDict[str, KeyState] = OrderedDict()
        self.evictions = 0

    def update(self, event: Event, arrival_ns: int, key: str | None = None) -> KeyState:
        """Fold ``event`` into ``key``'s window (default ``event.key``; creating or evicting
        as needed). ``key`` comes from the input's decoder (``schemas.base.Inbound``)."""
        if key is None:
            key = event.key
        states = self._states
        state = states.get(key)
        if state is not None:
            states.move_to_end(key)
            state.update(event, arrival_ns)
            return state
        state = self.spec.new_state()
        state.update(event, arrival_ns)  # may raise: a bad event never takes a key's place
        if len(states) >= self.max_keys:
            states.popitem(last=False)
            self.evictions += 1
        states[key] = state
        return state

    def get(self, key: str) -> KeyState | None:
        """The state of ``key``, if kept."""
        return self._states.get(key)

    def clear(self) -> None:
        """Forget every key (after a rebalance that took all partitions)."""
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)
