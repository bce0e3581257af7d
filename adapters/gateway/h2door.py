"""The KServe v2 gRPC front door at the HTTP/2 frame level (no grpcio on the path).

A client connection (h2c, prior knowledge, as gRPC clients speak it) is read frame by frame
(`h2wire`). Each stream's `:path` picks its call (`h2calls`):
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

Hostile clients: every request message is checked before anything is forwarded (its
length prefix against `max_body_bytes` as soon as it arrives, its protobuf top level once
complete, one message per unary call); each stream's and each connection's buffered bytes are
bounded; client data is credited back only once it is buffered within those bounds or
written to the replica, and a replica's relayed data only once written to the client, so a
peer that stops reading stalls only itself. Streams idle for `h2_stream_idle_timeout_s` are
ended, and so are connections whose queued replies make no progress for as long.
"""

from __future__ import annotations

import asyncio
import logging
import time

from adapters.gateway.config import GatewayConfig
from adapters.gateway.grpcproto import (
    CLOSED,
    ROUTED,
    SERVER_METADATA,
    SERVICE,
    STREAM,
    TRUE,
    Status,
    admin_metadata,
)
from adapters.gateway.h2calls import (
    HEAD,
    OK_TRAILERS,
    Local,
    Relay,
    Unary,
    status_headers,
    trailers_only,
)
from adapters.gateway.h2rules import request_error
from adapters.gateway.h2upstream import H2UpstreamPool
from adapters.gateway.h2wire import (
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    REFUSED_STREAM,
    H2Limits,
    Peer,
    encode,
)
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from adapters.gateway.tenancy import only_authorization, token_hash
from controlplane.replicas import Replica

log = logging.getLogger(__name__)

_SERVICE = SERVICE.encode()


class H2Door:
    """The gRPC door: a listening socket, its client connections, one upstream pool."""

    def __init__(self, router: Router, metrics: GatewayMetrics, config: GatewayConfig) -> None:
        self.router = router
        self.metrics = metrics
        self.config = config
        self.pool = H2UpstreamPool(config.connect_timeout_s)
        self.server: asyncio.Server | None = None
        self.clients: set[ClientConnection] = set()
        self.limits = limits_of(config)
        self._admin_name = config.admin_header_grpc.lower().encode()
        self._local = {
            "ServerLive": TRUE,
            "ServerReady": TRUE,
            "ServerMetadata": SERVER_METADATA,
        }

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ClientConnection(self), host, port, reuse_address=True, backlog=1024
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

    def reap(self, now: float) -> None:
        """Close slow and idle client connections, end idle streams (the gateway's reaper)."""
        header_t = self.config.header_timeout_s
        idle_t = self.config.idle_timeout_s
        stream_t = self.config.h2_stream_idle_timeout_s
        for c in list(self.clients):
            if c.closed:
                continue
            if c.seen:
                c.seen = False
                c.seen_at = now
            if c.blocked or c.paused:  # replies queued: they must keep going out
                if c.progress or not c.stall_from:
                    c.progress = False
                    c.stall_from = now
                elif now - c.stall_from >= stream_t:
                    c.time_out("write_stall", "queued replies not read")
                    continue
            else:
                c.stall_from = 0.0
            if not c.ready or c.head_incomplete():
                if not c.head_from:
                    c.head_from = now
                elif now - c.head_from >= header_t:
                    c.time_out("header_timeout", "preface, SETTINGS or HEADERS not complete")
                continue
            c.head_from = 0.0
            if c.streams:  # calls in flight: no client timeout, but each stream's own
                c.seen_at = now
                for h in list(c.streams.values()):
                    if h.active:
                        h.active = False
                        h.since = now
                    elif now - h.since >= stream_t:
                        h.time_out(stream_t)
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


def limits_of(config: GatewayConfig) -> H2Limits:
    """The HTTP/2 limits of client connections, from the `h2_*` settings."""
    return H2Limits(
        max_concurrent_streams=config.h2_max_concurrent_streams,
        stream_window=config.h2_initial_stream_window_bytes,
        connection_window=config.h2_initial_connection_window_bytes,
        max_frame=config.h2_max_frame_bytes,
        max_header_list=config.h2_max_header_list_bytes,
        max_continuations=config.h2_max_continuation_frames,
        max_resets_per_s=config.h2_max_resets_per_s,
        max_control_frames_per_s=config.h2_max_control_frames_per_s,
        max_empty_frames=config.h2_max_consecutive_empty_frames,
        max_outbound_control_frames=config.h2_max_outbound_control_frames,
        hpack_cache_entries=config.h2_hpack_cache_entries,
        hpack_cache_bytes=config.h2_hpack_cache_bytes,
    )


