"""The KServe v2 gRPC front door at the HTTP/2 frame level (no grpcio on the path).

A client connection (h2c, prior knowledge, as gRPC clients speak it) is read frame by frame
(`h2wire`). Each stream's `:path` picks its handler:
- unary model calls (`ModelInfer`, `ModelReady`, `ModelMetadata`, `ModelConfig`,
  `ModelStatistics`): the request message is read whole, the model name taken from protobuf
  field 1, and the call goes through the router (admission, cold hold, policy, retry once on
  UNAVAILABLE or a failed connection for stateless models, ejection, metrics) to a stream on
  the replica's persistent HTTP/2 connection (`h2upstream`); the reply's headers, message and
  trailers go back as Triton sent them, Triton's error messages included.
- `ModelStreamInfer`: pinned at its first message to one replica; then frames of the stream
  are relayed both ways as they come, without retries.
- `ServerLive/Ready/Metadata` are answered here; the repository, shared-memory, trace and
  log APIs get PERMISSION_DENIED; other paths UNIMPLEMENTED.
Client metadata is forwarded except the restricted-API key, which only the gateway adds
(model config).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from adapters.gateway.config import GatewayConfig
from adapters.gateway.grpcproto import (
    CLOSED,
    REPLICA_FAILURES,
    ROUTED,
    SERVER_METADATA,
    SERVICE,
    STREAM,
    TRUE,
    Refusal,
    Status,
    admin_metadata,
    admit,
    cold,
    field1_string,
)
from adapters.gateway.h2upstream import Call, UpstreamPool
from adapters.gateway.h2wire import NO_ERROR, Peer, encode
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from controlplane.replicas import ModelRouting, Replica

log = logging.getLogger(__name__)

_SERVICE = SERVICE.encode()
_HEAD = encode(((b":status", b"200"), (b"content-type", b"application/grpc")))
_OK_TRAILERS = encode(((b"grpc-status", b"0"),))
_STATUS_NAMES = {int(s): s.name for s in Status}


def _pct(message: str) -> bytes:
    """grpc-message's percent-encoding (printable ASCII except '%' stays as it is)."""
    raw = message.encode("utf-8")
    if all(0x20 <= c <= 0x7E and c != 0x25 for c in raw):
        return raw
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in raw)


def _status_headers(code: Status, message: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"grpc-status", b"%d" % code), (b"grpc-message", _pct(message)))


def _trailers_only(code: Status, message: str) -> bytes:
    return encode(
        (
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            *_status_headers(code, message),
        )
    )


