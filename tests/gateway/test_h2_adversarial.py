"""Hostile clients against the h2 gRPC door: each attack class, and fuzzing of what parses input.

Against a real gateway in front of real Triton servers (`triton` tests): protobuf bombs and
messages over the limit, invalid SETTINGS, concurrent streams, rapid reset, CONTINUATION,
PING and SETTINGS floods, oversize frames, flow control credited as consumed, streams that
never finish, clients that never read, the HPACK cache and the per-connection buffer; while
an attack runs a well-behaved client (`Probe`) must keep being answered.

Property-based (hypothesis, no servers): the protobuf parser and the message splitter with
random bytes and split points, and the door's framer fed random frame sequences in random
splits over a fake transport and a recording upstream pool (the only fakes: they make every
forwarded byte visible). Invariants: no exception escapes a connection (no INTERNAL_ERROR),
buffers stay bounded, nothing unvalidated is forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hpack import NeverIndexedHeaderTuple
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.demofleet import DemoModel, load_everywhere
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.grpcproto import Malformed, MessageReader, Refusal, field1_string
from adapters.gateway.h2door import ClientConnection, H2Door
from adapters.gateway.h2wire import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    encode,
    frame,
)
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from controlplane.replicas import ModelRouting, Replica
from tests.gateway import hostile_h2 as hostile
from tests.gateway.hostile_h2 import FakeTransport, Probe, RawH2, infer_request, message
from tests.gateway.hostile_h2 import settings as h2settings
from tests.gateway.support import Env
from tests.support import eventually

INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED = 3, 4, 8
MAX_BODY = 1 << 20
LIMITS: dict[str, Any] = {
    "max_body_bytes": MAX_BODY,
    "header_timeout_s": 2.0,  # the reaper runs every 0.2 s
    "h2_max_concurrent_streams": 16,
    "h2_initial_stream_window_bytes": 1 << 20,
    "h2_initial_connection_window_bytes": 4 << 20,
    "h2_max_resets_per_s": 100,
    "h2_max_control_frames_per_s": 200,
    "h2_stream_idle_timeout_s": 1.0,
    "h2_max_connection_buffer_bytes": 1 << 20,
}
# A well-behaved call answers within this while an attack runs. The bugs this guards against
# stalled every client for seconds (6 s for the varint bomb, 3 s for the PING flood); the
# bound sits far above scheduler noise on a loaded 2-core CI box. Typical latencies are
# measured by benchmarks/gateway_hostile_h2.py, not here.
WORST_PROBE_S = 1.0


# --- against a real gateway in front of real Triton ---------------------------------------
@pytest.fixture
def gw(env: Env) -> Iterator[Gateway]:
    g = _start(env, env.directory)
    yield g
    env.loop.run(g.stop())


def _start(env: Env, directory: StaticDirectory, **cfg: Any) -> Gateway:
    config = GatewayConfig(http_port=0, grpc_port=0, grpc_door="h2", **{**LIMITS, **cfg})
    g = Gateway(config, directory)
    env.loop.run(g.start())
    return g


def _url(g: Gateway) -> str:
    assert g.grpc_url is not None
    return g.grpc_url


@asynccontextmanager
async def _raw(g: Gateway, first_settings: bytes = b"") -> AsyncIterator[RawH2]:
    c = await RawH2.connect(_url(g), first_settings)
    try:
        yield c
    finally:
        c.close()


def _run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


def _door(g: Gateway) -> H2Door:
    door = g._grpc
    assert isinstance(door, H2Door)
    return door


@pytest.mark.triton
def test_protobuf_varint_bomb_is_refused_at_once_while_others_are_served(gw: Gateway) -> None:
    async def go() -> tuple[float, hostile.Reply]:
        async with _raw(gw) as c:
            t = time.perf_counter()
            r = await c.call(1, "ModelInfer", message(b"\x0a" + b"\xff" * 400_000))
            return time.perf_counter() - t, r

    with Probe(_url(gw)) as probe:
        elapsed, r = _run(go)
        time.sleep(0.3)
    assert r.status == INVALID_ARGUMENT and "varint" in r.message
    assert elapsed < 2.0  # the old parser took about 6 s
    assert not probe.errors and probe.latencies
    assert probe.worst_s < WORST_PROBE_S


@pytest.mark.triton
def test_every_message_is_checked(gw: Gateway) -> None:
    async def go() -> None:
        async with _raw(gw) as c:
            good = message(infer_request())
            # unary: a second message after the first
            r = await c.call(1, "ModelInfer", good + good)
            assert r.status == INVALID_ARGUMENT and "exactly one" in r.message
            # unary: compressed flag
            r = await c.call(3, "ModelInfer", b"\x01" + good[1:])
            assert r.status == INVALID_ARGUMENT and "compressed" in r.message
            # a stream: a good first message, then one declaring more than max_body_bytes
            over = b"\x00" + (MAX_BODY + 1).to_bytes(4, "big") + b"\x0a"
            r = await c.call(5, "ModelStreamInfer", good + over)
            assert r.status == RESOURCE_EXHAUSTED and "max_body_bytes" in r.message
            # a stream: a second message that is not protobuf
            r = await c.call(7, "ModelStreamInfer", good + message(b"\x0a\x80"))
            assert r.status == INVALID_ARGUMENT and "malformed" in r.message
            # a model name given twice: the last one counts, as Triton reads it
            twice = message(b"\x0a\x07unknown" + infer_request())
            r = await c.call(9, "ModelInfer", twice)
            assert r.status == 0, r
            # and the connection still serves a good call
            r = await c.call(11, "ModelInfer", good)
            assert r.status == 0 and r.data

    _run(go)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (h2settings(s5=0), PROTOCOL_ERROR),  # MAX_FRAME_SIZE below 2^14
        (h2settings(s5=1 << 24), PROTOCOL_ERROR),  # ... above 2^24-1
        (h2settings(s4=1 << 31), FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE over 2^31-1
        (h2settings(s2=2), PROTOCOL_ERROR),  # ENABLE_PUSH not 0/1
        (b"\x00\x04\x00\x00", FRAME_SIZE_ERROR),  # not a multiple of 6
    ],
)
@pytest.mark.triton
def test_invalid_settings_close_the_connection(gw: Gateway, payload: bytes, code: int) -> None:
    async def go() -> int | None:
        async with _raw(gw, payload) as c:
            return await c.wait_goaway()

    assert _run(go) == code


@pytest.mark.triton
def test_max_concurrent_streams_is_advertised_and_enforced(gw: Gateway) -> None:
    async def go() -> None:
        async with _raw(gw) as c:
            await c.until(lambda: 3 in c.server_settings)
            assert c.server_settings[3] == LIMITS["h2_max_concurrent_streams"]
            n = LIMITS["h2_max_concurrent_streams"]
            for k in range(n + 1):  # requests that never end
                c.send(c.headers(1 + 2 * k, "ModelInfer"), frame(DATA, 0, 1 + 2 * k, b"\x00"))
            await c.flush()
            last = 1 + 2 * n
            assert await c.until(lambda: last in c.replies)
            assert c.replies[last].reset == REFUSED_STREAM
            assert all(c.replies.get(1 + 2 * k) is None for k in range(n))
            # a stream ending frees a slot
            c.send(frame(RST_STREAM, 0, 1, struct.pack(">L", 8)))
            r = await c.call(last + 2, "ModelInfer", message(infer_request()))
            assert r.status == 0

    _run(go)


@pytest.mark.triton
@pytest.mark.parametrize(
    "attack",
    [
        hostile.rapid_reset,
        hostile.continuation_flood,
        hostile.ping_flood,
        hostile.settings_flood,
    ],
)
def test_floods_get_goaway_enhance_your_calm(gw: Gateway, attack: Any) -> None:
    async def go() -> tuple[RawH2, float]:
        t = time.monotonic()
        c = await attack(_url(gw), 5.0)
        elapsed = time.monotonic() - t
        await c.wait_goaway(2.0)
        c.close()
        return c, elapsed

    with Probe(_url(gw)) as probe:
        c, elapsed = _run(go)
        time.sleep(0.3)
    assert c.goaway is not None and c.goaway[0] == ENHANCE_YOUR_CALM, c.goaway
    assert elapsed < 2.0
    assert not probe.errors and probe.latencies
    assert probe.worst_s < WORST_PROBE_S
    text = gw.metrics.render().decode()
    assert 'closed_connections_total{protocol="grpc",reason="flood"}' in text


@pytest.mark.triton
def test_a_header_block_is_bounded(gw: Gateway) -> None:
    """HEADERS without END_HEADERS, then CONTINUATIONs: closed at the 64 KiB header bound
    (it used to take 64 MB in 4 s and stay open)."""

    async def go() -> tuple[RawH2, float]:
        t = time.monotonic()
        c = await hostile.continuation_flood(_url(gw), 5.0)
        await c.wait_goaway(2.0)
        c.close()
        return c, time.monotonic() - t

    c, elapsed = _run(go)
    assert c.goaway is not None and c.goaway[0] == ENHANCE_YOUR_CALM
    assert b"max_header_list" in c.goaway[1]
    assert elapsed < 3.0  # the flood runs for 5 s unless the gateway closes it

    async def few() -> int | None:  # many empty CONTINUATIONs: bounded in frames too
        async with _raw(gw) as c:
            c.ack_settings = False
            c.send(frame(HEADERS, 0, 1, encode(((b":path", b"/x"),))))
            c.send(frame(CONTINUATION, 0, 1, b"\x00") * 40)
            await c.flush()
            return await c.wait_goaway()

    assert _run(few) == ENHANCE_YOUR_CALM


@pytest.mark.triton
def test_a_frame_over_the_advertised_size_closes_at_once(gw: Gateway) -> None:
    async def go() -> int | None:
        async with _raw(gw) as c:
            c.send(c.headers(1, "ModelInfer"))
            c.send(b"\x20\x00\x00" + bytes((DATA, 0)) + (1).to_bytes(4, "big"))  # 2 MiB header
            await c.flush()
            return await c.wait_goaway()

    assert _run(go) == FRAME_SIZE_ERROR


@pytest.mark.triton
def test_data_is_credited_as_consumed_not_on_arrival(env: Env) -> None:
    """A stream held for a cold model takes no more than its window; more is an error."""

    async def never_warm(model: str) -> list[Replica]:
        await asyncio.sleep(30)
        return []

    d = StaticDirectory(warm=never_warm)
    d.register(ModelRouting("double_fp32"))
    g = _start(env, d, cold_hold_s=30.0, h2_stream_idle_timeout_s=30.0)
    window = LIMITS["h2_initial_stream_window_bytes"]

    async def go() -> int | None:
        async with _raw(g) as c:
            c.send(c.headers(1, "ModelStreamInfer"))
            c.send(frame(DATA, 0, 1, message(infer_request())))  # routed: held (cold)
            await c.flush()
            await asyncio.sleep(0.2)
            chunk = message(b"\x0a\x0bdouble_fp32" + b"\x12\x01x" * 5000)
            sent = len(message(infer_request()))
            while sent + len(chunk) <= window:
                c.send(frame(DATA, 0, 1, chunk))
                sent += len(chunk)
            await c.flush()
            await c.until(lambda: False, 0.3)  # read what the gateway sent meanwhile
            c.send(frame(DATA, 0, 1, b"\x00" * (window - sent + 1)))  # one byte past it
            await c.flush()
            return await c.wait_goaway()

    try:
        code = _run(go)
    finally:
        env.loop.run(g.stop())
    assert code == FLOW_CONTROL_ERROR


@pytest.mark.triton
def test_a_stream_that_never_finishes_times_out(gw: Gateway) -> None:
    async def go() -> hostile.Reply:
        async with _raw(gw) as c:
            c.send(c.headers(1, "ModelInfer"), frame(DATA, 0, 1, message(infer_request())[:20]))
            await c.flush()
            t = time.monotonic()
            await c.until(lambda: 1 in c.replies and c.replies[1].reset is not None, 5.0)
            assert time.monotonic() - t < 3.0
            return c.replies[1]

    r = _run(go)
    assert r.status == DEADLINE_EXCEEDED and "h2_stream_idle_timeout_s" in r.message
    assert r.reset == NO_ERROR


# 16 requests of 900 KiB held at once (in flight, kept for a retry) fit in this
_ROOMY: dict[str, Any] = {"h2_max_connection_buffer_bytes": 64 << 20}


def _big_echo_calls(c: RawH2, n: int) -> int:
    """`n` echo_bytes calls of ~900 KiB each way on `c`; the reply's least size."""
    req = service_pb2.ModelInferRequest(model_name="echo_bytes")
    i = req.inputs.add()
    i.name, i.datatype = "INPUT0", "BYTES"
    i.shape.extend([1, 4])
    element = b"z" * (225 << 10)
    req.raw_input_contents.append((len(element).to_bytes(4, "little") + element) * 4)
    body = message(req.SerializeToString())
    for k in range(n):
        sid = 1 + 2 * k
        c.send(c.headers(sid, "ModelInfer"))
        for off in range(0, len(body), 16384):
            last = off + 16384 >= len(body)
            c.send(frame(DATA, END_STREAM if last else 0, sid, body[off : off + 16384]))
    return 4 * len(element)


