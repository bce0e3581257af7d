"""Persistent HTTP/2 connections to the replicas' gRPC ports, many calls multiplexed on each.

One connection per replica (opened on first use, replaced when it is lost, goes away, or runs
out of stream ids). A `Call` is one stream on it: it starts when the connection is up and the
replica's MAX_CONCURRENT_STREAMS allows, and reports to its `Listener`: response headers, data,
and failure (connect failed, connection lost, stream refused or reset, GOAWAY before the
stream was processed). Everything runs on the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Protocol

from adapters.gateway.h2wire import CANCEL, H2Limits, Peer

log = logging.getLogger(__name__)

_LAST_SID = 0x7FFFFF00  # past this, new calls go to a fresh connection
# A replica is ours, not a hostile client: frame and header bounds hold, flood counters do not.
_LIMITS = H2Limits(
    max_resets_per_s=1 << 30,
    max_control_frames_per_s=1 << 30,
    max_empty_frames=1 << 30,
    max_outbound_control_frames=1 << 30,
    max_header_list=1 << 20,
)


class Listener(Protocol):
    def on_response_headers(self, headers: list[tuple[bytes, bytes]], end: bool) -> None: ...

    def on_response_data(self, data: bytes, end: bool) -> None: ...

    def on_failure(self, reason: str) -> None:
        """The call is over without a reply; it is no longer on any connection."""
        ...

    def on_drained(self) -> None:
        """Request data queued for the replica has all been written (backpressure)."""
        ...


class Call:
    """One stream to a replica; `send_data` adds request data (streams), `cancel` drops it.

    A unary call's reply is credited to the replica as it arrives (it is buffered whole, for
    a retry); a relayed one's (`relay`) only when the listener says it went on (`credit`).
    """

    __slots__ = ("block", "conn", "data", "end", "listener", "relay", "sid")

    def __init__(
        self, listener: Listener, block: bytes, data: bytes, end: bool, relay: bool
    ) -> None:
        self.listener = listener
        self.block = block
        self.data = data
        self.end = end
        self.relay = relay
        self.conn: Upstream | None = None
        self.sid = 0

    def backlogged(self) -> bool:
        """Request data waits here or in the connection's queue for this stream."""
        if not self.sid:
            return bool(self.data)
        return self.conn is not None and self.conn.backlogged(self.sid)

    def credit(self, n: int) -> None:
        """`n` bytes of a relayed reply went on to the client: the replica may send more."""
        if self.sid and self.conn is not None:
            self.conn.credit(self.sid, n)

    def send_data(self, data: bytes, end: bool) -> None:
        if self.sid:
            assert self.conn is not None
            self.conn.send_data(self.sid, data, end)
        else:
            self.data += data
            self.end = end

    def cancel(self) -> None:
        conn = self.conn
        if conn is None:
            return
        if self.sid:
            if conn.calls.pop(self.sid, None) is not None:
                conn.reset_stream(self.sid, CANCEL)
                conn.start_waiting()
        else:
            with contextlib.suppress(ValueError):
                conn.waiting.remove(self)
        self.conn = None


class Upstream(Peer):
    """The client side of one HTTP/2 connection to a replica."""

    credit_connection_on_arrival = True

    def __init__(self, pool: H2UpstreamPool, url: str) -> None:
        super().__init__(_LIMITS)
        self.pool = pool
        self.url = url
        self.calls: dict[int, Call] = {}
        self.waiting: deque[Call] = deque()
        self.next_sid = 1
        self.ready = False
        self.draining = False

    async def connect(self, timeout_s: float) -> None:
        host, _, port = self.url.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self, host, int(port)), timeout_s)
        except (OSError, TimeoutError) as exc:
            self.closed = True
            self._fail_all(f"cannot connect to {self.url}: {exc or type(exc).__name__}")
            return
        self.ready = True
        self.start_waiting()

    def submit(self, call: Call) -> None:
        call.conn = self
        self.waiting.append(call)
        if self.ready:
            self.start_waiting()

    def start_waiting(self) -> None:
        while self.waiting and len(self.calls) < self.max_streams and not self.closed:
            call = self.waiting.popleft()
            sid = self.next_sid
            self.next_sid += 2
            if self.next_sid > _LAST_SID:
                self._retire()
            call.sid = sid
            self.calls[sid] = call
            self.open_stream(sid)
            data, call.data = call.data, b""
            self.send_message(sid, call.block, data, None, call.end)
            if sid not in self.blocked:
                call.listener.on_drained()

    def _retire(self) -> None:
        """Take no new calls here; the pool opens a fresh connection for them."""
        if not self.draining:
            self.draining = True
            self.pool.forget(self)
        if not self.calls and self.transport is not None:
            self.transport.close()

    # --- Peer ------------------------------------------------------------------------
    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        if end:
            self._done(sid)
        call.listener.on_response_headers(headers, end)

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        if not call.relay:
            self.credit(sid, len(data))
        if end:
            self._done(sid)
        call.listener.on_response_data(data, end)

    def _done(self, sid: int) -> None:
        self.calls.pop(sid, None)
        self._forget(sid)  # the replica ended the stream: nothing more goes on it
        if self.waiting:
            self.start_waiting()
        elif self.draining and not self.calls and self.transport is not None:
            self.transport.close()

    def on_reset(self, sid: int, code: int) -> None:
        call = self.calls.pop(sid, None)
        if call is not None:
            call.conn = None
            call.listener.on_failure(f"the replica reset the stream (HTTP/2 error {code})")
            self.start_waiting()

    def on_goaway(self, last_sid: int, code: int, debug: bytes) -> None:
        if code:
            log.warning("replica %s: GOAWAY %d %r", self.url, code, debug[:200])
        self._retire()
        for sid in [s for s in self.calls if s > last_sid]:
            call = self.calls.pop(sid)
            self._forget(sid)
            call.conn = None
            call.listener.on_failure("the replica went away before the call started")
        waiting, self.waiting = self.waiting, deque()
        for call in waiting:
            self.pool.get(self.url).submit(call)

    def on_settings(self) -> None:
        if self.waiting:
            self.start_waiting()

    def on_drained(self, sid: int) -> None:
        call = self.calls.get(sid)
        if call is not None:
            call.listener.on_drained()

    def on_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        self._fail_all(f"connection to {self.url} lost" + (f": {exc}" if exc else ""))

    def _fail_all(self, reason: str) -> None:
        self.pool.forget(self)
        calls = list(self.calls.values()) + list(self.waiting)
        self.calls.clear()
        self.waiting.clear()
        for call in calls:
            call.conn = None
            call.listener.on_failure(reason)


class H2UpstreamPool:
    """The current connection to each replica's gRPC port."""

    def __init__(self, connect_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.conns: dict[str, Upstream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def get(self, url: str) -> Upstream:
        conn = self.conns.get(url)
        if conn is None:
            conn = self.conns[url] = Upstream(self, url)
            task = asyncio.get_running_loop().create_task(conn.connect(self.connect_timeout_s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return conn

    def start(
        self,
        url: str,
        listener: Listener,
        block: bytes,
        data: bytes,
        end: bool,
        *,
        relay: bool = False,
    ) -> Call:
        call = Call(listener, block, data, end, relay)
        if self.closed:  # stopping: a retry must not open connections again
            listener.on_failure("the gateway is stopping")
        else:
            self.get(url).submit(call)
        return call

    def forget(self, conn: Upstream) -> None:
        if self.conns.get(conn.url) is conn:
            del self.conns[conn.url]

    def close(self) -> None:
        self.closed = True
        for conn in list(self.conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        self.conns.clear()
        for task in self._tasks:
            task.cancel()
