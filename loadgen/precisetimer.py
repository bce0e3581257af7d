"""A one-shot wake-up of the event loop at an exact `time.perf_counter()` instant (Linux).

Event-loop timers (asyncio's and uvloop's alike) have millisecond granularity: uvloop's fire
up to a millisecond early or late, so a dispatcher that trusted them would show ~1 ms of
schedule lag at p99 by itself. Spinning on the loop for the last stretch fixes the lag but
burns a core, and on a shared machine a spinning process is exactly the one the scheduler
preempts for milliseconds. A Linux `timerfd` armed at an absolute CLOCK_MONOTONIC time (the
clock behind `time.perf_counter` on Linux) wakes the loop's `epoll` with microsecond precision
while the process sleeps; the loop sees it as an ordinary readable file descriptor.

`PreciseTimer.create()` returns None where this is not available (not Linux, perf_counter on
another clock, libc without timerfd); callers then fall back to timer + spin.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from collections.abc import Callable
from typing import Any

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class PreciseTimer:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None], fd: int, settime: Any
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._fd = fd
        self._settime = settime
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        loop.add_reader(fd, self._fired)

    @classmethod
    def create(
        cls, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
    ) -> PreciseTimer | None:
        if not sys.platform.startswith("linux"):
            return None
        if "CLOCK_MONOTONIC)" not in time.get_clock_info("perf_counter").implementation:
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            create, settime = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError):
            return None
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            return None
        try:
            return cls(loop, callback, fd, settime)
        except Exception:
            os.close(fd)
            return None

    def arm(self, when: float) -> None:
        """Call the callback (once) from the loop at `when` (a `time.perf_counter()` value)."""
        sec = int(when)
        value = self._spec.it_value
        value.tv_sec = sec
        value.tv_nsec = max(1, int((when - sec) * 1e9))  # 0/0 would disarm the timer
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed since it fired
            return
        self._callback()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