@pytest.mark.triton
def test_a_client_that_does_not_read_is_not_buffered_without_bound(env: Env) -> None:
    """Replies wait in flow-control queues once the socket is full (pause_writing)."""
    g = _start(env, env.directory, h2_stream_idle_timeout_s=30.0, **_ROOMY)
    door = _door(g)
    n = LIMITS["h2_max_concurrent_streams"]

    def state() -> tuple[int, bool]:
        (client,) = door.clients
        assert client.transport is not None
        return client.transport.get_write_buffer_size(), client.paused

    async def go() -> tuple[int, bool, int]:
        # windows wide open and a tiny receive buffer: only TCP pushes back
        c = await RawH2.connect(_url(g), h2settings(s4=1 << 30), rcvbuf=4096)
        try:
            c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 1 << 30)))
            size = _big_echo_calls(c, n)
            await c.flush()
            await asyncio.sleep(3.0)  # every reply is back from Triton; none read
            buffered, paused = env.loop.call(state)
            # now read everything: all replies arrive whole
            await c.until(lambda: sum(r.status == 0 for r in c.replies.values()) == n, 30.0)
            whole = sum(len(r.data) > size for r in c.replies.values())
            return buffered, paused, whole
        finally:
            c.close()

    try:
        buffered, paused, whole = _run(go)
    finally:
        env.loop.run(g.stop())
    assert paused
    assert buffered <= (2 << 20)  # the transport holds about one reply, not sixteen
    assert whole == n


