"""The KServe v2 HTTP/REST front door: raw asyncio + httptools, bodies forwarded as bytes.

Per request the door frames the request (`framing`: request line, length, keep-alive), takes the model name
from the path, asks the router for a replica and writes a rebuilt request head plus the body,
untouched, on a pooled keep-alive connection; Triton's reply goes back byte for byte. Tensors
(JSON or the binary extension, `Inference-Header-Content-Length`) are never decoded. Only the
slow paths (a cold model, a connect) create tasks.

Closed doors: the repository, shared-memory, logging and trace APIs answer 403 here and never
reach Triton; model config requests carry the control plane's restricted-API key upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from collections.abc import Sequence

from adapters.gateway.attempt import SENT, Attempt
from adapters.gateway.framing import (
    FramingError,
    HeadCache,
    RequestHead,
    check_partial_head,
    parse_request_head,
)
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from adapters.gateway.upstream import Http1Upstream, Http1UpstreamPool
from controlplane.attempts import Unavailable, unavailable
from controlplane.replicas import Replica

log = logging.getLogger(__name__)

_CLOSED = {
    b"repository": "the model repository API (load/unload/index) is managed by tritonfleet",
    b"systemsharedmemory": "shared-memory registration cannot cross the gateway",
    b"cudasharedmemory": "shared-memory registration cannot cross the gateway",
    b"logging": "log settings of the servers are managed by tritonfleet",
    b"trace": "trace settings of the servers are managed by tritonfleet",
}
# Triton's 500s that are really a malformed request (its HTTP frontend's parse errors).
_CLIENT_FAULT_500 = re.compile(rb'\{"error":"(?:failed to parse|Unable to parse|unexpected)')
MAX_PIPELINED = 256  # requests one connection may send ahead of its replies before it is paused
MAX_ROUTE_TARGET_BYTES = 256  # longer targets are routed every time, not remembered
_HEADS: HeadCache[RequestHead] = HeadCache()
_CODES = {c: str(c) for c in range(100, 600)}  # status -> metrics label, without a str() each
_MODEL_ACTIONS = frozenset((b"", b"ready", b"config", b"infer", b"stats"))
_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 411: b"Length Required", 413: b"Payload Too Large",
    414: b"URI Too Long", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}  # fmt: skip


def error_response(status: int, message: str, *, close: bool = False, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n%s"
        % (
            status,
            _REASONS.get(status, b"Error"),
            len(body),
            extra,
            b"Connection: close\r\n" if close else b"",
            body,
        )
    )


def _ok(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        content_type,
        len(body),
        body,
    )


class HttpDoor:
    """State shared by every client connection of the HTTP front door."""

    def __init__(
        self,
        router: Router,
        metrics: GatewayMetrics,
        *,
        max_body_bytes: int,
        connect_timeout_s: float,
        header_timeout_s: float = 10.0,
        idle_timeout_s: float = 120.0,
        max_client_connections: int = 4096,
        max_pipelined_bytes: int = 1 << 20,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.connect_timeout_s = connect_timeout_s
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_client_connections = max_client_connections
        self.max_pipelined_bytes = max_pipelined_bytes
        self.clients: set[_Http1Client] = set()
        self.pools: dict[str, Http1UpstreamPool] = {}
        # (method, target) -> (model, action) for model-scoped routes seen before
        self.routes: dict[tuple[bytes, bytes], tuple[str, bytes]] = {}
        self.server_metadata = _ok(
            json.dumps(
                {
                    "name": "tritonfleet",
                    "version": "0.1.0",
                    "extensions": ["binary_tensor_data", "statistics"],
                }
            ).encode()
        )
        self.live = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"

    def pool(self, replica: Replica) -> Http1UpstreamPool:
        p = self.pools.get(replica.http_url)
        if p is None:
            p = self.pools[replica.http_url] = Http1UpstreamPool(
                replica.http_url, self.connect_timeout_s
            )
        return p

    def protocol(self) -> _Http1Client:
        return _Http1Client(self)

    def close(self) -> None:
        """Stop: drop the client connections still open (the listening socket is closed by
        the caller; asyncio leaves accepted connections open) and the replica connections."""
        for c in list(self.clients):
            c.closed = True
            if c.transport is not None:
                c.transport.abort()
        self.clients.clear()
        for p in self.pools.values():
            p.close()

    def reap(self, now: float) -> None:
        """Close slow and idle client connections (called by the gateway's periodic reaper).

        The hot path only sets `seen` on bytes and clears `head_from` on a complete head;
        times are taken here, so they are as precise as the reaper's interval.
        """
        header_t, idle_t = self.header_timeout_s, self.idle_timeout_s
        for c in list(self.clients):
            if c.closed or c.refused:
                continue
            if c.seen:
                c.seen = False
                c.seen_at = now
            if c.write_paused:  # replies not read: as idle as a connection can be
                if not c.write_paused_at:
                    c.write_paused_at = now
                elif now - c.write_paused_at >= idle_t:
                    c.time_out("idle_timeout", "")
                continue
            if c.busy or c.queue:  # a request in flight or queued: no client timeout
                c.seen_at = now
                continue
            if c.pending is not None:  # head read, body stalled
                if now - c.seen_at >= idle_t:
                    c.time_out("idle_timeout", "the request body stopped arriving")
            elif c.head_from:  # a new connection, or a started head on a kept-alive one
                if now - c.head_from >= header_t:
                    c.time_out("header_timeout", "the request head did not arrive in time")
            elif c.buf:  # the first bytes of the next head on a kept-alive connection
                c.head_from = now
            elif now - c.seen_at >= idle_t:
                c.time_out("idle_timeout", "")


_REFUSAL = RequestHead(b"", b"", 0, False, False, b"")  # a refusal queued behind replies owed


_DENIED = {401: "unauthenticated", 404: "unknown_model", 429: "rate_limited"}


class _Request:
    __slots__ = ("body", "head", "keep_alive", "method", "size", "token", "url")

    def __init__(self, head: RequestHead, body: bytes) -> None:
        self.token = head.token_sha256
        self.method = head.method
        self.url = head.target
        self.head = head.upstream_head
        self.keep_alive = head.keep_alive
        self.body = body
        self.size = len(self.head) + len(body)


class _Http1Client(asyncio.Protocol):
    """One client connection; requests on it are answered strictly in order.

    Memory per connection is bounded: reading stops while the requests queued behind the one
    in flight reach `max_pipelined_bytes` (or `MAX_PIPELINED`), and while the client does
    not read its replies (`pause_writing`); a large reply relayed as it arrives stops the
    replica's connection too until the client catches up.
    """

    def __init__(self, door: HttpDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.buf = b""  # a head still arriving, or bytes held back while the queue is full
        self.pending: RequestHead | None = None  # head read, body still arriving
        self.chunks: list[bytes] = []
        self.have = 0
        self.refused = False
        self.busy = False
        self.queue: deque[_Request] = deque()
        self.queued_bytes = 0
        self.held = False  # parsing stopped at `buf` because the queue is full
        self.write_paused = False  # the client's socket buffer is over its high-water mark
        self.write_paused_at = 0.0
        self.reading_paused = False
        self.upstream: Http1Upstream | None = None  # relaying a large reply from this connection
        self.exchange: _Exchange | None = None  # the latest request sent towards a replica
        self.draining = False
        self.closed = False
        # slow/idle client detection (`HttpDoor.reap`): bytes since the last reap, when
        # bytes (or a request in flight) were last seen, when the head clock started (0: off)
        self.seen = False
        self.seen_at = 0.0
        self.head_from = 0.0

    # --- asyncio -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        door = self.door
        if len(door.clients) >= door.max_client_connections:
            door.metrics.rejected_connections["http"] += 1
            self.refused = self.closed = True
            transport.close()
            return
        door.clients.add(self)
        self.seen_at = self.head_from = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.door.clients.discard(self)
        self.queue.clear()
        self.buf = b""
        self.chunks = []
        if self.upstream is not None:  # half a reply relayed: that connection is unusable
            self.upstream.abort()
            self.upstream = None
        ex, self.exchange = self.exchange, None
        if ex is not None and not ex.done:  # nobody is left to answer: give everything back
            ex.client_gone()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_at = 0.0  # stamped by the reaper
        if self.upstream is not None:
            self.upstream.pause()
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.resume()
        self._next()

    def time_out(self, reason: str, message: str) -> None:
        """Close a slow or idle connection; 408 when part of a request had arrived."""
        self.door.metrics.closed_connections["http", reason] += 1
        if self.write_paused:  # it reads nothing: a close would wait for the buffer to drain
            self.refused = True
            if self.transport is not None:
                self.transport.abort()
        elif message and (self.buf or self.pending is not None):
            self._refuse(408, message)
        else:
            self.refused = True
            if self.transport is not None:
                self.transport.close()
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.seen = True
        if self.refused:
            return
        try:
            self._feed(data)
        except FramingError as exc:
            self._reject(exc)

    def _feed(self, data: bytes) -> None:
        if self.pending is not None:
            self.chunks.append(data)
            self.have += len(data)
            head = self.pending
            if self.have < head.length:
                return
            data = b"".join(self.chunks)
            self.chunks = []
            self.pending = None
            self._complete(head, data[: head.length])
            data = data[head.length :]
        elif self.buf:
            data = self.buf + data
            self.buf = b""
        while data:
            if self.held:  # the queue is full: keep the rest unparsed until it drains
                self.buf = data
                return
            end = data.find(b"\r\n\r\n")
            if end < 0:
                check_partial_head(data)
                self.buf = data
                return
            raw = data[:end]
            cached = _HEADS.get(raw)
            if cached is None:  # validated in full before it is cached or used
                cached = parse_request_head(raw)
                _HEADS.remember(raw, cached)
            head = cached
            if head.length > self.door.max_body_bytes:
                raise FramingError(413, self._too_large(head.length))
            start = end + 4
            if len(data) - start < head.length:
                if head.expect_continue and self.transport is not None:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.pending = head
                self.chunks = [data[start:]]
                self.have = len(data) - start
                return
            stop = start + head.length
            self._complete(head, data[start:stop])
            data = data[stop:]

    def _complete(self, head: RequestHead, body: bytes) -> None:
        self.head_from = 0.0
        req = _Request(head, body)
        if self.busy or self.queue or self.write_paused:
            self.queue.append(req)
            self.queued_bytes += req.size
            if self._queue_full():
                self.held = True
                self._update_reading()
        else:
            self.busy = True
            self._handle(req)

    def _queue_full(self) -> bool:
        return (
            len(self.queue) >= MAX_PIPELINED or self.queued_bytes >= self.door.max_pipelined_bytes
        )

    def _update_reading(self) -> None:
        """Read from the client only while its replies flow and its queue has room."""
        want_paused = self.write_paused or self.held or self.refused
        if want_paused == self.reading_paused or self.closed or self.transport is None:
            return
        self.reading_paused = want_paused
        if want_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # --- answering ---------------------------------------------------------------------
    def _too_large(self, n: int) -> str:
        return (
            f"request body of {n} bytes is over the gateway's limit of "
            f"{self.door.max_body_bytes} bytes; send smaller batches or raise max_body_bytes"
        )

    def _reject(self, exc: FramingError) -> None:
        """The stream cannot be trusted from here on: read no more of it, answer the error
        in its turn (after the replies already owed) and close."""
        if not (self.busy or self.queue):
            return self._refuse(exc.status, exc.message)
        self.refused = True
        self.buf = b""
        self.chunks = []
        self.pending = None
        self.queue.append(_Request(_REFUSAL, error_response(exc.status, exc.message, close=True)))
        self._update_reading()

    def _refuse(self, status: int, message: str) -> None:
        """Answer at once and close."""
        self.refused = True
        self.buf = b""
        self.chunks = []
        if self.transport is not None and not self.closed:
            self.transport.write(error_response(status, message, close=True))
            self.transport.close()
        self.closed = True

    def relay(self, data: bytes) -> None:
        """Part of a large reply, written as it comes from the replica."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def respond(self, data: bytes, keep_alive: bool) -> None:
        if self.closed or self.transport is None:
            return
        if data:
            self.transport.write(data)
        if not keep_alive:
            self.transport.close()
            self.closed = True
            return
        self.busy = False
        if self.queue or self.held:
            self._next()

    def _next(self) -> None:
        """Answer queued requests while the client reads its replies; then read on."""
        if self.draining:
            return
        # A loop, not recursion: local answers (404, 403...) queued behind a forwarded
        # request are answered right here, and would otherwise nest one call each.
        self.draining = True
        try:
            while not self.busy and not self.closed and not self.write_paused:
                if self.queue:
                    req = self.queue.popleft()
                    self.queued_bytes -= req.size
                    self.busy = True
                    self._handle(req)
                elif self.held:
                    self.held = False
                    try:
                        self._feed(b"")
                    except FramingError as exc:
                        self._reject(exc)
                else:
                    break
        finally:
            self.draining = False
        self._update_reading()

    def _handle(self, req: _Request) -> None:
        if not req.head:  # a refusal queued by `_reject`
            return self.respond(req.body, False)
        route = self.door.routes.get((req.method, req.url))
        if route is not None:
            return self._forward(route[0], route[1], req)
        path = req.url.split(b"?", 1)[0]
        parts = path.split(b"/")
        # parts[0] is b"" (the path starts with "/").
        if len(parts) >= 4 and parts[1] == b"v2" and parts[2] == b"models" and parts[3] != b"stats":
            model = parts[3]
            rest = parts[4:]
            if len(rest) >= 2 and rest[0] == b"versions":
                rest = rest[2:]
            action = rest[0] if rest else b""
            if len(rest) <= 1 and action in _MODEL_ACTIONS:
                want = b"POST" if action == b"infer" else b"GET"
                if req.method != want:
                    return self.respond(
                        error_response(
                            405, f"{path.decode(errors='replace')} takes {want.decode()}"
                        ),
                        req.keep_alive,
                    )
                route = (model.decode(errors="replace"), action)
                if len(self.door.routes) < 4096 and len(req.url) <= MAX_ROUTE_TARGET_BYTES:
                    self.door.routes[req.method, req.url] = route
                return self._forward(route[0], action, req)
            if action == b"trace":
                return self.respond(error_response(403, _CLOSED[b"trace"]), req.keep_alive)
        elif len(parts) >= 3 and parts[1] == b"v2" and parts[2] in _CLOSED:
            return self.respond(
                error_response(403, f"{path.decode(errors='replace')}: {_CLOSED[parts[2]]}"),
                req.keep_alive,
            )
        elif path in (b"/v2/health/live", b"/v2/health/ready", b"/healthz"):
            return self.respond(self.door.live, req.keep_alive)
        elif path in (b"/v2", b"/v2/"):
            return self.respond(self.door.server_metadata, req.keep_alive)
        elif path == b"/metrics":
            return self.respond(
                _ok(self.door.metrics.render(), b"text/plain; version=0.0.4"), req.keep_alive
            )
        elif path == b"/v2/models/stats":
            return self.respond(
                error_response(
                    400, "the gateway serves statistics per model: GET /v2/models/<model>/stats"
                ),
                req.keep_alive,
            )
        self.respond(
            error_response(
                404, f"no such endpoint: {req.method.decode()} {path.decode(errors='replace')}"
            ),
            req.keep_alive,
        )

    def _forward(self, model: str, action: bytes, req: _Request) -> None:
        router = self.door.router
        rt = router.directory.routing(model)
        if router.gate.enabled:
            denied = router.gate.check(model, rt, req.token)
            if denied is not None:
                self.door.metrics.rejections[model, _DENIED[denied.status]] += 1
                extra = (
                    b"Retry-After: %d\r\n" % denied.retry_after_s if denied.retry_after_s else b""
                )
                if denied.status == 401:
                    extra += b'WWW-Authenticate: Bearer realm="tritonfleet"\r\n'
                return self.respond(
                    error_response(denied.status, denied.message, extra=extra), req.keep_alive
                )
        if rt is None:
            self.door.metrics.rejections[model, "unknown_model"] += 1
            return self.respond(
                error_response(
                    404, f"model {model!r} is not registered with tritonfleet; register it first"
                ),
                req.keep_alive,
            )
        replicas = router.directory.replicas(model)
        ex = self.exchange = _Exchange(self, model, action, req)
        if not ex.admit(rt):
            ex.finish_local(
                error_response(
                    429,
                    f"model {model!r} has too many requests in flight at the gateway; retry "
                    "later, or raise its admission.max_inflight",
                    extra=b"Retry-After: 1\r\n",
                ),
                "429",
            )
            return
        if replicas:
            ex.send(replicas)
        else:
            asyncio.get_running_loop().create_task(ex.send_when_warm())


class _Exchange(Attempt):
    """One client request through its one or two upstream attempts (`Attempt`'s lifecycle)."""

    __slots__ = ("action", "client", "conn", "head", "req", "streamed")

    def __init__(self, client: _Http1Client, model: str, action: bytes, req: _Request) -> None:
        super().__init__(client.door.router, model)
        self.client = client
        self.action = action
        self.req = req
        self.conn: Http1Upstream | None = None
        self.streamed = False  # the reply is being relayed as it comes: committed
        self.head = req.head

    def send(self, replicas: Sequence[Replica], exclude: str | None = None) -> Replica:
        replica = super().send(replicas, exclude)
        self._write(replica)
        return replica

    def _write(self, replica: Replica) -> None:
        head = self.head
        if self.action == b"config" and replica.admin_key:
            key = b"%s: %s\r\n\r\n" % (replica.admin_header.encode(), replica.admin_key.encode())
            head = head[:-2] + key
        self.conn = self.client.door.pool(replica).send(self, head, self.req.body)

    async def send_when_warm(self) -> None:
        replicas = await self.router.hold(self.model)
        if self.done:
            return
        if not replicas:
            retry_after = self.router.config.retry_after_s
            self.finish_local(
                error_response(
                    503,
                    f"model {self.model!r} has no ready replica yet (loading); retry in "
                    f"{retry_after}s",
                    extra=b"Retry-After: %d\r\n" % retry_after,
                ),
                "503",
            )
            return
        self.send(replicas)

    # --- upstream callbacks ------------------------------------------------------------
    def on_stream(self, conn: Http1Upstream) -> _Http1Client | None:
        """A large successful reply: relay it to the client as it arrives (None: buffer it)."""
        client = self.client
        if self.done or client.closed:
            return None
        # Committed: no retry is possible once bytes reached the client; the latency is
        # the time to the reply's head, and the upstream timeout no longer applies.
        self.outcome(True)
        self.streamed = True
        self.req.body = b""  # kept only for a retry, and there will be none
        client.upstream = conn
        if client.write_paused:
            conn.pause()
        return client

    def on_response(self, status: int, raw: bytes) -> None:
        if self.done:
            return
        if self.streamed:  # the whole reply went out through `_Http1Client.relay`
            self.client.upstream = None
            self._finish(b"", status)
            return
        if status == 503:
            # Triton sheds load with 503 too: a full queue or a queue timeout is no failure,
            # and a request that waited out its timeout is not sent again.
            kind = unavailable(raw[:1024])
            self.outcome(False if kind is Unavailable.FAILURE else None)
            if kind is not Unavailable.TIMED_OUT and self.retry("503"):
                return
        else:
            self.outcome(status not in (502, 504))
        if status == 500 and _CLIENT_FAULT_500.search(raw, 0, 512):
            # Triton answers a request body it cannot parse with 500; it is the client's fault.
            raw, status = b"HTTP/1.1 400 Bad Request" + raw[raw.find(b"\r\n") :], 400
        self._finish(raw, status)

    def on_failure(self, reason: str, sent: bool) -> None:
        if self.done:
            return
        if self.streamed:  # part of the reply was relayed: only closing can tell the client
            client = self.client
            client.upstream = None
            if client.transport is not None and not client.closed:
                client.refused = client.closed = True
                client.transport.abort()
            self._finish(b"", 502)
            return
        self.outcome(False)
        if self.retry("connect" if not sent else "connection_lost"):
            return
        assert self.replica is not None
        self._finish(
            error_response(
                502, f"replica {self.replica.server_id} of {self.model!r} failed: {reason}"
            ),
            502,
        )

    def _drop_conn(self) -> None:
        """Stop waiting for the replica's reply: its connection cannot be reused."""
        if self.conn is not None:
            self.conn.waiter = None
            self.conn.abort()

    def client_gone(self) -> None:
        """The client closed its connection (as nginx's 499: the request is given up)."""
        if self.phase is SENT:
            self._drop_conn()
        self.cancel()

    def expire(self) -> None:
        if self.done:
            return
        self._drop_conn()
        assert self.replica is not None
        self.finish("504", ok=False)
        self.client.respond(
            error_response(
                504,
                f"replica {self.replica.server_id} did not answer {self.model!r} within "
                f"{self.router.config.upstream_timeout_s:.0f}s",
            ),
            self.req.keep_alive,
        )

    def _finish(self, raw: bytes, status: int) -> None:
        if self.finish(_CODES.get(status) or str(status)):
            self.client.respond(raw, self.req.keep_alive)

    def finish_local(self, raw: bytes, code: str) -> None:
        if self.finish(code):
            self.client.respond(raw, self.req.keep_alive)
