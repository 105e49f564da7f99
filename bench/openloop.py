"""What the in-process pipeline benchmarks share: an open-loop feed, a stamping sink, settings.

An open-loop feed hands each record to the pipeline once the monotonic clock reaches its
*intended* arrival, whatever the pipeline is doing, so a stalled loop shows up as latency
rather than as a lower offered rate (coordinated-omission correct). Between due records it
sleeps on ``service.scheduler.timer`` (a timerfd on Linux: sub-millisecond wakes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from service.memory import MemoryRecord
from service.scheduler.timer import make_timer
from service.settings import Settings, load_settings

__all__ = ["Ingest", "StampSink", "bench_settings", "feed_open_loop"]


class Ingest(Protocol):
    """What the feed hands records to (``service.pipeline.Pipeline``)."""

    async def ingest(self, records: Sequence[MemoryRecord]) -> None:
        """Take the records, in order."""
        ...


def bench_settings(*, budget_ms: float, max_queue: int) -> Settings:
    """Default settings but for the deadline budget and the scheduler's queue bound."""
    return load_settings(
        env={
            "WEIR_SCHEDULER__BUDGET_MS": str(budget_ms),
            "WEIR_SCHEDULER__MAX_QUEUE": str(max_queue),
        }
    )


async def feed_open_loop(
    pipe: Ingest,
    records: Sequence[MemoryRecord],
    intended: np.ndarray,
    *,
    handed: np.ndarray | None = None,
) -> None:
    """Hand ``records[i]`` to ``pipe`` once ``time.monotonic_ns()`` reaches ``intended[i]``.

    ``intended`` is ascending monotonic ns, one per record. Records already due go over in
    one ``ingest`` call; ``handed`` (when given) gets the time each record was handed over.
    Returns once the last record is handed over (not once it is decided).
    """
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] | None = None

    def fire() -> None:
        if wake is not None and not wake.done():
            wake.set_result(None)

    timer = make_timer(fire, loop=loop)
    n = len(records)
    sent = 0
    try:
        while sent < n:
            now = time.monotonic_ns()
            due = int(np.searchsorted(intended, now, side="right"))
            if due > sent:
                if handed is not None:
                    handed[sent:due] = now
                await pipe.ingest(records[sent:due])
                sent = due
            if sent < n:
                wake = loop.create_future()
                timer.arm(int(intended[sent]))
                await wake
    finally:
        timer.close()


class StampSink:
    """A sink that records when each decision left the pipeline, by input offset.

    Decisions to ``topic`` (every topic when None) are stamped in ``done`` and counted in
    ``count``; decisions to other topics are only counted, in ``others``. Every decision is
    acknowledged at once.
    """

    def __init__(self, n: int, *, topic: str | None = None) -> None:
        self.done = np.zeros(n, dtype=np.int64)
        self.topic = topic
        self.count = 0
        self.others = 0

    async def send(
        self, topic: str, key: Any, value: bytes, headers: Any, token: Any, on_ack: Any
    ) -> None:
        if self.topic is None or topic == self.topic:
            _, offset = token  # the publisher's: the partition's offsets and the offset
            self.done[offset] = time.monotonic_ns()
            self.count += 1
        else:
            self.others += 1
        on_ack(token, None)

    async def flush(self) -> None:
        return None