@pytest.mark.triton
def test_a_client_that_never_reads_is_closed(env: Env) -> None:
    g = _start(env, env.directory, **_ROOMY)

    async def go() -> None:
        c = await RawH2.connect(_url(g), h2settings(s4=1 << 30), rcvbuf=4096)
        try:
            c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 1 << 30)))
            _big_echo_calls(c, LIMITS["h2_max_concurrent_streams"])
            await c.flush()
            await asyncio.sleep(4.0)  # > h2_stream_idle_timeout_s without progress
        finally:
            c.close()

    try:
        _run(go)
        text = g.metrics.render().decode()
        assert 'closed_connections_total{protocol="grpc",reason="write_stall"} 1' in text
        assert not _door(g).clients
    finally:
        env.loop.run(g.stop())


TILE_FLOATS = 256 * 1024  # 1 MiB of FP32 out for 16 bytes in


@pytest.fixture(scope="module")
def tile_model(env: Env) -> str:
    """A model whose reply is 1 MiB for a 16-byte request, on the fleet's first server."""
    model = DemoModel("tile_1mib", "TYPE_FP32", "tile", out_dims=(TILE_FLOATS,))
    if not env.directory.replicas(model.name):
        env.loop.run(load_everywhere(env.snapshot, [model], servers=[0]))
        env.directory.put(model.name, env.snapshot.servers[:1])
    return model.name


