"""The replay's one seam: a :class:`Transport` carries events to the service and their
outcomes back. Implementations: ``replay.kafka.KafkaTransport`` (through a broker) and
``replay.inprocess.InProcessTransport`` (a pipeline on the replay's own event loop); the
unit tests hand the runner a fake service of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from replay.measure import Recorder

Clock = Callable[[], int]
"""Wall ns (``time.time_ns``), injected so tests can drive time themselves."""


class Transport(Protocol):
    """Where events go and where their outcomes come back from.

    Call contract (all on the replay's event loop): ``open(recorder)`` connects and, before
    it returns, positions the outcome reader so that every outcome of a later send is seen;
    outcomes go to ``recorder.decided`` / ``dead_lettered`` / ``garbled`` as they arrive.
    ``send`` hands one event over and never waits for its decision (it may wait when the
    transport pushes back); ``recorder.bound(seq, ...)`` or ``send_failed`` follows, maybe
    later. ``end_burst`` follows each burst of sends. ``flush`` waits until every send is
    acknowledged or failed. ``close`` stops everything it started.
    """

    description: str

    async def open(self, recorder: Recorder) -> None: ...
    async def send(self, seq: int, key: bytes, value: bytes) -> None: ...
    async def end_burst(self) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...