def _grpc_status(headers: Sequence[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                break
    return Status.UNKNOWN


class H2Door:
    """The gRPC door: a listening socket, its client connections, one upstream pool."""

    def __init__(self, router: Router, metrics: GatewayMetrics, config: GatewayConfig) -> None:
        self.router = router
        self.metrics = metrics
        self.config = config
        self.pool = UpstreamPool(config.connect_timeout_s)
        self.server: asyncio.Server | None = None
        self.clients: set[_Client] = set()
        self._admin_name = config.admin_header_grpc.lower().encode()
        self._local = {
            "ServerLive": TRUE,
            "ServerReady": TRUE,
            "ServerMetadata": SERVER_METADATA,
        }

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Client(self), host, port, reuse_address=True, backlog=1024
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for c in list(self.clients):
                c.fail_connection(NO_ERROR, "gateway stopping")
            await self.server.wait_closed()
            self.server = None
        self.pool.close()

    def sweep(self, now: float) -> None:
        """Close slow and idle client connections (called by the gateway's periodic sweep)."""
        header_t = self.config.header_timeout_s
        idle_t = self.config.idle_timeout_s
        for c in list(self.clients):
            if c.closed:
                continue
            if c.seen:
                c.seen = False
                c.seen_at = now
            if not c.ready or c.head_incomplete():
                if not c.head_from:
                    c.head_from = now
                elif now - c.head_from >= header_t:
                    c.time_out("header_timeout", "preface, SETTINGS or HEADERS not complete")
                continue
            c.head_from = 0.0
            if c.streams:  # calls in flight: no client timeout
                c.seen_at = now
            elif now - c.seen_at >= idle_t:
                c.time_out("idle_timeout", "idle connection")

    def forward_headers(
        self, headers: list[tuple[bytes, bytes]], name: str, replica: Replica
    ) -> bytes:
        """The request's header block for the replica: the client's, minus any admin key."""
        admin = self._admin_name
        fwd = tuple(h for h in headers if h[0] != admin)
        md = admin_metadata(name, replica, self.config)
        if md is not None:
            fwd += ((md[0].lower().encode(), md[1].encode()),)
        return encode(fwd)


class _Client(Peer):
    """One client connection; each stream has a handler (`_Unary`, `_Stream`, `_Local`)."""

    expect_preface = True

    def __init__(self, door: H2Door) -> None:
        super().__init__()
        self.door = door
        self.streams: dict[int, _Unary | _Stream | _Local] = {}
        self.last_sid = 0
        # slow/idle client detection (`H2Door.sweep`)
        self.ready = False  # the client's preface and first SETTINGS arrived
        self.seen_at = 0.0
        self.head_from = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        door = self.door
        if len(door.clients) >= door.config.max_client_connections:
            door.metrics.rejected_connections["grpc"] += 1
            self.closed = True
            transport.close()
            return
        super().connection_made(transport)
        door.clients.add(self)
        self.seen_at = self.head_from = asyncio.get_running_loop().time()

    def on_settings(self) -> None:
        self.ready = True

    def time_out(self, reason: str, message: str) -> None:
        self.door.metrics.closed_connections["grpc", reason] += 1
        self.fail_connection(NO_ERROR, message)

    def on_lost(self, exc: Exception | None) -> None:
        self.door.clients.discard(self)
        streams, self.streams = self.streams, {}
        for h in streams.values():
            h.reset()

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        h = self.streams.get(sid)
        if h is not None:  # trailers from the client: only their END_STREAM matters
            if end:
                h.data(b"", True)
            return
        if sid <= self.last_sid or not sid & 1:
            return  # a closed or server-side stream id: nothing to do with it
        self.last_sid = sid
        self.open_stream(sid)
        path = b""
        for n, v in headers:
            if n == b":path":
                path = v
                break
        name = path[len(_SERVICE) :].decode("latin-1") if path.startswith(_SERVICE) else ""
        door = self.door
        if name in ROUTED:
            h = _Unary(self, sid, name, headers)
        elif name == STREAM:
            h = _Stream(self, sid, headers)
        elif name in door._local:
            h = _Local(self, sid, None, door._local[name])
        elif name in CLOSED:
            h = _Local(self, sid, (Status.PERMISSION_DENIED, f"{name}: {CLOSED[name]}"))
        else:
            method = path.decode("latin-1", errors="replace")
            h = _Local(self, sid, (Status.UNIMPLEMENTED, f"method {method} is not implemented"))
        self.streams[sid] = h
        if end:
            h.data(b"", True)

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        h = self.streams.get(sid)
        if h is not None:
            h.data(data, end)

    def on_reset(self, sid: int, code: int) -> None:
        h = self.streams.pop(sid, None)
        if h is not None:
            h.reset()

    # --- replies ---------------------------------------------------------------------
    def refuse(self, sid: int, code: Status, message: str, *, head_sent: bool = False) -> None:
        """End the stream with an error status (trailers-only unless headers went already)."""
        self.streams.pop(sid, None)
        if head_sent:
            self.send_headers(sid, encode(_status_headers(code, message)), True)
        else:
            self.send_headers(sid, _trailers_only(code, message), True)

    def reply(self, sid: int, message: bytes) -> None:
        self.streams.pop(sid, None)
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        self.send_message(sid, _HEAD, data, _OK_TRAILERS, True)


class _Local:
    """A call the gateway answers itself, once the client has sent all of it."""

    __slots__ = ("client", "error", "reply", "sid")

    def __init__(
        self, client: _Client, sid: int, error: tuple[Status, str] | None, reply: bytes = b""
    ) -> None:
        self.client, self.sid, self.error, self.reply = client, sid, error, reply

    def data(self, chunk: bytes, end: bool) -> None:
        if not end:
            return
        if self.error is not None:
            self.client.refuse(self.sid, *self.error)
        else:
            self.client.reply(self.sid, self.reply)

    def reset(self) -> None:
        pass


class _Unary:
    """One unary model call: read the request, route it, relay the reply (retry once)."""

    __slots__ = (
        "attempt",
        "body",
        "call",
        "client",
        "done",
        "headers",
        "model",
        "name",
        "parts",
        "replica",
        "replicas",
        "resp_data",
        "resp_head",
        "rt",
        "sid",
        "size",
        "start",
    )

    def __init__(
        self, client: _Client, sid: int, name: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.client = client
        self.sid = sid
        self.name = name
        self.headers = headers
        self.parts: list[bytes] = []
        self.size = 0
        self.body = b""
        self.model = ""
        self.rt: ModelRouting | None = None
        self.replicas: Sequence[Replica] = ()
        self.replica: Replica | None = None
        self.call: Call | None = None
        self.start = 0.0
        self.attempt = 0
        self.done = False
        self.resp_head: list[tuple[bytes, bytes]] | None = None
        self.resp_data: list[bytes] = []

    # --- the request ---------------------------------------------------------------------
    def data(self, chunk: bytes, end: bool) -> None:
        if self.done:
            return
        if chunk:
            first = not self.parts
            self.parts.append(chunk)
            self.size += len(chunk)
            if first or self.size - len(chunk) < 5 <= self.size:
                self._check_size()
        if end and not self.done:
            self._begin()

    def _check_size(self) -> None:
        if self.size < 5:
            return
        head = b"".join(self.parts)[:5] if len(self.parts[0]) < 5 else self.parts[0][:5]
        limit = self.client.door.config.max_body_bytes
        declared = int.from_bytes(head[1:5], "big")
        if declared > limit:
            # Refused before the message is read into memory; the client stops sending.
            self._local(
                Status.RESOURCE_EXHAUSTED,
                f"{self.name}: the request message has {declared} bytes, over the gateway's "
                f"limit of {limit} (max_body_bytes)",
                admitted=False,
            )
            self.client.reset_stream(self.sid, NO_ERROR)

    def _begin(self) -> None:
        body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        door = self.client.door
        if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            reason = (
                "compressed messages are not supported"
                if body[:1] == b"\x01"
                else ("expected exactly one length-prefixed message")
            )
            self._local(Status.INVALID_ARGUMENT, f"{self.name}: {reason}", admitted=False)
            return
        try:
            self.model = model = field1_string(body[5:])
        except ValueError:
            self._local(Status.INVALID_ARGUMENT, f"{self.name}: malformed request", admitted=False)
            return
        self.body = body
        try:
            self.rt = admit(door.router, door.metrics, model)
        except Refusal as r:
            self._local(r.code, r.details, admitted=False)
            return
        replicas = door.router.directory.replicas(model)
        if replicas:
            self.replicas = replicas
            self._send(None)
        else:
            asyncio.get_running_loop().create_task(self._send_when_warm())

    async def _send_when_warm(self) -> None:
        door = self.client.door
        replicas = await door.router.hold(self.model)
        if self.done:
            return
        if not replicas:
            r = cold(self.model, door.config)
            self._local(r.code, r.details)
            return
        self.replicas = replicas
        self._send(None)

    def _send(self, exclude: str | None) -> None:
        door = self.client.door
        router = door.router
        self.replica = replica = router.pick(self.model, self.replicas, exclude)
        self.start = router.begin(replica, self)
        self.resp_head = None
        self.resp_data = []
        block = door.forward_headers(self.headers, self.name, replica)
        self.call = door.pool.start(replica.grpc_url, self, block, self.body, True)

    # --- the reply (h2upstream.Listener) -------------------------------------------------
    def on_response_headers(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.resp_head is None:
            self.resp_head = headers
            if end:  # trailers-only: the status came without a message
                self._complete(headers, None)
        elif end:
            self._complete(self.resp_head, headers)

    def on_response_data(self, data: bytes, end: bool) -> None:
        self.resp_data.append(data)
        if end:  # DATA that ends the stream: no trailers, so no status
            self._complete(self.resp_head or [], [(b"grpc-status", b"%d" % Status.UNKNOWN)])

    def _complete(
        self, head: list[tuple[bytes, bytes]], trailers: list[tuple[bytes, bytes]] | None
    ) -> None:
        self.call = None
        if self.done:
            return
        door = self.client.door
        router = door.router
        replica = self.replica
        assert replica is not None
        status = _grpc_status(head if trailers is None else trailers)
        elapsed = router.end(self.model, replica, self, self.start, status not in REPLICA_FAILURES)
        if status == Status.UNAVAILABLE and self._retry("unavailable"):
            return
        self.done = True
        door.metrics.observe(
            self.model, replica.server_id, "grpc", _STATUS_NAMES.get(status, "UNKNOWN"), elapsed
        )
        router.release(self.model)
        client = self.client
        if client.streams.pop(self.sid, None) is None:
            return  # the client has gone or cancelled
        if trailers is None:
            client.send_headers(self.sid, encode(tuple(head)), True)
        else:
            data = self.resp_data[0] if len(self.resp_data) == 1 else b"".join(self.resp_data)
            client.send_message(self.sid, encode(tuple(head)), data, encode(tuple(trailers)), True)

    def on_failure(self, reason: str) -> None:
        self.call = None
        if self.done:
            return
        router = self.client.door.router
        replica = self.replica
        assert replica is not None
        elapsed = router.end(self.model, replica, self, self.start, False)
        if self._retry("connection_lost"):
            return
        self._finish_error(
            Status.UNAVAILABLE,
            f"replica {replica.server_id} of {self.model!r} failed: {reason}",
            elapsed,
        )

    def expire(self) -> None:
        """The router's sweep: no reply within `upstream_timeout_s`."""
        if self.done or self.call is None:
            return
        self.call.cancel()
        self.call = None
        router = self.client.door.router
        replica = self.replica
        assert replica is not None
        elapsed = router.end(self.model, replica, self, self.start, False)
        self._finish_error(
            Status.DEADLINE_EXCEEDED,
            f"replica {replica.server_id} did not answer {self.model!r} within "
            f"{router.config.upstream_timeout_s:.0f}s",
            elapsed,
        )

    def reset(self) -> None:
        """The client cancelled the call or went away."""
        if self.done:
            return
        self.done = True
        if self.call is not None:
            self.call.cancel()
            self.call = None
            router = self.client.door.router
            assert self.replica is not None
            elapsed = router.end(self.model, self.replica, self, self.start, True)
            self.client.door.metrics.observe(
                self.model, self.replica.server_id, "grpc", "CANCELLED", elapsed
            )
        if self.rt is not None:
            self.client.door.router.release(self.model)

    def _retry(self, reason: str) -> bool:
        if self.attempt > 0 or len(self.replicas) < 2:
            return False
        assert self.replica is not None
        if not self.client.door.router.may_retry(self.model, self.rt, reason):
            return False
        self.attempt += 1
        self._send(self.replica.server_id)
        return True

    def _finish_error(self, code: Status, message: str, elapsed: float) -> None:
        self.done = True
        door = self.client.door
        assert self.replica is not None
        door.metrics.observe(self.model, self.replica.server_id, "grpc", code.name, elapsed)
        door.router.release(self.model)
        if self.sid in self.client.streams:
            self.client.refuse(self.sid, code, message)

    def _local(self, code: Status, message: str, *, admitted: bool = True) -> None:
        self.done = True
        door = self.client.door
        door.metrics.local(self.model, "grpc", code.name)
        if admitted:
            door.router.release(self.model)
        if self.sid in self.client.streams:
            self.client.refuse(self.sid, code, message)


class _Stream:
    """A `ModelStreamInfer` call: pinned to one replica at its first message, then relayed."""

    __slots__ = (
        "call",
        "client",
        "client_ended",
        "done",
        "head_sent",
        "headers",
        "model",
        "pending",
        "replica",
        "sid",
        "start",
        "state",
    )

    def __init__(self, client: _Client, sid: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.client = client
        self.sid = sid
        self.headers = headers
        self.pending = bytearray()  # request bytes before the replica is known
        self.client_ended = False
        self.head_sent = False
        self.done = False
        self.model = ""
        self.replica: Replica | None = None
        self.call: Call | None = None
        self.start = 0.0
        self.state = "first"  # → "holding" → "open"

    def data(self, chunk: bytes, end: bool) -> None:
        if self.done:
            return
        self.client_ended = self.client_ended or end
        if self.call is not None:
            self.call.send_data(chunk, end)
            return
        self.pending += chunk
        if self.state != "first":
            return
        p = self.pending
        if len(p) >= 5 and len(p) >= 5 + int.from_bytes(p[1:5], "big"):
            self._route(bytes(p[5 : 5 + int.from_bytes(p[1:5], "big")]))
        elif end:
            if p:
                self._refuse(Status.INVALID_ARGUMENT, "ModelStreamInfer: truncated message")
            else:  # no request at all: no reply either
                self.done = True
                self.client.streams.pop(self.sid, None)
                self.client.send_message(self.sid, _HEAD, b"", _OK_TRAILERS, True)

    def _route(self, first: bytes) -> None:
        door = self.client.door
        try:
            self.model = model = field1_string(first)
            admit(door.router, door.metrics, model)
        except ValueError:
            self._refuse(Status.INVALID_ARGUMENT, "ModelStreamInfer: malformed request")
            return
        except Refusal as r:
            self._refuse(r.code, r.details)
            return
        replicas = door.router.directory.replicas(model)
        if replicas:
            self._open(replicas)
        else:
            self.state = "holding"
            asyncio.get_running_loop().create_task(self._open_when_warm())

    async def _open_when_warm(self) -> None:
        door = self.client.door
        replicas = await door.router.hold(self.model)
        if self.done:  # the client went away while it was held
            door.router.release(self.model)
            return
        if not replicas:
            door.router.release(self.model)
            r = cold(self.model, door.config)
            self._refuse(r.code, r.details)
            return
        self._open(replicas)

    def _open(self, replicas: Sequence[Replica]) -> None:
        # One stream stays on one replica: sequences and decoupled models need that.
        door = self.client.door
        self.state = "open"
        self.replica = replica = door.router.pick(self.model, replicas)
        self.start = door.router.begin(replica, self)
        block = door.forward_headers(self.headers, STREAM, replica)
        data, self.pending = bytes(self.pending), bytearray()
        self.call = door.pool.start(replica.grpc_url, self, block, data, self.client_ended)

    def _refuse(self, code: Status, message: str) -> None:
        self.done = True
        self.client.door.metrics.local(self.model, "grpc", code.name)
        if self.sid in self.client.streams:
            self.client.refuse(self.sid, code, message)

    # --- h2upstream.Listener -----------------------------------------------------------------
    def on_response_headers(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.done:
            return
        if end:
            self.call = None
            self._finish(_grpc_status(headers))
        if self.sid in self.client.streams or end:
            self.client.send_headers(self.sid, encode(tuple(headers)), end)
        self.head_sent = True
        if end:
            self.client.streams.pop(self.sid, None)

    def on_response_data(self, data: bytes, end: bool) -> None:
        if self.done:
            return
        self.client.send_data(self.sid, data, False)
        if end:
            self.call = None
            self._finish(Status.UNKNOWN)
            self.client.refuse(
                self.sid,
                Status.UNKNOWN,
                "the replica ended the stream without a status",
                head_sent=True,
            )

    def on_failure(self, reason: str) -> None:
        self.call = None
        if self.done:
            return
        self._finish(Status.UNAVAILABLE)
        assert self.replica is not None
        self.client.refuse(
            self.sid,
            Status.UNAVAILABLE,
            f"replica {self.replica.server_id} of {self.model!r} failed: {reason}",
            head_sent=self.head_sent,
        )

    def expire(self) -> None:
        """A stream lives as long as its client wants; the upstream timeout is per request."""

    def reset(self) -> None:
        if self.done:
            return
        if self.call is not None:
            self.call.cancel()
            self.call = None
        if self.replica is not None:
            self._finish(Status.CANCELLED)
        else:
            self.done = True  # a hold in progress releases the admission when it ends

    def _finish(self, status: int) -> None:
        self.done = True
        door = self.client.door
        assert self.replica is not None
        ok = status not in REPLICA_FAILURES
        elapsed = door.router.end(self.model, self.replica, self, self.start, ok)
        door.metrics.observe(
            self.model,
            self.replica.server_id,
            "grpc",
            _STATUS_NAMES.get(status, "UNKNOWN"),
            elapsed,
        )
        door.router.release(self.model)
