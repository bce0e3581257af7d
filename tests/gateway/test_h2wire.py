"""HTTP/2 framing and flow control of the gRPC door over a fake transport, and its header rules."""

from __future__ import annotations

import struct

import hpack

from adapters.gateway import h2wire
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.h2door import H2Door
from adapters.gateway.h2wire import DATA, END_STREAM, HEADERS, SETTINGS, WINDOW_UPDATE, Peer
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from controlplane.replicas import Replica
from tests.gateway.hostile_h2 import FakeTransport


class _Recorder(Peer):
    expect_preface = True

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, int, object, bool]] = []

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.events.append(("headers", sid, headers, end))

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        self.events.append(("data", sid, data, end))
        self.credit(sid, len(data))  # consumed at once

    def on_reset(self, sid: int, code: int) -> None:
        self.events.append(("reset", sid, code, True))


def _peer() -> tuple[_Recorder, FakeTransport]:
    p, t = _Recorder(), FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    t.frames()  # our SETTINGS and connection WINDOW_UPDATE
    p.data_received(h2wire.PREFACE + h2wire.frame(SETTINGS, 0, 0))
    t.frames()  # SETTINGS ACK
    return p, t


def test_encoded_blocks_decode_back_and_are_stateless() -> None:
    headers = ((b":status", b"200"), (b"grpc-message", b"x" * 300))
    block = h2wire.encode(headers)
    d = hpack.Decoder()
    assert [tuple(h) for h in d.decode(block, raw=True)] == list(headers)
    assert d.header_table.dynamic_entries == type(d.header_table.dynamic_entries)()


def test_frames_split_across_reads_and_headers_decoded() -> None:
    p, _ = _peer()
    block = hpack.Encoder().encode([(":path", "/inference.GRPCInferenceService/ModelInfer")])
    wire = h2wire.frame(HEADERS, 0x4, 1, block) + h2wire.frame(DATA, END_STREAM, 1, b"abc")
    for i in range(len(wire)):  # one byte at a time
        p.data_received(wire[i : i + 1])
    assert p.events == [
        ("headers", 1, [(b":path", b"/inference.GRPCInferenceService/ModelInfer")], False),
        ("data", 1, b"abc", True),
    ]


def test_data_waits_for_the_peers_window_then_flows_in_order() -> None:
    p, t = _peer()
    p.open_stream(1)
    body = bytes(range(256)) * 1024  # 256 KiB against a 64 KiB default window
    p.send_message(1, b"H", body, b"T", True)
    sent = t.frames()
    assert sent[0][0] == HEADERS
    datas = [f for f in sent if f[0] == DATA]
    assert sum(len(f[3]) for f in datas) == 65535
    assert all(len(f[3]) <= 16384 for f in datas)
    # stream and connection windows both open; the trailers come only after all the data
    for _ in range(4):
        p.data_received(
            h2wire.frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 65536))
            + h2wire.frame(WINDOW_UPDATE, 0, 1, struct.pack(">L", 65536))
        )
    rest = t.frames()
    assert b"".join(f[3] for f in datas + rest if f[0] == DATA) == body
    assert rest[-1][0] == HEADERS and rest[-1][1] & END_STREAM and rest[-1][3] == b"T"


def test_a_larger_initial_window_in_settings_unblocks_streams() -> None:
    p, t = _peer()
    p.open_stream(1)
    p.send_data(1, b"x" * 70000, True)
    t.frames()
    p.data_received(h2wire.frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 1 << 20)))
    assert t.frames() == []  # the stream's own window is still shut
    p.data_received(h2wire.frame(SETTINGS, 0, 0, struct.pack(">HL", 0x4, 1 << 20)))
    got = t.frames()
    assert sum(len(f[3]) for f in got if f[0] == DATA) == 70000 - 65535
    assert [f for f in got if f[0] == DATA][-1][1] & END_STREAM


