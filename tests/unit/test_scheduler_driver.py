"""The asyncio driver and its sub-millisecond timers, on a real event loop."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pytest

from engines.profile import LatencyProfile
from service.scheduler import (
    Batch,
    CallAtTimer,
    Deadline,
    Driver,
    EdfScheduler,
    Item,
    TimerFdTimer,
    make_timer,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux")


def flat_profile(us: int = 50) -> LatencyProfile:
    """Every bucket 1..16 takes ``us`` microseconds."""
    return LatencyProfile({b: np.full(8, us * 1_000, dtype=np.int64) for b in (1, 2, 4, 8, 16)})


@linux_only
async def test_timerfd_fires_once_after_its_time() -> None:
    """A timerfd timer calls back once, not before the armed time."""
    fired: list[int] = []
    done = asyncio.Event()
    t = TimerFdTimer(lambda: (fired.append(time.monotonic_ns()), done.set()))
    at = time.monotonic_ns() + 300_000
    t.arm(at)
    await asyncio.wait_for(done.wait(), 1.0)
    await asyncio.sleep(0.002)
    t.close()
    assert len(fired) == 1 and fired[0] >= at


@linux_only
async def test_timerfd_rearm_and_disarm() -> None:
    """Re-arming replaces the earlier expiry and disarm stops it."""
    fired: list[int] = []
    t = TimerFdTimer(lambda: fired.append(1))
    t.arm(time.monotonic_ns() + 200_000)
    t.arm(time.monotonic_ns() + 10**9)
    await asyncio.sleep(0.003)
    assert fired == []
    t.disarm()
    t.close()


async def test_call_at_timer_fires() -> None:
    """The portable call_at timer calls back after its time."""
    done = asyncio.Event()
    t = make_timer(done.set, kind="call_at")
    assert isinstance(t, CallAtTimer)
    t.arm(time.monotonic_ns() + 100_000)
    await asyncio.wait_for(done.wait(), 1.0)
    t.close()


@pytest.mark.parametrize("inline", [True, False])
async def test_driver_decides_every_event_once_in_key_order(inline: bool) -> None:
    """Driven on a loop, EDF decides every event once (ok unless the host stalls), keys in order."""
    loop = asyncio.get_running_loop()
    decided: list[int] = []
    expired: list[int] = []
    all_done = asyncio.Event()
    n = 40
    driver: Driver[int]

    def settle() -> None:
        if len(decided) + len(expired) == n:
            all_done.set()

    def finish(batch: Batch[int]) -> None:
        decided.extend(i.payload for i in batch.items)
        driver.complete(batch, 50_000)
        settle()

    def dispatch(batch: Batch[int]) -> None:
        expired.extend(i.payload for i in batch.expired)
        settle()
        if batch.items:
            if inline:
                finish(batch)
            else:
                loop.call_soon(finish, batch)

    driver = Driver(EdfScheduler(flat_profile(), guard_ns=300_000), dispatch)
    for p in range(n):
        item = Item(p, p % 4, Deadline(time.monotonic_ns() + 30_000_000))
        if driver.submit(item) is not None:
            expired.append(p)
        if p % 10 == 9:
            await asyncio.sleep(0.0005)
    await asyncio.wait_for(all_done.wait(), 5.0)
    driver.close()
    assert sorted(decided + expired) == list(range(n))
    assert len(decided) > 0
    for k in range(4):
        mine = [p for p in decided if p % 4 == k]
        assert mine == sorted(mine)


async def test_submit_without_kick_waits_for_kick() -> None:
    """With kick=False nothing is dispatched until kick(), which then sees every event."""
    batches: list[int] = []
    driver: Driver[int]

    def dispatch(batch: Batch[int]) -> None:
        batches.append(len(batch.items))
        driver.complete(batch, 1)

    driver = Driver(EdfScheduler(flat_profile(), max_hold_ns=0), dispatch)
    for p in range(5):
        assert driver.submit(Item(p, p, Deadline(time.monotonic_ns() + 10**9)), kick=False) is None
    assert batches == []
    driver.kick()
    driver.close()
    assert batches == [5]
