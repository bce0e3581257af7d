"""The control plane's decisions as one ordered, bounded feed: what the dashboard streams.

The autopilot (scale up/down, hold, batching), the reconciler (loads, unloads, evictions, fleet
size) and the actuator (a load's outcome) `publish` here. Every event gets the next sequence
number; the feed keeps the newest `capacity` of them, so memory is bounded however many
readers there are and however slow they read. A reader keeps its own cursor (the last `seq`
it saw) and asks `since(cursor)`; a reader that fell further behind than the feed holds is
told how many events it missed (`Page.missed`) instead of the feed growing for it.

Pure apart from one `asyncio.Event` that wakes readers waiting for the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    AUTOPILOT = "autopilot"  # a model's wanted replicas, mode or batching changed
    PLACEMENT = "placement"  # a load, reload, unload or eviction was started, and why
    REPLICA = "replica"  # a load finished: READY, or failed
    FLEET = "fleet"  # the fleet's size changed


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    at: float  # the clock the control plane runs on (epoch seconds in production)
    kind: EventKind
    model: str | None  # None: about the fleet, not one model
    summary: str  # one line a person reads
    detail: Mapping[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind.value,
            "model": self.model,
            "summary": self.summary,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class Page:
    events: tuple[Event, ...]
    missed: int  # events after the cursor that the feed no longer holds
    cursor: int  # pass this to the next `since`


class EventFeed:
    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("an event feed holds at least one event")
        self.capacity = capacity
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = 0
        self._changed = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(
        self,
        kind: EventKind,
        model: str | None,
        summary: str,
        at: float,
        detail: Mapping[str, Any] | None = None,
    ) -> Event:
        self._seq += 1
        event = Event(self._seq, at, kind, model, summary, dict(detail or {}))
        self._events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()  # wake every waiting reader; the next waiters wait on a fresh event
        return event

    def since(
        self,
        cursor: int,
        limit: int,
        visible: Callable[[Event], bool] | None = None,
    ) -> Page:
        """Up to `limit` events after `cursor` (oldest first) that `visible` lets through.

        A cursor ahead of the feed (a client that remembers a previous run) starts over at 0.
        """
        if cursor > self._seq or cursor < 0:
            cursor = 0
        oldest = self._events[0].seq if self._events else self._seq + 1
        missed = max(0, oldest - cursor - 1)
        out: list[Event] = []
        new_cursor = max(cursor, oldest - 1)
        start = max(0, cursor - oldest + 1)
        for i in range(start, len(self._events)):
            event = self._events[i]
            if len(out) >= limit:
                break
            new_cursor = event.seq
            if visible is None or visible(event):
                out.append(event)
        return Page(tuple(out), missed, new_cursor)

    def recent(self, n: int) -> int:
        """The cursor that makes `since` return (at most) the last `n` events."""
        return max(0, self._seq - max(0, n))

    async def wait(self, cursor: int, timeout_s: float) -> bool:
        """Until an event after `cursor` exists (True) or `timeout_s` passes (False)."""
        if self._seq > cursor:
            return True
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout_s)):
                await changed.wait()
        return self._seq > cursor


__all__ = ["Event", "EventFeed", "EventKind", "Page"]
