"""RFC 9113 conformance of the h2 door, as a table (h2spec is not available offline).

Each row: the RFC section, the frames a client sends after its preface and SETTINGS, and
what the door must answer: a stream error (RST_STREAM with a code, the connection going
on), a connection error (GOAWAY with a code), or nothing (the frames are legal, or must be
ignored). The rows follow h2spec's `http2` groups for the parts that concern a server of
unary and streaming gRPC calls. No sockets and no Triton: the door runs on a fake transport,
and calls that reach the "replica" go to a recording pool that never answers, so a routed
stream stays half-closed (remote) for as long as a row needs it.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.h2door import ClientConnection, H2Door
from adapters.gateway.h2wire import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PADDED,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    encode,
    frame,
)
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from controlplane.replicas import Replica
from tests.gateway.hostile_h2 import FakeTransport, infer_request, message

SERVICE = b"/inference.GRPCInferenceService/"
REQUEST = (
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", SERVICE + b"ModelInfer"),
    (b":authority", b"gateway"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
)
BODY = message(infer_request())


def headers(sid: int, fields: tuple[tuple[bytes, bytes], ...] = REQUEST, flags: int = 0) -> bytes:
    return frame(HEADERS, END_HEADERS | flags, sid, encode(fields))


def data(sid: int, payload: bytes = BODY, flags: int = END_STREAM) -> bytes:
    return frame(DATA, flags, sid, payload)


def call(sid: int) -> bytes:
    """A whole unary call: routed, then half-closed (remote) while the replica is silent."""
    return headers(sid) + data(sid)


def priority(sid: int, depends_on: int) -> bytes:
    return frame(PRIORITY, 0, sid, struct.pack(">LB", depends_on, 15))


def window_update(sid: int, inc: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">L", inc))


def for_method(method: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The request's fields for another gRPC method (one the door answers itself)."""
    return tuple((n, SERVICE + method) if n == b":path" else (n, v) for n, v in REQUEST)


def with_fields(*change: tuple[bytes, bytes], drop: bytes = b"") -> tuple[tuple[bytes, bytes], ...]:
    return tuple(f for f in REQUEST if f[0] != drop) + change


@dataclass(frozen=True)
class Stream:
    sid: int
    code: int


@dataclass(frozen=True)
class Connection:
    code: int


OK = None  # neither: the frames are legal, or must be ignored
I32 = 0x7FFFFFFF