def _tile_call(c: RawH2, sid: int, model: str) -> None:
    req = service_pb2.ModelInferRequest(model_name=model)
    i = req.inputs.add()
    i.name, i.datatype = "INPUT0", "FP32"
    i.shape.extend([1, 4])
    req.raw_input_contents.append(struct.pack("<4f", 1, 2, 3, 4))
    c.send(
        c.headers(sid, "ModelInfer"), frame(DATA, END_STREAM, sid, message(req.SerializeToString()))
    )


@pytest.mark.triton
def test_unread_replies_per_connection_are_capped(env: Env, tile_model: str) -> None:
    """A client that sends calls and reads none of the replies holds at most
    `h2_max_connection_buffer_bytes` of them in the gateway: replies past it are answered
    RESOURCE_EXHAUSTED, and new calls are refused (REFUSED_STREAM) while it is backed up."""
    cap = 3 << 20
    g = _start(
        env, env.directory, h2_stream_idle_timeout_s=30.0, h2_max_connection_buffer_bytes=cap
    )
    door = _door(g)
    n = LIMITS["h2_max_concurrent_streams"]  # 16 MiB of replies in all

    def client() -> ClientConnection:
        (c,) = door.clients
        return c

    def answered() -> int:
        return sum(v for k, v in g.metrics.requests.items() if k[0] == tile_model)

    async def go() -> tuple[int, bool, dict[int, hostile.Reply]]:
        # windows wide open and a tiny receive buffer: only TCP pushes back
        c = await RawH2.connect(_url(g), h2settings(s4=1 << 30), rcvbuf=4096)
        try:
            c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 1 << 30)))
            for k in range(n):
                _tile_call(c, 1 + 2 * k, tile_model)
            await c.flush()
            # every call answered by the gateway, none of it read
            await asyncio.to_thread(
                env.loop.run, eventually(lambda: answered() == n, timeout_s=30.0)
            )
            unsent, paused = env.loop.call(lambda: (client().unsent(), client().paused))
            _tile_call(c, 1 + 2 * n, tile_model)  # a new call while backed up
            await c.flush()
            await c.until(
                lambda: (
                    len(c.replies) == n + 1
                    and all(r.status is not None or r.reset is not None for r in c.replies.values())
                ),
                30.0,
            )
            return unsent, paused, c.replies
        finally:
            c.close()

    try:
        unsent, paused, replies = _run(go)
    finally:
        env.loop.run(g.stop())
    assert paused and unsent <= cap + (64 << 10), unsent  # the cap, plus a few status frames
    whole = [r for r in replies.values() if r.status == 0 and len(r.data) > 4 * TILE_FLOATS]
    capped = [r for r in replies.values() if r.status == RESOURCE_EXHAUSTED]
    assert whole and capped and len(whole) + len(capped) == n, replies
    assert all("h2_max_connection_buffer_bytes" in r.message for r in capped)
    assert replies[1 + 2 * n].reset == REFUSED_STREAM


