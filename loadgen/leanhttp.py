"""A minimal HTTP/1.1 keep-alive client on raw asyncio, for loadgen's request hot path.

A general HTTP client (aiohttp, under `tritonclient.http.aio`) spends ~300 µs of CPU per request
on things a load generator does not need: header dicts, URL objects, a task and a timeout
context per request, streams and readers. Here each distinct request is serialised to *one*
`bytes` object before the run (request line, headers and body together, see
`build_request`), and sending it is one `transport.write` on an idle persistent connection.
Responses are framed by `httptools` (llhttp: Content-Length and chunked), and only the status
is kept, plus the body of an error response (the server's message).

* `Pool` holds the connections to one endpoint: an idle stack, opened on demand up to `limit`
  (one request in flight per connection, no pipelining); past the limit requests wait in FIFO
  order for a connection.
* Timeouts cost nothing per request: each connection stores its deadline and one expiry timer, run a
  few times per timeout period (at least every 50 ms), aborts connections whose deadline has
  passed and fails queued requests that waited too long. A timed-out connection is closed, since
  its late response would otherwise be read as the answer to the next request.
* Completion is a plain callback `cb(kind, detail)`: `kind` is None for HTTP 200, else
  `http_<status>`, `connection` (refused, reset, closed mid-request), `timeout` or
  `bad_response` (unparseable HTTP); `detail` is the error response's body (bytes, at most
  64 KiB) or an explanation. Callbacks never raise into the pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable

import httptools

Callback = Callable[[str | None, bytes], None]

_MAX_ERROR_BODY = 64 * 1024


def build_request(
    hostport: str,
    path: str,
    body: bytes,
    *,
    json_header_size: int | None = None,
    content_type: str | None = None,
) -> bytes:
    """The full bytes of one `POST path` on a keep-alive connection.

    `json_header_size` is KServe v2's binary tensor extension: the body is a JSON header of
    that many bytes followed by the raw tensor bytes (`Inference-Header-Content-Length`).
    """
    if content_type is None:
        content_type = (
            "application/json" if json_header_size is None else "application/octet-stream"
        )
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {hostport}",
        "Connection: keep-alive",
        f"Content-Type: {content_type}",
    ]
    if json_header_size is not None:
        lines.append(f"Inference-Header-Content-Length: {json_header_size}")
    lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body


def split_hostport(hostport: str) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{hostport!r} is not host:port")
    return host.strip("[]"), int(port)


class _LeanConn(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_status",
        "cb",
        "deadline",
        "parser",
        "pool",
        "transport",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.cb: Callback | None = None  # set while a request is in flight
        self.deadline = 0.0
        self._status = 0
        self._body: list[bytes] | None = None

    # -- sending ------------------------------------------------------------------------
    def send(self, data: bytes, cb: Callback, deadline: float) -> None:
        self.cb = cb
        self.deadline = deadline
        self.transport.write(data)  # type: ignore[union-attr]

    def _finish(self, kind: str | None, detail: bytes) -> None:
        cb = self.cb
        if cb is not None:
            self.cb = None
            self.pool._call(cb, kind, detail)

    def abort(self, kind: str, detail: bytes) -> None:
        """Fail the request in flight (if any) and drop the connection."""
        self._finish(kind, detail)
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            self.abort("bad_response", b"unexpected protocol upgrade")
        except httptools.HttpParserError as exc:
            self.abort("bad_response", str(exc).encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._lost(self)
        self._finish("connection", str(exc or "connection closed by the server").encode())
        self.transport = None

    # -- httptools callbacks ------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._status = status = self.parser.get_status_code()
        self._body = [] if status != 200 else None

    def on_body(self, body: bytes) -> None:
        b = self._body
        if b is not None and sum(map(len, b)) < _MAX_ERROR_BODY:
            b.append(body)

    def on_message_complete(self) -> None:
        status = self._status
        if self.cb is None:  # an answer nobody asked for: the stream is out of step
            self.abort("bad_response", b"unsolicited response")
            return
        if status == 200:
            kind, detail = None, b""
        else:
            kind = f"http_{status}"
            detail = b"".join(self._body or ())[:_MAX_ERROR_BODY]
        if self.parser.should_keep_alive():
            cb = self.cb
            self.cb = None
            self.pool._release(self)
            self.pool._call(cb, kind, detail)
        else:
            self._finish(kind, detail)
            if self.transport is not None:
                self.transport.close()


class Pool:
    """Persistent HTTP/1.1 connections to one endpoint; see the module docstring."""

    def __init__(
        self,
        hostport: str,
        *,
        limit: int,
        timeout_s: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.host, self.port = split_hostport(hostport)
        self.limit = max(1, limit)
        self.timeout_s = timeout_s
        self._loop = loop
        self._idle: list[_LeanConn] = []
        self._conns: set[_LeanConn] = set()
        self._opening = 0
        self._waiting: collections.deque[tuple[bytes, Callback, float]] = collections.deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._closed = False
        self.opened = 0  # connections opened so far (tests, diagnostics)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def submit(self, data: bytes, cb: Callback) -> None:
        """Send `data` (one complete request) and call `cb(kind, detail)` when it ends."""
        deadline = time.monotonic() + self.timeout_s
        idle = self._idle
        if idle:
            idle.pop().send(data, cb, deadline)
            return
        if self._closed:
            self._call(cb, "connection", b"client closed")
            return
        if self._expiry is None:
            self._start_expiry()
        if len(self._conns) + self._opening < self.limit:
            self._open(data, cb, deadline)
        else:
            self._waiting.append((data, cb, deadline))

    def _open(self, data: bytes, cb: Callback, deadline: float) -> None:
        self._opening += 1
        self._get_loop().create_task(self._connect(data, cb, deadline))

    async def _connect(self, data: bytes, cb: Callback, deadline: float) -> None:
        loop = self._get_loop()
        try:
            remaining = deadline - time.monotonic()
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _LeanConn(self), self.host, self.port),
                max(remaining, 0.0),
            )
        except TimeoutError:
            self._opening -= 1
            self._call(cb, "timeout", b"connect timed out")
            self._open_for_waiting()
            return
        except OSError as exc:
            self._opening -= 1
            self._call(cb, "connection", str(exc).encode())
            self._open_for_waiting()
            return
        self._opening -= 1
        self.opened += 1
        if self._closed:
            conn.transport.abort()  # type: ignore[union-attr]
            self._call(cb, "connection", b"client closed")
            return
        self._conns.add(conn)
        conn.send(data, cb, deadline)

    def _open_for_waiting(self) -> None:
        while self._waiting and len(self._conns) + self._opening < self.limit:
            self._open(*self._waiting.popleft())

    def _release(self, conn: _LeanConn) -> None:
        waiting = self._waiting
        if waiting:
            data, cb, deadline = waiting.popleft()
            conn.send(data, cb, deadline)
        else:
            self._idle.append(conn)

    def _lost(self, conn: _LeanConn) -> None:
        self._conns.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        if not self._closed:
            self._open_for_waiting()

    @staticmethod
    def _call(cb: Callback, kind: str | None, detail: bytes) -> None:
        try:
            cb(kind, detail)
        except Exception:  # a failing callback must not take the connection down with it
            import logging

            logging.getLogger(__name__).exception("loadgen request callback failed")

    # -- timeouts -------------------------------------------------------------------------
    def _start_expiry(self) -> None:
        period = min(0.05, max(self.timeout_s / 4, 0.001))
        self._expiry = self._get_loop().call_later(period, self._expire, period)

    def _expire(self, period: float) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns if c.cb is not None and c.deadline <= now]:
            conn.abort("timeout", b"no response within the timeout")
        waiting = self._waiting
        while waiting and waiting[0][2] <= now:
            _, cb, _ = waiting.popleft()
            self._call(cb, "timeout", b"no connection became free within the timeout")
        self._expiry = self._get_loop().call_later(period, self._expire, period)

    async def request(self, data: bytes) -> tuple[str | None, bytes]:
        """`submit` as a coroutine (for one-off requests, not the hot path)."""
        fut: asyncio.Future[tuple[str | None, bytes]] = self._get_loop().create_future()

        def done(kind: str | None, detail: bytes) -> None:
            if not fut.done():
                fut.set_result((kind, detail))

        self.submit(data, done)
        return await fut

    async def close(self) -> None:
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while self._waiting:
            _, cb, _ = self._waiting.popleft()
            self._call(cb, "connection", b"client closed")
        for conn in list(self._conns):
            conn.abort("connection", b"client closed")
        self._conns.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
