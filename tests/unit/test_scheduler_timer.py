"""The dispatch loop's one-shot timers, on a real event loop.

A timer that must NOT fire is checked against a second timer armed later: the test awaits
that one, and by the time the loop runs its callback any earlier expiry has been delivered
(the loop reads ready fds before it runs due timers, and the awaiting task resumes only
after both), so no sleep stands in for synchronisation.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import pytest

from service.scheduler import CallAtTimer, Timer, TimerFdTimer, make_timer

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux")

MakeTimer = Callable[[Callable[[], None]], Timer]
KINDS: dict[str, MakeTimer] = {
    "timerfd": lambda cb: TimerFdTimer(cb),
    "call_at": lambda cb: CallAtTimer(cb),
}
both_kinds = pytest.mark.parametrize("kind", [pytest.param("timerfd", marks=linux_only), "call_at"])


async def after(kind: str, delay_ns: int) -> None:
    """Return once a fresh timer of ``kind`` armed ``delay_ns`` from now has fired."""
    done = asyncio.Event()
    t = KINDS[kind](done.set)
    t.arm(time.monotonic_ns() + delay_ns)
    await asyncio.wait_for(done.wait(), 5.0)
    t.close()


@both_kinds
async def test_fires_once_not_before_its_time(kind: str) -> None:
    """An armed timer calls back once, at or after the armed time."""
    fired: list[int] = []
    done = asyncio.Event()
    t = KINDS[kind](lambda: (fired.append(time.monotonic_ns()), done.set()))
    at = time.monotonic_ns() + 300_000
    t.arm(at)
    await asyncio.wait_for(done.wait(), 5.0)
    await after(kind, 3_000_000)
    t.close()
    assert len(fired) == 1 and fired[0] >= at


@both_kinds
async def test_rearm_replaces_the_earlier_expiry(kind: str) -> None:
    """Re-arming replaces the expiry: pushed out, the near one is gone; pulled in, it fires."""
    fired: list[int] = []
    done = asyncio.Event()
    t = KINDS[kind](lambda: (fired.append(time.monotonic_ns()), done.set()))
    t.arm(time.monotonic_ns() + 200_000)
    t.arm(time.monotonic_ns() + 60 * 10**9)
    await after(kind, 2_000_000)
    assert fired == []
    near = time.monotonic_ns() + 100_000
    t.arm(near)
    await asyncio.wait_for(done.wait(), 5.0)
    t.close()
    assert len(fired) == 1 and fired[0] >= near


@both_kinds
async def test_disarm_stops_the_expiry_and_arm_works_again(kind: str) -> None:
    """A disarmed timer does not fire; armed again it does."""
    fired: list[int] = []
    done = asyncio.Event()
    t = KINDS[kind](lambda: (fired.append(1), done.set()))
    t.arm(time.monotonic_ns() + 200_000)
    t.disarm()
    await after(kind, 2_000_000)
    assert fired == []
    t.arm(time.monotonic_ns() + 100_000)
    await asyncio.wait_for(done.wait(), 5.0)
    t.close()
    assert fired == [1]


@linux_only
async def test_timerfd_disarmed_after_expiry_before_the_loop_reads_it() -> None:
    """An expiry already due when disarm() comes is dropped (the fd read finds nothing)."""
    fired: list[int] = []
    t = TimerFdTimer(lambda: fired.append(1))
    t.arm(time.monotonic_ns() - 1)  # already passed: the fd is readable at once
    t.disarm()
    await after("timerfd", 1_000_000)
    t.close()
    assert fired == []


@both_kinds
async def test_close_stops_it_and_is_idempotent(kind: str) -> None:
    """A closed timer never fires; closing twice is harmless."""
    fired: list[int] = []
    t = KINDS[kind](lambda: fired.append(1))
    t.arm(time.monotonic_ns() + 100_000)
    t.close()
    t.close()
    await after(kind, 2_000_000)
    assert fired == []


@linux_only
async def test_timerfd_with_an_injected_clock_arms_relative_to_it() -> None:
    """With a clock other than CLOCK_MONOTONIC the expiry is ``when - clock()`` from now."""
    done = asyncio.Event()
    virtual = 10**18  # far from CLOCK_MONOTONIC: an absolute expiry would never come
    t = TimerFdTimer(done.set, clock=lambda: virtual)
    t.arm(virtual + 200_000)
    await asyncio.wait_for(done.wait(), 5.0)
    t.close()


def test_timerfd_refuses_other_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off Linux a timerfd timer cannot be made and says why."""
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(OSError, match=r"^timerfd needs Linux$"):
        TimerFdTimer(lambda: None)


async def test_make_timer_picks_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """call_at gives a CallAtTimer; auto gives a timerfd on Linux and call_at elsewhere."""
    t = make_timer(lambda: None, kind="call_at")
    assert isinstance(t, CallAtTimer)
    t.close()
    if sys.platform.startswith("linux"):
        t = make_timer(lambda: None)
        assert isinstance(t, TimerFdTimer)
        t.close()
    monkeypatch.setattr(sys, "platform", "darwin")
    t = make_timer(lambda: None)
    assert isinstance(t, CallAtTimer)
    t.close()