class _RateLimitedLog:
    """At most one line a second: a flood of bad connections must not become a flood of log
    lines (each closed connection is counted in `closed_connections` anyway); the next line
    says how many were left out."""

    def __init__(self, logger: logging.Logger, every_s: float = 1.0) -> None:
        self.logger, self.every_s = logger, every_s
        self.next_at = 0.0
        self.skipped = 0

    def info(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.skipped += 1
            return
        if self.skipped:
            fmt += " (and %d more in the last second or so, not logged)"
            args = (*args, self.skipped)
        self.logger.info(fmt, *args)
        self.next_at, self.skipped = now + self.every_s, 0


_CLOSE_LOG = _RateLimitedLog(log)


class ClientConnection(Peer):
    """One client connection; each stream has a handler (`Unary`, `Relay`, `Local`)."""

    expect_preface = True

    def __init__(self, door: H2Door) -> None:
        super().__init__(door.limits)
        self.door = door
        self.streams: dict[int, Unary | Relay | Local] = {}
        self.last_sid = 0
        # slow/idle client detection (`H2Door.reap`)
        self.ready = False  # the client's preface and first SETTINGS arrived
        self.seen_at = 0.0
        self.head_from = 0.0
        self.stall_from = 0.0
        self.buffer_cap = door.config.h2_max_connection_buffer_bytes
        self.decoder.check = request_error  # malformed requests are reset before on_headers
        # The last `authorization` value and its hash: a client sends the same token on
        # every call of a connection, so it is hashed once per connection.
        self._auth: tuple[bytes | str | None, str | None] = (None, None)

    def token_of(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        value = only_authorization(v for n, v in headers if n == b"authorization")
        if value is None:
            return None
        if self._auth[0] != value:
            self._auth = (value, token_hash(value))
        return self._auth[1]

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

    def fail_connection(self, code: int, message: str) -> None:
        if not self.closed and code != NO_ERROR:
            reason = "flood" if code == ENHANCE_YOUR_CALM else "protocol_error"
            self.door.metrics.closed_connections["grpc", reason] += 1
            _CLOSE_LOG.info("gRPC client connection closed (HTTP/2 error %d): %s", code, message)
        super().fail_connection(code, message)

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
        if len(self.windows) >= self.limits.max_concurrent_streams or (
            self.paused and self.unsent() * 2 > self.buffer_cap
        ):
            # too many streams, or the client is not reading its replies: it may retry
            # this one later (gRPC clients retry REFUSED_STREAM by themselves)
            self.count_reset()
            self.reset_stream(sid, REFUSED_STREAM)
            return
        self.open_stream(sid)
        path = b""
        for n, v in headers:
            if n == b":path":
                path = v
                break
        name = path[len(_SERVICE) :].decode("latin-1") if path.startswith(_SERVICE) else ""
        door = self.door
        if name in ROUTED:
            h = Unary(self, sid, name, headers)
        elif name == STREAM:
            h = Relay(self, sid, headers)
        elif name in door._local:
            h = Local(self, sid, None, door._local[name])
        elif name in CLOSED:
            h = Local(self, sid, (Status.PERMISSION_DENIED, f"{name}: {CLOSED[name]}"))
        else:
            method = path.decode("latin-1", errors="replace")
            h = Local(self, sid, (Status.UNIMPLEMENTED, f"method {method} is not implemented"))
        self.streams[sid] = h
        if end:
            h.data(b"", True)

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        h = self.streams.get(sid)
        n = len(data) if h is None else h.data(data, end)
        if n:
            self.credit(sid, n)

    def on_reset(self, sid: int, code: int) -> None:
        h = self.streams.pop(sid, None)
        if h is not None:
            h.reset()

    def on_drained(self, sid: int) -> None:
        h = self.streams.get(sid)
        if h is not None:
            h.client_drained()

    def buffered(self) -> int:
        """Request bytes this connection's streams hold in the gateway."""
        return sum(h.size for h in self.streams.values())

    def unsent(self) -> int:
        """Reply bytes queued for this client that its socket has not taken yet: in the
        streams' queues and the transport's buffer (none counted while neither is backed
        up: the transport then holds less than its high-water mark)."""
        if not self.paused and not self.blocked:
            return 0
        n = self.transport.get_write_buffer_size() if self.transport is not None else 0
        for q in self.blocked.values():
            for _, payload, _ in q:
                n += len(payload)
        return n

    def reply_fits(self, size: int) -> bool:
        """Whether a reply of `size` bytes may be queued: a client that does not read holds
        at most `h2_max_connection_buffer_bytes` of unsent replies (plus the one reply that
        found the connection not backed up)."""
        return (not self.paused and not self.blocked) or self.unsent() + size <= self.buffer_cap

    # --- replies ---------------------------------------------------------------------
    def refuse(self, sid: int, code: Status, message: str, *, head_sent: bool = False) -> None:
        """End the stream with an error status (trailers-only unless headers went already);
        a client still sending is told to stop (RST_STREAM NO_ERROR after the status)."""
        self.streams.pop(sid, None)
        if head_sent:
            self.send_headers(sid, encode(status_headers(code, message)), True)
        else:
            self.send_headers(sid, trailers_only(code, message), True)
        self.stop_reading(sid)

    def reply(self, sid: int, message: bytes) -> None:
        self.streams.pop(sid, None)
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        self.send_message(sid, HEAD, data, OK_TRAILERS, True)