def test_received_data_is_credited_back() -> None:
    p, t = _peer()
    p.data_received(h2wire.frame(HEADERS, 0x4, 1, hpack.Encoder().encode([(":path", "/")])))
    chunk = b"y" * (1 << 20)
    for _ in range(9):  # 9 MiB on one stream: past half its window
        p.data_received(h2wire.frame(DATA, 0, 1, chunk))
    updates = [f for f in t.frames() if f[0] == WINDOW_UPDATE]
    # The stream is credited once half its 16 MiB window is owed (after the 8th MiB); the
    # connection's 64 MiB window is not yet half owed, so it gets nothing.
    half = p.limits.stream_window >> 1
    assert half == 8 << 20
    assert updates == [(WINDOW_UPDATE, 0, 1, struct.pack(">L", half))]


def test_garbage_instead_of_a_preface_closes_the_connection() -> None:
    p, t = _Recorder(), FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    p.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert t.closed


def test_client_admin_key_is_dropped_and_the_replicas_added_for_model_config() -> None:
    config = GatewayConfig()
    metrics = GatewayMetrics()
    door = H2Door(Router(StaticDirectory(), config, metrics), metrics, config)
    replica = Replica("m", "s0", "http://h:1", "h:2", admin_key="secret")
    sent = [(b":path", b"/x"), (b"triton-grpc-protocol-admin-key", b"guess")]
    for name, expected in (("ModelInfer", []), ("ModelConfig", [b"secret"])):
        block = door.forward_headers(sent, name, replica)
        got = [tuple(h) for h in hpack.Decoder().decode(block, raw=True)]
        assert got[0] == (b":path", b"/x")
        assert [v for n, v in got if n == b"triton-grpc-protocol-admin-key"] == expected


class _Hoarder(_Recorder):
    """Consumes nothing: what it is sent stays uncredited."""

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        self.events.append(("data", sid, data, end))

    def on_drained(self, sid: int) -> None:
        self.events.append(("drained", sid, b"", True))


def test_data_is_credited_only_when_consumed_and_never_past_the_window() -> None:
    p, t = _Hoarder(), FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    p.data_received(h2wire.PREFACE + h2wire.frame(SETTINGS, 0, 0))
    p.data_received(h2wire.frame(HEADERS, 0x4, 1, hpack.Encoder().encode([(":path", "/")])))
    t.frames()
    chunk = b"y" * (1 << 20)
    for _ in range(16):  # exactly the 16 MiB stream window
        p.data_received(h2wire.frame(DATA, 0, 1, chunk))
    assert not [f for f in t.frames() if f[0] == WINDOW_UPDATE]  # nothing consumed
    p.data_received(h2wire.frame(DATA, 0, 1, b"z"))
    assert t.closed  # one byte past the window
    goaway = next(f for f in t.frames() if f[0] == h2wire.GOAWAY)
    assert struct.unpack(">LL", goaway[3][:8])[1] == h2wire.FLOW_CONTROL_ERROR


def test_paused_writes_queue_and_drain_on_resume() -> None:
    p, t = _Hoarder(), FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    p.data_received(h2wire.PREFACE + h2wire.frame(SETTINGS, 0, 0))
    p.data_received(h2wire.frame(HEADERS, 0x4, 1, hpack.Encoder().encode([(":path", "/")])))
    p.open_stream(1)
    t.frames()
    p.pause_writing()
    p.send_message(1, b"H", b"x" * 100, b"T", True)
    assert t.frames() == [] and p.backlogged(1)
    p.resume_writing()
    got = t.frames()
    assert [f[0] for f in got] == [HEADERS, DATA, HEADERS]
    assert ("drained", 1, b"", True) in p.events


def test_unanswered_pings_while_paused_close_the_connection() -> None:
    p, t = _Hoarder(), FakeTransport()
    p.connection_made(t)  # type: ignore[arg-type]
    p.data_received(h2wire.PREFACE + h2wire.frame(SETTINGS, 0, 0))
    p.pause_writing()
    ping = h2wire.frame(h2wire.PING, 0, 0, b"12345678")
    for _ in range(p.limits.max_outbound_control_frames + 1):
        if t.closed:
            break
        p.data_received(ping)
    assert t.closed
