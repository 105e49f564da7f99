"""Runs a ``Scheduler`` on an asyncio loop with one re-armed sub-millisecond timer.

asyncio's ``call_at`` cannot wake sub-millisecond: the stock loop's ``epoll_wait`` timeout is
rounded up to whole milliseconds, and uvloop keeps its clock (``loop.time()``) and timers in
whole milliseconds. So on Linux the driver's timer is a ``timerfd`` (CLOCK_MONOTONIC, ns
resolution, absolute expiry) watched with ``loop.add_reader``: one fd, re-armed with one
syscall when the wake time changes, no thread, no task per event. Elsewhere it falls back
to ``call_at``. ``bench/scheduler.py --wake`` measures both on both loops.

Call contract: everything runs on the loop's thread. ``dispatch(batch)`` is called for each
``Batch`` the scheduler hands out; it publishes ``batch.expired``, and, when
``batch.items`` is not empty, runs them through the engine (inline, or by starting its own
task) and later calls ``driver.complete(batch, latency_ns)``, possibly from inside
``dispatch``. ``dispatch`` must not raise.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from collections.abc import Callable
from typing import Generic, Literal, Protocol

from service.scheduler.base import Batch, Item, Outcome, P, Scheduler
from service.scheduler.deadline import Clock

TimerKind = Literal["auto", "timerfd", "call_at"]


class Timer(Protocol):
    """A one-shot timer on a loop that calls back at (or just after) a monotonic ns."""

    def arm(self, when_ns: int) -> None:
        """Fire once at ``when_ns`` (at once if it has passed); replaces any earlier arm."""
        ...

    def disarm(self) -> None:
        """Do not fire."""
        ...

    def close(self) -> None:
        """Release the timer; it never fires again."""
        ...


class CallAtTimer:
    """``loop.call_at``: portable, millisecond resolution on asyncio and uvloop."""

    __slots__ = ("_callback", "_clock", "_handle", "_loop")

    def __init__(
        self,
        callback: Callable[[], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._callback = callback
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, when_ns: int) -> None:
        """Fire once at ``when_ns``."""
        if self._handle is not None:
            self._handle.cancel()
        at = self._loop.time() + (when_ns - self._clock()) / 1e9
        self._handle = self._loop.call_at(at, self._fire)

    def disarm(self) -> None:
        """Do not fire."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Release the timer."""
        self.disarm()

    def _fire(self) -> None:
        self._handle = None
        self._callback()


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class TimerFdTimer:
    """Linux ``timerfd`` watched by the loop: nanosecond expiry, no thread.

    With the default clock (``time.monotonic_ns`` is CLOCK_MONOTONIC on Linux) the expiry
    is absolute; with any other clock it is relative to that clock's reading.
    """

    __slots__ = ("_abs", "_callback", "_clock", "_fd", "_libc", "_loop", "_spec")

    def __init__(
        self,
        callback: Callable[[], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError("timerfd needs Linux")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        )
        libc.timerfd_settime.restype = ctypes.c_int
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create failed: {os.strerror(err)}")
        self._libc = libc
        self._fd = fd
        self._spec = _Itimerspec()
        self._callback = callback
        self._clock = clock
        self._abs = clock is time.monotonic_ns
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(fd, self._ready)

    def arm(self, when_ns: int) -> None:
        """Fire once at ``when_ns``."""
        if self._abs:
            t, flags = max(1, when_ns), _TFD_TIMER_ABSTIME
        else:
            t, flags = max(1, when_ns - self._clock()), 0
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(t, 1_000_000_000)
        self._settime(flags)

    def disarm(self) -> None:
        """Do not fire."""
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        self._settime(0)

    def close(self) -> None:
        """Release the fd."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _settime(self, flags: int) -> None:
        if self._libc.timerfd_settime(self._fd, flags, ctypes.byref(self._spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime failed: {os.strerror(err)}")

    def _ready(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed or disarmed since it became readable
            return
        self._callback()


def make_timer(
    callback: Callable[[], None],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    clock: Clock = time.monotonic_ns,
    kind: TimerKind = "auto",
) -> Timer:
    """A ``TimerFdTimer`` where the platform has one (``auto``), else a ``CallAtTimer``."""
    if kind == "call_at" or (kind == "auto" and not sys.platform.startswith("linux")):
        return CallAtTimer(callback, loop=loop, clock=clock)
    return TimerFdTimer(callback, loop=loop, clock=clock)


class Driver(Generic[P]):
    """Polls a scheduler on submit, on complete and on its timer; hands batches to dispatch.

    One timer, re-armed only when the scheduler's wake time changes, disarmed while the
    engine is busy or the queue is empty.
    """

    __slots__ = ("_armed", "_clock", "_dispatch", "_kicking", "_sched", "_timer")

    def __init__(
        self,
        scheduler: Scheduler[P],
        dispatch: Callable[[Batch[P]], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Clock = time.monotonic_ns,
        timer: TimerKind = "auto",
    ) -> None:
        self._sched = scheduler
        self._dispatch = dispatch
        self._clock = clock
        self._kicking = False
        self._armed = -1
        self._timer = make_timer(self._on_timer, loop=loop, clock=clock, kind=timer)

    @property
    def scheduler(self) -> Scheduler[P]:
        """The scheduler being driven."""
        return self._sched

    def submit(self, item: Item[P], *, kick: bool = True) -> Outcome | None:
        """Submit ``item`` now; returns its immediate outcome (publish it), or ``None``.

        With ``kick=False`` the scheduler is not polled: submit every record of a fetch
        that way, then call ``kick()`` once, so the batch is chosen with all of them queued.
        """
        out = self._sched.submit(item, self._clock())
        if out is None and kick:
            self._kick()
        return out

    def complete(self, batch: Batch[P], latency_ns: int) -> None:
        """The engine finished ``batch`` in ``latency_ns``; dispatch what is next."""
        self._sched.complete(batch, latency_ns)
        self._kick()

    def kick(self) -> None:
        """Poll now: after ``submit(..., kick=False)`` calls."""
        self._kick()

    def close(self) -> None:
        """Stop the timer; queued events stay in the scheduler."""
        self._timer.close()

    def _on_timer(self) -> None:
        now = self._clock()
        if self._armed >= 0:
            self._sched.note_wake(now - self._armed, now)
        self._armed = -1
        self._kick()

    def _kick(self) -> None:
        if self._kicking:  # complete() from inside dispatch(): the loop below polls again
            return
        self._kicking = True
        try:
            sched = self._sched
            while True:
                r = sched.poll(self._clock())
                if r is None:
                    if self._armed >= 0:
                        self._timer.disarm()
                        self._armed = -1
                    return
                if isinstance(r, int):
                    if r != self._armed:
                        self._timer.arm(r)
                        self._armed = r
                    return
                self._dispatch(r)
        finally:
            self._kicking = False
