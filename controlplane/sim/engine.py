"""The event loop: one heap of (time, sequence, callback, argument), one clock.

SimPy-small on purpose. An event is a plain tuple (no object per event beyond it); ties at the
same time run in the order they were scheduled, so a run is a pure function of its seed.
Cancellation is the caller's job (a callback checks a token it was given), which keeps the heap
free of tombstone bookkeeping.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]


class Engine:
    __slots__ = ("_heap", "_seq", "events", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self.events = 0  # callbacks run so far
        self._heap: list[tuple[float, int, Callback, Any]] = []
        self._seq = 0

    def at(self, t: float, fn: Callback, arg: Any = None) -> None:
        """Run `fn(arg)` at time `t` (never before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (t if t > self.now else self.now, self._seq, fn, arg))

    def after(self, delay_s: float, fn: Callback, arg: Any = None) -> None:
        self.at(self.now + delay_s, fn, arg)

    def pending(self) -> int:
        return len(self._heap)

    def run(
        self,
        until: float,
        progress: Callable[[float], None] | None = None,
        progress_every_s: float = 0.0,
    ) -> None:
        """Run events up to and including time `until`; the clock ends at `until`."""
        heap = self._heap
        pop = heapq.heappop
        next_report = self.now + progress_every_s if progress is not None else float("inf")
        n = 0
        while heap and heap[0][0] <= until:
            t, _, fn, arg = pop(heap)
            self.now = t
            fn(arg)
            n += 1
            if t >= next_report:
                assert progress is not None
                self.events += n
                n = 0
                progress(t)
                next_report = t + progress_every_s
        self.events += n
        self.now = max(self.now, until)