@pytest.mark.triton
def test_hpack_cache_is_bounded(env: Env, gw: Gateway) -> None:
    door = _door(gw)

    async def go() -> list[int]:
        async with _raw(gw) as c:
            for k in range(300):
                extra = (NeverIndexedHeaderTuple("x-request-id", f"{k:08d}" * 64),)
                c.send(c.headers(1 + 2 * k, "ServerLive", end=True, extra=extra))
            await c.flush()
            assert await c.until(
                lambda: len(c.replies) == 300 and all(r.status == 0 for r in c.replies.values()),
                10.0,
            )
            return list(env.loop.call(lambda: [x.decoder.cached_bytes for x in door.clients]))

    cached = _run(go)
    assert cached and all(0 < b <= gw.config.h2_hpack_cache_bytes for b in cached)


@pytest.mark.triton
def test_buffered_request_bytes_per_connection_are_capped(gw: Gateway) -> None:
    async def go() -> dict[int, hostile.Reply]:
        async with _raw(gw) as c:
            head = b"\x00" + MAX_BODY.to_bytes(4, "big")
            for k in range(3):  # 3 x 600 KiB of unfinished messages: over the 1 MiB cap
                sid = 1 + 2 * k
                c.send(c.headers(sid, "ModelInfer"), frame(DATA, 0, sid, head))
                for _ in range(600 // 16):
                    c.send(frame(DATA, 0, sid, b"\x12\x00" * 8192))
            await c.flush()
            await c.until(lambda: any(r.status for r in c.replies.values()), 3.0)
            return c.replies

    replies = _run(go)
    refused = [r for r in replies.values() if r.status == RESOURCE_EXHAUSTED]
    assert refused and "h2_max_connection_buffer_bytes" in refused[0].message


# --- property-based: the parsers and the framer, no servers ----------------------------------
def _infer_requests() -> st.SearchStrategy[service_pb2.ModelInferRequest]:
    text = st.text(max_size=20)
    return st.builds(
        lambda name, version, rid, raw: service_pb2.ModelInferRequest(
            model_name=name, model_version=version, id=rid, raw_input_contents=raw
        ),
        text,
        text,
        text,
        st.lists(st.binary(max_size=40), max_size=3),
    )


@given(_infer_requests())
def test_field1_string_reads_what_protobuf_wrote(req: service_pb2.ModelInferRequest) -> None:
    assert field1_string(req.SerializeToString()) == req.model_name


@given(st.binary(max_size=400))
@settings(max_examples=500)
def test_field1_string_on_random_bytes_agrees_with_protobuf_or_refuses(raw: bytes) -> None:
    try:
        name = field1_string(raw)
    except Malformed:
        return
    parsed = service_pb2.ModelInferRequest()
    try:
        parsed.ParseFromString(raw)
    except Exception:  # nested fields we do not read may be broken: Triton refuses those
        return
    assert name == parsed.model_name  # the model we route is the model Triton runs


def test_field1_string_is_linear_on_bombs() -> None:
    for bomb in (b"\x0a" + b"\xff" * 400_000, b"\x08" + b"\x80" * 400_000, b"\x0a" * 400_000):
        t = time.perf_counter()
        with pytest.raises(Malformed):
            field1_string(bomb)
        assert time.perf_counter() - t < 1.0  # was ~6 s for the first bomb (quadratic)


@given(
    st.lists(_infer_requests(), min_size=1, max_size=5),
    st.lists(st.integers(1, 64), max_size=20),
)
def test_message_reader_splits_at_any_point(reqs: list[Any], cuts: list[int]) -> None:
    wire = b"".join(message(r.SerializeToString()) for r in reqs)
    reader = MessageReader(MAX_BODY)
    got: list[bytes] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        got += reader.feed(wire[pos : pos + cut])
        pos += cut
        assert reader.pending <= MAX_BODY + 5
    got += reader.feed(wire[pos:])
    assert got == [message(r.SerializeToString()) for r in reqs]


@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_message_reader_on_random_bytes_refuses_or_yields_checked_messages(
    raw: bytes, cuts: list[int]
) -> None:
    reader = MessageReader(64)
    pos = 0
    try:
        for cut in [*cuts, len(raw)]:
            for m in reader.feed(raw[pos : pos + cut]):
                assert m[0] == 0 and int.from_bytes(m[1:5], "big") == len(m) - 5 <= 64
                field1_string(m[5:])
            pos += cut
            assert reader.pending <= 64 + 5
    except Refusal:
        pass


class _RecordingCall:
    """What the door hands the upstream pool: recorded, never answered."""

    def __init__(self, data: bytes) -> None:
        self.sent = [data]

    def send_data(self, data: bytes, end: bool) -> None:
        self.sent.append(data)

    def backlogged(self) -> bool:
        return False

    def credit(self, n: int) -> None:
        pass

    def cancel(self) -> None:
        pass


class _RecordingPool:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, _RecordingCall]] = []

    def start(
        self, url: str, listener: Any, block: bytes, data: bytes, end: bool, *, relay: bool = False
    ) -> _RecordingCall:
        call = _RecordingCall(data)
        self.calls.append((relay, call))
        return call

    def close(self) -> None:
        pass


