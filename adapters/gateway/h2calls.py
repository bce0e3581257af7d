"""The calls of the h2 gRPC door: what one client stream is, from its HEADERS to its status.

`Local` is answered by the gateway itself, `Unary` is one routed model call (read whole,
checked, retried once), `Relay` is a `ModelStreamInfer` pinned to one replica and relayed
message by message. Each takes the client's data (`data` returns what may be credited back
now), hears from its replica call (`h2upstream.Listener`), and can be timed out by the door's
timeout watch (`time_out`). The reply helpers (status headers, trailers-only) live here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.gateway.attempt import DONE, NEW, Attempt
from adapters.gateway.grpcproto import (
    STREAM,
    Malformed,
    MessageReader,
    Refusal,
    Status,
    admit,
    cold,
    field1_string,
    replica_outcome,
)
from adapters.gateway.h2upstream import Call
from adapters.gateway.h2wire import encode
from controlplane.replicas import Replica

if TYPE_CHECKING:
    from adapters.gateway.h2door import ClientConnection

HEAD = encode(((b":status", b"200"), (b"content-type", b"application/grpc")))
OK_TRAILERS = encode(((b"grpc-status", b"0"),))
STATUS_NAMES = {int(s): s.name for s in Status}


def pct(message: str) -> bytes:
    """grpc-message's percent-encoding (printable ASCII except '%' stays as it is)."""
    raw = message.encode("utf-8")
    if all(0x20 <= c <= 0x7E and c != 0x25 for c in raw):
        return raw
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in raw)


def status_headers(code: Status, message: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"grpc-status", b"%d" % code), (b"grpc-message", pct(message)))


def trailers_only(code: Status, message: str) -> bytes:
    return encode(
        (
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            *status_headers(code, message),
        )
    )