# (RFC 9113 section, what the client does, frames, what the door must do)
TABLE: list[tuple[str, str, bytes, Stream | Connection | None]] = [
    # --- 5.1 stream states ---------------------------------------------------------------
    ("5.1", "DATA on an idle stream", data(1), Connection(PROTOCOL_ERROR)),
    ("5.1", "WINDOW_UPDATE on an idle stream", window_update(1, 1), Connection(PROTOCOL_ERROR)),
    ("5.1", "RST_STREAM on an idle stream", frame(RST_STREAM, 0, 1, b"\0\0\0\x08"),
     Connection(PROTOCOL_ERROR)),
    ("5.1", "half-closed (remote): DATA after END_STREAM", call(1) + data(1), Stream(1, STREAM_CLOSED)),
    ("5.1", "half-closed (remote): HEADERS after END_STREAM", call(1) + headers(1, flags=END_STREAM),
     Stream(1, STREAM_CLOSED)),
    ("5.1", "half-closed (remote): WINDOW_UPDATE and PRIORITY are allowed",
     call(1) + window_update(1, 1) + priority(1, 0), OK),
    ("5.1", "closed: DATA after the door answered and closed the stream",
     headers(1, for_method(b"Nope"), END_STREAM)
     + data(1), Connection(STREAM_CLOSED)),
    ("5.1", "closed by the door's RST_STREAM: frames in flight are ignored",
     headers(1, flags=0) + data(1, b"\x01" + BODY[1:], 0) + data(1, BODY, END_STREAM), OK),
    ("5.1.1", "a new stream id lower than one already used",
     call(5) + headers(3, flags=END_STREAM), Connection(PROTOCOL_ERROR)),
    ("5.1", "closed: HEADERS after the stream ended both ways",
     headers(1, for_method(b"Nope"), END_STREAM)
     + headers(1, flags=END_STREAM), Connection(STREAM_CLOSED)),
    ("5.1.1", "an even (server-initiated) stream id", headers(2, flags=END_STREAM),
     Connection(PROTOCOL_ERROR)),
    # --- 5.3 / 6.3 priority -----------------------------------------------------------------
    ("5.3.1", "HEADERS that depend on their own stream",
     frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1,
           struct.pack(">LB", 1, 15) + encode(REQUEST)), Stream(1, PROTOCOL_ERROR)),
    ("5.3.1", "PRIORITY that depends on its own (open) stream", call(1) + priority(1, 1),
     Stream(1, PROTOCOL_ERROR)),
    ("5.3.1", "PRIORITY that depends on its own idle stream", priority(1, 1),
     Connection(PROTOCOL_ERROR)),
    ("6.3", "PRIORITY on stream 0", priority(0, 1), Connection(PROTOCOL_ERROR)),
    ("6.3", "PRIORITY of 4 bytes", frame(PRIORITY, 0, 1, b"\0\0\0\0"), Connection(FRAME_SIZE_ERROR)),
    ("6.3", "PRIORITY on an idle stream is allowed (and opens nothing)", priority(3, 1), OK),
    # --- 6.1 / 6.2 DATA and HEADERS ---------------------------------------------------------
    ("6.1", "DATA on stream 0", data(0), Connection(PROTOCOL_ERROR)),
    ("6.1", "DATA whose padding is longer than the frame",
     headers(1) + frame(DATA, PADDED, 1, b"\x05ab"), Connection(PROTOCOL_ERROR)),
    ("6.2", "HEADERS on stream 0", headers(0), Connection(PROTOCOL_ERROR)),
    ("6.2", "HEADERS whose padding is longer than the frame",
     frame(HEADERS, END_HEADERS | PADDED, 1, b"\xff" + encode(REQUEST)),
     Connection(PROTOCOL_ERROR)),
    ("6.10", "CONTINUATION on another stream",
     frame(HEADERS, 0, 1, encode(REQUEST)) + frame(CONTINUATION, END_HEADERS, 3, b""),
     Connection(PROTOCOL_ERROR)),
    ("6.10", "CONTINUATION without HEADERS", frame(CONTINUATION, END_HEADERS, 1, b""),
     Connection(PROTOCOL_ERROR)),
    # --- 6.9 flow control -------------------------------------------------------------------
    ("6.9", "WINDOW_UPDATE of 0 on the connection", window_update(0, 0), Connection(PROTOCOL_ERROR)),
    ("6.9.1", "connection window past 2^31-1", window_update(0, I32), Connection(FLOW_CONTROL_ERROR)),
    ("6.9.1", "stream window past 2^31-1", call(1) + window_update(1, I32),
     Stream(1, FLOW_CONTROL_ERROR)),
    ("6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1",
     frame(SETTINGS, 0, 0, struct.pack(">HL", 4, I32 + 1)), Connection(FLOW_CONTROL_ERROR)),
    # --- 8.1 / 8.2 / 8.3 malformed requests (stream errors) -----------------------------
    ("8.1", "a second HEADERS without END_STREAM (trailers must end the stream)",
     headers(1) + headers(1, ((b"x-trailer", b"1"),)), Stream(1, PROTOCOL_ERROR)),
    ("8.1", "trailers with a pseudo-header",
     headers(1) + headers(1, ((b":path", b"/x"),), END_STREAM), Stream(1, PROTOCOL_ERROR)),
    ("8.1", "trailers that end the request are fine",
     headers(1) + data(1, BODY, 0) + headers(1, ((b"x-trailer", b"1"),), END_STREAM), OK),
    ("8.2", "an uppercase header name", headers(1, with_fields((b"X-Upper", b"1"))),
     Stream(1, PROTOCOL_ERROR)),
    ("8.2.1", "a header value with a CR", headers(1, with_fields((b"x-a", b"1\r2"))),
     Stream(1, PROTOCOL_ERROR)),
    ("8.2.1", "a header value with leading whitespace", headers(1, with_fields((b"x-a", b" 1"))),
     Stream(1, PROTOCOL_ERROR)),
    ("8.2.2", "a connection-specific header", headers(1, with_fields((b"connection", b"x"))),
     Stream(1, PROTOCOL_ERROR)),
    ("8.2.2", "TE other than trailers", headers(1, with_fields((b"te", b"gzip"), drop=b"te")),
     Stream(1, PROTOCOL_ERROR)),
    ("8.3", "a pseudo-header after a regular header",
     headers(1, with_fields((b":authority", b"x"), drop=b":authority")),
     Stream(1, PROTOCOL_ERROR)),
    ("8.3", "an unknown pseudo-header", headers(1, ((b":foo", b"x"), *REQUEST)),
     Stream(1, PROTOCOL_ERROR)),
    ("8.3", "a response pseudo-header in a request",
     headers(1, ((b":status", b"200"), *REQUEST)), Stream(1, PROTOCOL_ERROR)),
    ("8.3", "the same pseudo-header twice", headers(1, ((b":method", b"POST"), *REQUEST)),
     Stream(1, PROTOCOL_ERROR)),
    ("8.3.1", "no :method", headers(1, with_fields(drop=b":method")), Stream(1, PROTOCOL_ERROR)),
    ("8.3.1", "no :scheme", headers(1, with_fields(drop=b":scheme")), Stream(1, PROTOCOL_ERROR)),
    ("8.3.1", "no :path", headers(1, with_fields(drop=b":path")), Stream(1, PROTOCOL_ERROR)),
    ("8.3.1", "an empty :path", headers(1, with_fields((b":path", b""), drop=b":path")),
     Stream(1, PROTOCOL_ERROR)),
    ("8.1.1", "a malformed request does not end the connection",
     headers(1, with_fields(drop=b":method")) + call(3), Stream(1, PROTOCOL_ERROR)),
]  # fmt: skip