_PATHS = [
    f"/inference.GRPCInferenceService/{m}".encode()
    for m in ("ModelInfer", "ModelStreamInfer", "ServerLive", "RepositoryIndex", "Nope")
]


def _request(path: bytes) -> bytes:
    """The header block of a well-formed gRPC request for `path` (RFC 9113 §8.3.1)."""
    return encode(
        (
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"gateway"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        )
    )


def _frames() -> st.SearchStrategy[bytes]:
    """Mostly well-formed HEADERS and DATA on a few client streams, some frames of anything."""
    sid = st.sampled_from([1, 3, 5, 7])
    raw = st.builds(
        frame,
        st.integers(0, 12),
        st.integers(0, 255),
        st.sampled_from([0, 1, 2, 3, 9, 1 << 20]),
        st.binary(max_size=40),
    )
    headers = st.builds(
        lambda s, p, f: frame(HEADERS, f | END_HEADERS, s, _request(p)),
        sid,
        st.sampled_from(_PATHS),
        st.sampled_from([0, END_STREAM]),
    )
    good = message(infer_request())
    body = st.one_of(
        st.just(good),
        st.just(good + good),
        st.builds(lambda k: good[:k], st.integers(0, len(good))),
        st.builds(message, st.binary(max_size=30)),
        st.binary(max_size=30),
    )
    data = st.builds(
        lambda s, b, f: frame(DATA, f, s, b), sid, body, st.sampled_from([0, END_STREAM])
    )
    call = st.builds(
        lambda s, p, b, f: frame(HEADERS, END_HEADERS, s, _request(p)) + frame(DATA, f, s, b),
        st.sampled_from([1, 3, 5, 7, 9, 11]),
        st.sampled_from(_PATHS[:2]),
        st.one_of(st.just(good), body),
        st.sampled_from([0, END_STREAM, END_STREAM]),
    )
    return st.one_of(call, call, call, call, raw, headers, data)