def grpc_status(headers: Sequence[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                break
    return Status.UNKNOWN


class Local:
    """A call the gateway answers itself, once the client has sent all of it."""

    __slots__ = ("active", "client", "error", "reply", "sid", "since")
    size = 0

    def __init__(
        self,
        client: ClientConnection,
        sid: int,
        error: tuple[Status, str] | None,
        reply: bytes = b"",
    ) -> None:
        self.client, self.sid, self.error, self.reply = client, sid, error, reply
        self.active, self.since = True, 0.0

    def data(self, chunk: bytes, end: bool) -> int:
        """Take request data; return how much to credit to the client now (all of it)."""
        self.active = True
        if end:
            if self.error is not None:
                self.client.refuse(self.sid, *self.error)
            else:
                self.client.reply(self.sid, self.reply)
        return len(chunk)

    def reset(self) -> None:
        pass

    def client_drained(self) -> None:
        pass

    def time_out(self, after_s: float) -> None:
        self.client.refuse(
            self.sid,
            Status.DEADLINE_EXCEEDED,
            f"the request did not end within {after_s:g}s (h2_stream_idle_timeout_s)",
        )


class Unary(Attempt):
    """One unary model call: read the request, route it, relay the reply (retry once)."""

    __slots__ = (
        "active",
        "body",
        "call",
        "client",
        "declared",
        "headers",
        "name",
        "parts",
        "replicas",
        "resp_data",
        "resp_head",
        "sid",
        "since",
        "size",
    )
    protocol = "grpc"
    cancel_code = "CANCELLED"

    def __init__(
        self, client: ClientConnection, sid: int, name: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(client.door.router, "")
        self.active, self.since = True, 0.0
        self.declared = -1  # the message's length prefix, once 5 bytes came
        self.client = client
        self.sid = sid
        self.name = name
        self.headers = headers
        self.parts: list[bytes] = []
        self.size = 0
        self.body = b""
        self.replicas: Sequence[Replica] = ()
        self.call: Call | None = None
        self.resp_head: list[tuple[bytes, bytes]] | None = None
        self.resp_data: list[bytes] = []

    # --- the request ---------------------------------------------------------------------
    def data(self, chunk: bytes, end: bool) -> int:
        """Buffer request data (bounded: credited to the client at once); check it early."""
        self.active = True
        if self.phase is not NEW:
            return len(chunk)
        if chunk:
            self.parts.append(chunk)
            self.size += len(chunk)
            if self.size >= 5 and not self._check():
                return len(chunk)
        if end:
            self._begin()
        return len(chunk)

    def _check(self) -> bool:
        """Refuse at once what can never be a good request; False when refused."""
        client = self.client
        limit = client.door.config.max_body_bytes
        if self.declared < 0:
            head = b"".join(self.parts)[:5] if len(self.parts[0]) < 5 else self.parts[0][:5]
            self.declared = declared = int.from_bytes(head[1:5], "big")
            if head[0] != 0:
                reason = (
                    "compressed messages are not supported"
                    if head[0] == 1
                    else f"bad message flag {head[0]}"
                )
                return self._refuse_early(Status.INVALID_ARGUMENT, f"{self.name}: {reason}")
            if declared > limit:
                # Refused before the message is read into memory; the client stops sending.
                return self._refuse_early(
                    Status.RESOURCE_EXHAUSTED,
                    f"{self.name}: the request message has {declared} bytes, over the "
                    f"gateway's limit of {limit} (max_body_bytes)",
                )
        if self.size > 5 + self.declared:
            return self._refuse_early(
                Status.INVALID_ARGUMENT,
                f"{self.name}: expected exactly one length-prefixed message, a second began",
            )
        cap = client.buffer_cap
        if len(client.streams) > 1 and client.buffered() > cap:
            return self._refuse_early(
                Status.RESOURCE_EXHAUSTED,
                f"{self.name}: this connection's requests hold over {cap} bytes in the "
                "gateway (h2_max_connection_buffer_bytes); send fewer at once",
            )
        return True

    def _refuse_early(self, code: Status, message: str) -> bool:
        self.parts = []
        self.size = 0
        self._local(code, message)
        return False

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
            self._local(Status.INVALID_ARGUMENT, f"{self.name}: {reason}")
            return
        try:
            self.model = model = field1_string(body[5:])
        except Malformed as exc:
            self.size = 0
            self._local(Status.INVALID_ARGUMENT, f"{self.name}: malformed request: {exc}")
            return
        self.body = body
        try:
            token = self.client.token_of(self.headers) if door.router.gate.enabled else None
            admit(self, door.metrics, token)
        except Refusal as r:
            self._local(r.code, r.details)
            return
        replicas = door.router.directory.replicas(model)
        if replicas:
            self.replicas = replicas
            self.client.after_read(self._send_first)
        else:
            asyncio.get_running_loop().create_task(self._send_when_warm())

    def _send_first(self) -> None:
        if not self.done:  # not reset in the read that brought it
            self.send(self.replicas)

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
        self.send(replicas)

    def send(self, replicas: Sequence[Replica], exclude: str | None = None) -> Replica:
        replica = super().send(replicas, exclude)
        self.resp_head = None
        self.resp_data = []
        door = self.client.door
        block = door.forward_headers(self.headers, self.name, replica)
        self.call = door.pool.start(replica.grpc_url, self, block, self.body, True)
        return replica

    # --- the reply (h2upstream.Listener) -------------------------------------------------
    def on_drained(self) -> None:
        pass

    def client_drained(self) -> None:
        pass

    def time_out(self, after_s: float) -> None:
        """No frame either way for `h2_stream_idle_timeout_s`."""
        if self.call is not None:
            self.expire()
        elif not self.done:
            self.size = 0
            self._local(
                Status.DEADLINE_EXCEEDED,
                f"{self.name}: the request did not end within {after_s:g}s "
                "(h2_stream_idle_timeout_s)",
            )

    def on_response_headers(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.active = True
        if self.resp_head is None:
            self.resp_head = headers
            if end:  # trailers-only: the status came without a message
                self._complete(headers, None)
        elif end:
            self._complete(self.resp_head, headers)

    def on_response_data(self, data: bytes, end: bool) -> None:
        self.active = True
        self.resp_data.append(data)
        if end:  # DATA that ends the stream: no trailers, so no status
            self._complete(self.resp_head or [], [(b"grpc-status", b"%d" % Status.UNKNOWN)])

    def _complete(
        self, head: list[tuple[bytes, bytes]], trailers: list[tuple[bytes, bytes]] | None
    ) -> None:
        self.call = None
        status = grpc_status(head if trailers is None else trailers)
        ok, retryable = replica_outcome(
            status, self.headers, head if trailers is None else trailers
        )
        if not self.outcome(ok):
            return
        if retryable and self.retry("unavailable", self.replicas):
            return
        client = self.client
        data = b""
        if trailers is not None:
            data = self.resp_data[0] if len(self.resp_data) == 1 else b"".join(self.resp_data)
            self.resp_data = []
            if not client.reply_fits(len(data)):
                cap = client.buffer_cap
                self._answer(
                    Status.RESOURCE_EXHAUSTED,
                    f"{self.name}: this connection's unread replies would exceed {cap} bytes "
                    "(h2_max_connection_buffer_bytes); read replies before sending more",
                )
                return
        self.finish(STATUS_NAMES.get(status, "UNKNOWN"))
        if client.streams.pop(self.sid, None) is None:
            return  # the client has gone or cancelled
        if trailers is None:
            client.send_headers(self.sid, encode(tuple(head)), True)
        else:
            client.send_message(self.sid, encode(tuple(head)), data, encode(tuple(trailers)), True)

    def on_failure(self, reason: str) -> None:
        self.call = None
        if not self.outcome(False):
            return
        if self.retry("connection_lost", self.replicas):
            return
        assert self.replica is not None
        self._answer(
            Status.UNAVAILABLE,
            f"replica {self.replica.server_id} of {self.model!r} failed: {reason}",
        )

    def expire(self) -> None:
        """The router's timeout watch: no reply within `upstream_timeout_s`."""
        if self.done or self.call is None:
            return
        self.call.cancel()
        self.call = None
        assert self.replica is not None
        self._answer(
            Status.DEADLINE_EXCEEDED,
            f"replica {self.replica.server_id} did not answer {self.model!r} within "
            f"{self.router.config.upstream_timeout_s:.0f}s",
            ok=False,
        )

    def reset(self) -> None:
        """The client cancelled the call or went away."""
        if self.call is not None:
            self.call.cancel()
            self.call = None
        self.cancel()

    def _answer(self, code: Status, message: str, ok: bool | None = None) -> None:
        """Finish with `code` (after a replica was tried) and tell the client."""
        if self.finish(code.name, ok) and self.sid in self.client.streams:
            self.client.refuse(self.sid, code, message)

    def _local(self, code: Status, message: str) -> None:
        """Finish without a replica (refused, malformed, cold) and tell the client."""
        self._answer(code, message)


class Relay(Attempt):
    """A `ModelStreamInfer` call: pinned to one replica at its first message, then relayed.

    Request messages are split and checked (`MessageReader`) before they go on. Backpressure
    both ways: client data is credited back while the replica takes it (else once its queue
    drains), the replica's data once the client's queue for the stream is empty. One
    upstream attempt, never retried: its lifecycle ends with the stream's status.
    """

    __slots__ = (
        "active",
        "call",
        "client",
        "client_ended",
        "head_sent",
        "headers",
        "owed_client",
        "owed_replica",
        "pending",
        "reader",
        "sid",
        "since",
        "state",
    )
    protocol = "grpc"
    cancel_code = "CANCELLED"
    max_tries = 1

    def __init__(
        self, client: ClientConnection, sid: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(client.door.router, "")
        self.client = client
        self.sid = sid
        self.headers = headers
        self.reader = MessageReader(client.door.config.max_body_bytes)
        self.pending = bytearray()  # checked messages before the replica is known
        self.owed_client = 0  # client bytes taken but not credited (the replica is behind)
        self.owed_replica = 0  # replica bytes relayed but not credited (the client is behind)
        self.client_ended = False
        self.head_sent = False
        self.active, self.since = True, 0.0
        self.call: Call | None = None
        self.state = "first"  # → "holding" → "open"

    @property
    def size(self) -> int:
        return self.reader.pending + len(self.pending)

    def data(self, chunk: bytes, end: bool) -> int:
        """Take request data; return how much to credit to the client now."""
        self.active = True
        if self.done:
            return len(chunk)
        self.client_ended = self.client_ended or end
        try:
            msgs = self.reader.feed(chunk) if chunk else []
            if end and self.reader.pending:
                raise Refusal(Status.INVALID_ARGUMENT, "truncated message")
        except Refusal as r:
            self._fail(r.code, f"ModelStreamInfer: {r.details}")
            return len(chunk)
        call = self.call
        if call is not None:
            if msgs or end:
                call.send_data(msgs[0] if len(msgs) == 1 else b"".join(msgs), end)
            if call.backlogged():
                self.owed_client += len(chunk)
                return 0
            return len(chunk)
        for m in msgs:
            self.pending += m
        if self.state != "first":  # routed, not open yet: take no more than one window
            self.owed_client += len(chunk)
            return 0
        if msgs:
            self._route(msgs[0][5:])
        elif end:  # no request at all: no reply either
            self.phase = DONE  # never admitted: nothing held, nothing counted
            self.client.streams.pop(self.sid, None)
            self.client.send_message(self.sid, HEAD, b"", OK_TRAILERS, True)
        return len(chunk)

    def _route(self, first: bytes) -> None:
        door = self.client.door
        try:
            self.model = model = field1_string(first)
            token = self.client.token_of(self.headers) if door.router.gate.enabled else None
            admit(self, door.metrics, token)
        except Refusal as r:
            self._fail(r.code, r.details)
            return
        replicas = door.router.directory.replicas(model)
        self.state = "holding"
        if replicas:
            self.client.after_read(lambda: self._open_if_live(replicas))
        else:
            asyncio.get_running_loop().create_task(self._open_when_warm())

    def _open_if_live(self, replicas: Sequence[Replica]) -> None:
        if not self.done:  # not reset in the read that brought it
            self._open(replicas)

    async def _open_when_warm(self) -> None:
        door = self.client.door
        replicas = await door.router.hold(self.model)
        if self.done:  # the client went away while it was held
            return
        if not replicas:
            r = cold(self.model, door.config)
            self._fail(r.code, r.details)
            return
        self._open(replicas)

    def _open(self, replicas: Sequence[Replica]) -> None:
        # One stream stays on one replica: sequences and decoupled models need that.
        door = self.client.door
        self.state = "open"
        replica = self.send(replicas)
        block = door.forward_headers(self.headers, STREAM, replica)
        data, self.pending = bytes(self.pending), bytearray()
        self.call = door.pool.start(
            replica.grpc_url, self, block, data, self.client_ended, relay=True
        )

    def _cancel_call(self) -> None:
        if self.call is not None:
            self.call.cancel()
            self.call = None

    def _fail(self, code: Status, message: str) -> None:
        """End the stream here with `code` (a bad message, a refusal, an idle stream)."""
        self._cancel_call()
        if not self.finish(code.name):
            return
        client = self.client
        if self.sid in client.streams:
            client.refuse(self.sid, code, message, head_sent=self.head_sent)
        owed, self.owed_client = self.owed_client, 0
        client.credit(self.sid, owed)  # the stream is closed: the connection's share
        self.reader = MessageReader(0)
        self.pending = bytearray()

    def time_out(self, after_s: float) -> None:
        self._fail(
            Status.DEADLINE_EXCEEDED,
            f"ModelStreamInfer: no message either way for {after_s:g}s (h2_stream_idle_timeout_s)",
        )

    def on_drained(self) -> None:
        """The replica took the request data queued for it: credit the client for it."""
        owed, self.owed_client = self.owed_client, 0
        if owed:
            self.client.credit(self.sid, owed)

    def client_drained(self) -> None:
        """The client took the reply data queued for it: credit the replica for it."""
        owed, self.owed_replica = self.owed_replica, 0
        if owed and self.call is not None:
            self.call.credit(owed)

    # --- h2upstream.Listener -----------------------------------------------------------------
    def on_response_headers(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.active = True
        if self.done:
            return
        if end:
            self.call = None
            status = grpc_status(headers)
            ok = replica_outcome(status, self.headers, headers)[0]
            self.finish(STATUS_NAMES.get(status, "UNKNOWN"), ok)
        if self.sid in self.client.streams or end:
            self.client.send_headers(self.sid, encode(tuple(headers)), end)
        self.head_sent = True
        if end:
            self.client.streams.pop(self.sid, None)

    def on_response_data(self, data: bytes, end: bool) -> None:
        self.active = True
        if self.done:
            return
        client = self.client
        client.send_data(self.sid, data, False)
        if client.backlogged(self.sid):
            self.owed_replica += len(data)
        elif self.call is not None and not end:
            self.call.credit(len(data))
        if end:
            self.call = None
            self.finish("UNKNOWN", True)
            self.client.refuse(
                self.sid,
                Status.UNKNOWN,
                "the replica ended the stream without a status",
                head_sent=True,
            )

    def on_failure(self, reason: str) -> None:
        self.call = None
        if not self.finish("UNAVAILABLE", False):
            return
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
        owed, self.owed_client = self.owed_client, 0
        self.client.credit(self.sid, owed)  # the stream is gone: the connection's share
        self._cancel_call()
        self.cancel()
