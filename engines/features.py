"""The feature seam of the model package contract: what a package's feature code provides.

A model package names its feature implementation in its descriptor (``module:Class`` or a
name registered under the ``weir.features`` entry-point group). weir calls it with the
descriptor's ``[features] settings`` as keyword arguments (a ``msgspec.Struct`` class gets
them validated by ``msgspec.convert``) and gets a :class:`Features`: the per-key state
factory. weir's own trading and sensor features (``schemas.features.FeatureSpec``) are one
implementation of it, loaded the same way as any user's.

Call contract (hot path, event loop thread, once per event, in each key's event order):

- ``Features.new_state()`` once per new key (the service keeps at most ``state.max_keys``
  states; the least recently updated is evicted and starts over if its key returns).
- ``FeatureState.update(event, arrival_ns)`` once per event of the key; ``arrival_ns`` is
  wall ns (the record's Kafka timestamp when serving, the feed's ``recv_ns`` when
  training). Raise ``schemas.errors.SchemaError`` for an event the features cannot use:
  the record goes to the dead-letter topic and the state must stay usable.
- ``FeatureState.ready`` says whether the model may judge this key yet; until it is,
  its events get ``warming`` decisions and are not queued.
- ``FeatureState.write_input(out)`` writes the model input of the event just folded into
  ``out``, a caller-owned float32 row of ``n_features`` values (a row of a preallocated
  slab: write in place, never rebind or keep it).
- ``FeatureState.target()`` is the value a forecasting model predicts for this event
  (read right after ``update``; the ``anomaly`` decision judges ``|target - output[0]|``);
  a classifier's features return 0.0.

None of these may block. To keep the hot path allocation-free, preallocate buffers in
``new_state`` and write into them (``out[:] = ring[a:b]``): no buffer is allocated per
event; weir's own features create only Python floats and the slice view of one copy.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from schemas.events import Event


class FeatureState(Protocol):
    """One key's running feature state (see the module docstring for the call contract)."""

    @property
    def ready(self) -> bool:
        """True once this key's input is meaningful (before that: ``warming``)."""
        ...

    def update(self, event: Event, arrival_ns: int) -> None:
        """Fold one event of this key in (raise ``SchemaError`` for an unusable event)."""
        ...

    def write_input(self, out: np.ndarray) -> None:
        """Write the current model input into ``out`` (float32, ``n_features`` values)."""
        ...

    def target(self) -> float:
        """What a forecaster predicts for the last event (0.0 for a classifier)."""
        ...


class Features(Protocol):
    """A package's feature implementation: the size of one input and a state per key."""

    @property
    def n_features(self) -> int:
        """Values in one model input row."""
        ...

    def new_state(self) -> FeatureState:
        """A fresh state for a new key."""
        ...