@given(st.lists(_frames(), max_size=25), st.lists(st.integers(1, 300), max_size=12))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_door_framer_survives_random_frames_in_random_splits(
    frames: list[bytes], cuts: list[int]
) -> None:
    config = GatewayConfig(max_body_bytes=256)
    metrics = GatewayMetrics()
    d = StaticDirectory()
    d.put_replicas("double_fp32", [Replica("double_fp32", "s0", "http://h:1", "h:2")])
    wire = PREFACE + frame(SETTINGS, 0, 0) + b"".join(frames)

    async def go() -> tuple[ClientConnection, FakeTransport, _RecordingPool]:
        door = H2Door(Router(d, config, metrics), metrics, config)
        pool = _RecordingPool()
        door.pool = pool  # type: ignore[assignment]
        client, t = ClientConnection(door), FakeTransport()
        client.connection_made(t)  # type: ignore[arg-type]
        pos = 0
        for cut in [*cuts, len(wire)]:
            if t.closed:
                break
            client.data_received(wire[pos : pos + cut])
            pos += cut
            assert len(client._buf) <= client.limits.max_frame + 9
        await asyncio.sleep(0)
        return client, t, pool

    client, t, pool = asyncio.run(go())
    event(f"forwarded calls: {min(len(pool.calls), 2)}")
    event(f"closed: {t.closed}")
    # no exception escaped as INTERNAL_ERROR
    for ftype, _, _, payload in t.frames():
        if ftype == GOAWAY:
            assert struct.unpack_from(">L", payload, 4)[0] != INTERNAL_ERROR
    assert client.decoder.cached_bytes <= client.limits.hpack_cache_bytes
    # everything forwarded was whole, checked messages for a known model
    for relay, call in pool.calls:
        data = b"".join(call.sent)
        msgs = MessageReader(256).feed(data)
        assert b"".join(msgs) == data
        if not relay:
            assert len(msgs) == 1
        assert field1_string(msgs[0][5:]) == "double_fp32"


def test_a_call_reset_in_the_read_that_brought_it_never_reaches_a_replica() -> None:
    config = GatewayConfig()
    metrics = GatewayMetrics()
    d = StaticDirectory()
    d.put_replicas("double_fp32", [Replica("double_fp32", "s0", "http://h:1", "h:2")])
    body = message(infer_request())
    infer = _request(_PATHS[0])
    stream = _request(_PATHS[1])

    async def go() -> tuple[_RecordingPool, dict[str, int]]:
        door = H2Door(Router(d, config, metrics), metrics, config)
        pool = _RecordingPool()
        door.pool = pool  # type: ignore[assignment]
        client = ClientConnection(door)
        client.connection_made(FakeTransport())  # type: ignore[arg-type]
        client.data_received(PREFACE + frame(SETTINGS, 0, 0))
        rst = struct.pack(">L", 8)
        for sid, block in ((1, infer), (3, stream)):
            client.data_received(
                frame(HEADERS, END_HEADERS, sid, block)
                + frame(DATA, END_STREAM, sid, body)
                + frame(RST_STREAM, 0, sid, rst)
            )
        # the same, RST in the next read: both calls go out
        for sid, block in ((5, infer), (7, stream)):
            client.data_received(
                frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, body)
            )
            client.data_received(frame(RST_STREAM, 0, sid, rst))
        return pool, dict(door.router.model_inflight)

    pool, inflight = asyncio.run(go())
    assert len(pool.calls) == 2
    assert not any(inflight.values())  # every admission was released


def test_closing_log_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A flood of connections closed for abuse is one log line a second, not one each."""
    from adapters.gateway import h2door

    limited = h2door._RateLimitedLog(logging.getLogger("test.h2door"), every_s=60.0)
    with caplog.at_level(logging.INFO, logger="test.h2door"):
        for i in range(1000):
            limited.info("closed %d", i)
        limited.next_at = 0.0  # the next period
        limited.info("closed %d", 1000)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["closed 0", "closed 1000 (and 999 more in the last second or so, not logged)"]
