"""Per-partition consumer lag, in records and in seconds, refreshed off the hot path.

Records: ``highwater - position`` (both "next offset"). Seconds: when behind, now minus
the Kafka timestamp of the last record consumed from the partition (the age of the newest
record already taken: a lower bound of the oldest waiting one's); 0 when caught up.
The runtime calls :meth:`ConsumerLag.seen` once per fetched partition batch; the metrics
sampler calls :meth:`ConsumerLag.refresh` once a second. Both run on the worker's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import KafkaError

from service.base import ConsumerLike

TP = tuple[str, int]
"""``(topic, partition)``."""

POSITION_TIMEOUT_S = 0.2
"""How long :meth:`ConsumerLag.refresh` waits for one partition's position."""


class ConsumerLag:
    """Per-partition consumer lag (see the module docstring); ``lag`` maps ``(topic,
    partition)`` to ``(records behind, seconds behind)`` as of the last refresh."""

    def __init__(self, wall: Callable[[], int] = time.time_ns) -> None:
        self._wall = wall
        self._last_ts_ms: dict[TP, int] = {}
        self.lag: dict[TP, tuple[int, float]] = {}

    def seen(self, tp: Any, records: Sequence[Any]) -> None:
        """Note the last record of a fetched batch of partition ``tp``."""
        if records:
            self._last_ts_ms[(tp.topic, tp.partition)] = records[-1].timestamp

    async def refresh(self, consumer: ConsumerLike | None) -> None:
        """Recompute the lag of every assigned partition (bounded wait on positions)."""
        if consumer is None:
            self.lag = {}
            return
        now_ms = self._wall() / 1e6
        lag: dict[TP, tuple[int, float]] = {}
        assigned = list(consumer.assignment())
        for tp in assigned:
            key = (tp.topic, tp.partition)
            try:
                high = consumer.highwater(tp)
                pos = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
            except (AssertionError, KafkaError, TimeoutError):
                continue  # revoked meanwhile, or no position yet
            if high is None:
                continue  # nothing fetched from it yet
            behind = max(0, high - pos)
            ts = self._last_ts_ms.get(key, -1)
            secs = max(0.0, (now_ms - ts) / 1e3) if behind and ts >= 0 else 0.0
            lag[key] = (behind, secs)
        keep = {(tp.topic, tp.partition) for tp in assigned}
        self._last_ts_ms = {k: t for k, t in self._last_ts_ms.items() if k in keep}
        self.lag = lag
