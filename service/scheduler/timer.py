"""The dispatch loop's one-shot timers: sub-millisecond wake-ups on an asyncio loop.

asyncio's ``call_at`` cannot wake sub-millisecond: the stock loop's ``epoll_wait`` timeout is
rounded up to whole milliseconds, and uvloop keeps its clock (``loop.time()``) and timers in
whole milliseconds. So on Linux the timer is a ``timerfd`` (CLOCK_MONOTONIC, ns resolution,
absolute expiry) watched with ``loop.add_reader``: one fd, re-armed with one syscall when the
wake time changes, no thread, no task per event. Elsewhere it falls back to ``call_at``.
``service.pipeline`` sleeps on one until the scheduler's next wake time; ``bench/scheduler.py``
measures both kinds on both loops.

Call contract (``Timer`` in ``service.scheduler.base``): everything runs on the loop's
thread; the callback runs from the loop, once per expiry, never from ``arm``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from collections.abc import Callable
from typing import Literal

from service.scheduler.base import Timer
from service.scheduler.deadline import Clock

TimerKind = Literal["auto", "timerfd", "call_at"]


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
