"""Keep-alive HTTP/1.1 connections to one Triton server, reused request after request.

A connection carries one request at a time; its reply is framed by Content-Length (`framing`) and handed back
as the raw bytes Triton sent (status line, headers and body), which the front door writes to
its client unchanged. A successful reply over `STREAM_BYTES` is relayed instead, chunk by
chunk as it arrives, to a sink the waiter names; the sink pauses this connection's reading
while its own client is slow, so the gateway never holds a large reply for a slow reader.
Idle connections are reused last-in-first-out so a few stay hot.
"""

from __future__ import annotations

import asyncio
from typing import Protocol
from urllib.parse import urlsplit

from adapters.gateway.framing import FramingError, HeadCache, ResponseHead, parse_response_head

_HEADS: HeadCache[ResponseHead] = HeadCache()
STREAM_BYTES = 256 * 1024  # replies larger than this (2xx) are relayed as they arrive


class Sink(Protocol):
    def relay(self, data: bytes) -> None: ...


class Waiter(Protocol):
    def on_response(self, status: int, raw: bytes) -> None:
        """The whole reply; `raw` is empty when it was relayed to the stream's sink."""
        ...

    def on_stream(self, conn: Http1Upstream) -> Sink | None:
        """A large 2xx reply has started: where to relay it (None: buffer it whole)."""
        ...

    def on_failure(self, reason: str, sent: bool) -> None:
        """The request got no reply; `sent` is False when it never reached the server."""
        ...


class Http1Upstream(asyncio.Protocol):
    __slots__ = (
        "buf", "chunks", "closed", "have", "head", "need", "paused", "pool", "sink", "transport",
        "waiter",
    )  # fmt: skip

    def __init__(self, pool: Http1UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.head: ResponseHead | None = None
        self.chunks: list[bytes] = []
        self.have = 0
        self.need = 0
        self.waiter: Waiter | None = None
        self.sink: Sink | None = None
        self.paused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, waiter: Waiter, head: bytes, body: bytes) -> None:
        self.waiter = waiter
        assert self.transport is not None
        # One buffer, one send(): a second segment would cost a syscall and a wakeup upstream.
        self.transport.write(head + body if len(body) < 65536 else b"".join((head, body)))

    def data_received(self, data: bytes) -> None:
        if self.head is None:
            buf = self.buf + data if self.buf else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.buf = b""
            raw = buf[:end]
            head = _HEADS.get(raw)
            if head is None:
                try:
                    head = parse_response_head(raw)
                except FramingError as exc:
                    self._fail(exc.message, True)
                    self.abort()
                    return
                _HEADS.remember(raw, head)
            if 100 <= head.status < 200:  # interim reply: skip it
                if len(buf) > end + 4:
                    self.data_received(buf[end + 4 :])
                return
            self.head = head
            self.need = end + 4 + head.length
            waiter = self.waiter
            if self.need > STREAM_BYTES and head.status < 300 and waiter is not None:
                self.sink = waiter.on_stream(self)
                if self.sink is not None:
                    self.have = 0
                    self._relay(buf)
                    return
            self.chunks = [buf]
            self.have = len(buf)
        elif self.sink is not None:
            self._relay(data)
            return
        else:
            self.chunks.append(data)
            self.have += len(data)
        if self.have >= self.need:
            self._complete()

    def _relay(self, data: bytes) -> None:
        sink = self.sink
        assert sink is not None
        take = self.need - self.have
        if len(data) > take:
            data = data[:take]  # a server never sends ahead of a request; drop it
        self.have += len(data)
        sink.relay(data)
        if self.have >= self.need:
            self.sink = None
            self.resume()
            self._complete()

    def pause(self) -> None:
        """Stop reading the reply (its client is slow); `resume` when it has caught up."""
        if not self.paused and not self.closed and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _complete(self) -> None:
        raw = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        if len(raw) > self.need:
            raw = raw[: self.need]  # a server never sends ahead of a request; drop it
        head = self.head
        assert head is not None
        self.chunks = []
        self.head = None
        waiter, self.waiter = self.waiter, None
        if head.keep_alive:
            self.pool.release(self)
        else:
            self.abort()
        if waiter is not None:
            waiter.on_response(head.status, raw)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self._fail(f"connection lost: {exc or 'closed by the server'}", True)

    def _fail(self, reason: str, sent: bool) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.on_failure(reason, sent)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Http1UpstreamPool:
    """Connections to one server's HTTP endpoint (`http://host:port`)."""

    def __init__(self, http_url: str, connect_timeout_s: float, max_idle: int = 64) -> None:
        parts = urlsplit(http_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self.idle: list[Http1Upstream] = []
        self.all: set[Http1Upstream] = set()

    def send(self, waiter: Waiter, head: bytes, body: bytes) -> Http1Upstream | None:
        """Send on an idle connection (returned) or on a new one (None: connecting)."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.send(waiter, head, body)
                return conn
        asyncio.get_running_loop().create_task(self._connect_and_send(waiter, head, body))
        return None

    async def _connect_and_send(self, waiter: Waiter, head: bytes, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Http1Upstream(self), self.host, self.port),
                self.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            waiter.on_failure(f"cannot connect to {self.host}:{self.port}: {exc}", False)
            return
        self.all.add(conn)
        conn.send(waiter, head, body)

    def release(self, conn: Http1Upstream) -> None:
        if len(self.idle) < self.max_idle and not conn.closed:
            self.idle.append(conn)
        else:
            conn.abort()

    def forget(self, conn: Http1Upstream) -> None:
        self.all.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in list(self.all):
            conn.abort()
        self.idle.clear()
