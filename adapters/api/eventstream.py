"""`GET /v1/events`: the control plane's decision feed as server-sent events, bounded.

Bounds, each a setting (`TRITONFLEET_UI_STREAM_*`):
- at most `max_clients` streams at once; one more gets 503 with `Retry-After`;
- no queue per connection: each stream is a cursor into the shared, bounded `EventFeed`, and
  writes at most `batch_events` events before it looks again; a reader that falls further
  behind than the feed holds gets one `gap` event saying how many it missed;
- a write the client does not take within `write_timeout_s` (it stopped reading, and the
  socket buffers are full) ends the stream;
- a `: keepalive` comment every `heartbeat_s` keeps proxies from closing a quiet stream and
  finds dead peers;
- after `max_s` the stream ends cleanly with a `bye` event; the page reconnects with
  `Last-Event-ID` and misses nothing the feed still holds (a token revoked meanwhile is
  asked for again at that point).

Written as a plain ASGI response so that every write has a timeout and a client's disconnect
(`http.disconnect`) ends the stream at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from controlplane.events import Event, EventFeed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamLimits:
    max_clients: int = 16
    heartbeat_s: float = 15.0
    max_s: float = 600.0
    write_timeout_s: float = 10.0
    batch_events: int = 100
    retry_ms: int = 2000  # the reconnect delay the client is told to use


class StreamSlots:
    """How many streams are open; `acquire` refuses the one over `max_clients`."""

    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self.open = 0

    def acquire(self) -> bool:
        if self.open >= self.max_clients:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open = max(0, self.open - 1)


class _Stalled(Exception):
    pass


def finite(value: Any) -> Any:
    """JSON the browser can parse: NaN and infinities (which JSON lacks) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def frame(event: Event) -> bytes:
    data = json.dumps(finite(event.view()), separators=(",", ":"), allow_nan=False)
    return f"id: {event.seq}\nevent: decision\ndata: {data}\n\n".encode()


class EventStream(Response):
    """One client's stream, from `cursor` on; `slots` must already be acquired for it."""

    def __init__(
        self,
        feed: EventFeed,
        cursor: int,
        visible: Callable[[Event], bool],
        limits: StreamLimits,
        slots: StreamSlots,
    ) -> None:
        super().__init__(
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each event on, do not buffer
                "X-Content-Type-Options": "nosniff",
            },
        )
        # A stream has no length: drop the Content-Length: 0 a bodiless Response declares.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._feed = feed
        self._cursor = cursor
        self._visible = visible
        self._limits = limits
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._pump(send, gone)
        except _Stalled:
            log.info("event stream: the client stopped reading; closing it")
        finally:
            watcher.cancel()
            self._slots.release()

    async def _write(self, send: Send, body: bytes, more: bool = True) -> None:
        try:
            async with asyncio.timeout(self._limits.write_timeout_s):
                await send({"type": "http.response.body", "body": body, "more_body": more})
        except TimeoutError as exc:
            raise _Stalled from exc

    async def _pump(self, send: Send, gone: asyncio.Event) -> None:
        limits, feed = self._limits, self._feed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.max_s
        hello = {"last_seq": feed.last_seq, "heartbeat_s": limits.heartbeat_s}
        await self._write(
            send, f"retry: {limits.retry_ms}\nevent: hello\ndata: {json.dumps(hello)}\n\n".encode()
        )
        while not gone.is_set():
            page = feed.since(self._cursor, limits.batch_events, self._visible)
            self._cursor = page.cursor
            if page.missed:
                await self._write(
                    send, f"event: gap\ndata: {json.dumps({'missed': page.missed})}\n\n".encode()
                )
            if page.events:
                await self._write(send, b"".join(frame(e) for e in page.events))
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._cursor < feed.last_seq:
                continue  # more than one batch was waiting
            if not await self._wait(gone, min(limits.heartbeat_s, remaining)):
                if gone.is_set():
                    return
                if loop.time() < deadline:
                    await self._write(send, b": keepalive\n\n")
        if not gone.is_set():
            await self._write(send, b'event: bye\ndata: {"reason":"max stream time"}\n\n', False)

    async def _wait(self, gone: asyncio.Event, timeout_s: float) -> bool:
        """Until the feed has more (True), the client leaves or `timeout_s` passes (False)."""
        more = asyncio.create_task(self._feed.wait(self._cursor, timeout_s))
        left = asyncio.create_task(gone.wait())
        try:
            await asyncio.wait({more, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            more.cancel()
        return more.done() and not more.cancelled() and more.result()