class _SilentCall:
    def send_data(self, data: bytes, end: bool) -> None:
        pass

    def backlogged(self) -> bool:
        return False

    def credit(self, n: int) -> None:
        pass

    def cancel(self) -> None:
        pass


class _SilentPool:
    """The replicas: take every call, never answer (the stream stays open our way)."""

    def __init__(self) -> None:
        self.calls = 0

    def start(self, *args: Any, **kwargs: Any) -> _SilentCall:
        self.calls += 1
        return _SilentCall()

    def close(self) -> None:
        pass


def _run(wire: bytes) -> tuple[list[tuple[int, int, int, bytes]], bool, int]:
    """The frames the door wrote for `wire` (after its own preface), whether it closed the
    connection, and how many calls reached the replicas."""
    config = GatewayConfig()
    metrics = GatewayMetrics()
    d = StaticDirectory()
    d.put_replicas("double_fp32", [Replica("double_fp32", "s0", "http://h:1", "h:2")])

    async def go() -> tuple[list[tuple[int, int, int, bytes]], bool, int]:
        door = H2Door(Router(d, config, metrics), metrics, config)
        pool = _SilentPool()
        door.pool = pool  # type: ignore[assignment]
        client, t = ClientConnection(door), FakeTransport()
        client.connection_made(t)  # type: ignore[arg-type]
        client.data_received(PREFACE + frame(SETTINGS, 0, 0))
        t.frames()  # the door's SETTINGS, WINDOW_UPDATE and our SETTINGS' ACK
        client.data_received(wire)
        await asyncio.sleep(0)  # calls go out after the read (`after_read`)
        return t.frames(), t.closed, pool.calls

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("section", "wire", "want"),
    [pytest.param(sec, wire, want, id=f"{sec} {what}") for sec, what, wire, want in TABLE],
)
def test_rfc9113(section: str, wire: bytes, want: Stream | Connection | None) -> None:
    out, closed, _ = _run(wire)
    goaway = [struct.unpack_from(">L", p, 4)[0] for t, _, _, p in out if t == GOAWAY]
    resets = {(sid, struct.unpack(">L", p)[0]) for t, _, sid, p in out if t == RST_STREAM}
    errors = {r for r in resets if r[1] != 0}  # RST_STREAM NO_ERROR: "stop sending", fine
    if isinstance(want, Connection):
        assert goaway == [want.code] and closed, (goaway, resets)
    elif isinstance(want, Stream):
        assert not goaway and not closed, goaway
        assert errors == {(want.sid, want.code)}, resets
    else:
        assert not goaway and not closed and not errors, (goaway, resets)


def test_a_malformed_request_never_reaches_a_replica_and_the_next_one_does() -> None:
    _, _, calls = _run(headers(1, with_fields(drop=b":scheme")) + data(1) + call(3))
    assert calls == 1
