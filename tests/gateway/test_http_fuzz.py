"""Property-based fuzzing of the HTTP door: random bytes, random split points, real sockets.

No Triton here: the replica is a recording fake that checks every request the gateway
forwards with the strict parser (llhttp) again, so "nothing unvalidated is forwarded" is an
assertion on the bytes that arrived, not on the gateway's code. After each example: no
exception escaped a connection (the loop's exception handler saw nothing), every
connection's buffers stayed within their bounds, and another client is still served.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.framing import (
    MAX_HEAD_BYTES,
    FramingError,
    HeadCache,
    check_partial_head,
    parse_request_head,
)
from controlplane.replicas import ModelRouting, Replica
from tests.gateway.hostile import LIVE, MALFORMED, read_reply, read_until_closed
from tests.gateway.support import LoopThread
from tests.support import eventually

PIPELINED_CAP = 16 * 1024
MAX_BODY = 64 * 1024
IDLE_S = 3.0
BIG_REPLY = 1 << 20  # the fake replica's reply to GET /v2/models/big: relayed, not buffered

# RFC 9110 section 7.6.1's hop-by-hop headers: never forwarded
_HOP_BY_HOP = {
    b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"transfer-encoding",
    b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
}  # fmt: skip

VALID = [
    LIVE,
    b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/models/m/ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    b"Content-Length: 5\r\n\r\nhello",
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nAdmin-Key: guess\r\nContent-Length: 0\r\n\r\n",
    b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\nConnection: x-a, te\r\nX-A: 1\r\nTE: trailers\r\n\r\n",
    b"GET /v2/repository/index HTTP/1.1\r\nHost: x\r\n\r\n",
]


class _Fields:
    def __init__(self, out: list[tuple[bytes, bytes]]) -> None:
        self.on_header = lambda name, value: out.append((name, value))


@dataclass
class Recorder:
    """The fake replica: answers 200 and checks what it was sent."""

    requests: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, raw: bytes) -> int | None:
        """The body length of a forwarded head, checked by llhttp itself (not by the code
        under test); None, with a violation recorded, if the head is not strictly valid."""
        fields: list[tuple[bytes, bytes]] = []
        parser = httptools.HttpRequestParser(_Fields(fields))
        try:
            parser.feed_data(raw)
        except httptools.HttpParserError as exc:
            self.violations.append(f"forwarded an invalid head ({exc}): {raw!r}")
            return None
        names = [n.lower() for n, _ in fields]
        if b"transfer-encoding" in names or names.count(b"content-length") > 1:
            self.violations.append(f"forwarded an ambiguous head: {raw!r}")
            return None
        if not raw.endswith(b" HTTP/1.1\r\n" + raw.split(b"\r\n", 1)[1]) or raw[:1] == b" ":
            self.violations.append(f"forwarded a head that is not HTTP/1.1: {raw!r}")
        if names.count(b"host") != 1:
            self.violations.append(f"forwarded a head without exactly one Host: {raw!r}")
        if set(names) & _HOP_BY_HOP:
            self.violations.append(f"forwarded a hop-by-hop header: {raw!r}")
        return int(dict(zip(names, (v for _, v in fields), strict=True)).get(b"content-length", 0))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                length = self.check(raw)
                if length is None:
                    return
                await reader.readexactly(length)
                self.requests += 1
                if raw.startswith(b"GET /v2/models/big "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG_REPLY)
                    writer.write(b"b" * BIG_REPLY)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.transport.abort()


@dataclass
class Rig:
    loop: LoopThread
    gateway: Gateway
    recorder: Recorder
    errors: list[dict[str, Any]]

    @property
    def port(self) -> int:
        return self.gateway.http_port


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    loop = LoopThread()
    recorder = Recorder()
    errors: list[dict[str, Any]] = []

    async def up() -> tuple[Gateway, asyncio.Server]:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
        srv = await asyncio.start_server(recorder.serve, "127.0.0.1", 0, limit=1 << 20)
        port = srv.sockets[0].getsockname()[1]
        d = StaticDirectory()
        for model in ("m", "big"):
            d.register(ModelRouting(model))
            d.put_replicas(
                model, [Replica(model, "fake", f"http://127.0.0.1:{port}", "127.0.0.1:1")]
            )
        gw = Gateway(
            GatewayConfig(
                http_port=0,
                grpc_port=None,
                max_body_bytes=MAX_BODY,
                max_pipelined_bytes=PIPELINED_CAP,
                idle_timeout_s=IDLE_S,
            ),
            d,
        )
        await gw.start()
        return gw, srv

    gw, srv = loop.run(up())
    yield Rig(loop, gw, recorder, errors)

    async def down() -> None:
        await gw.stop()
        srv.close()
        await srv.wait_closed()
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:  # the fake replica's connection handlers
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    loop.run(down())
    loop.close()


def _bounded(rig: Rig) -> None:
    """Every open connection of the door is within its memory bounds."""

    def check() -> None:
        for c in rig.gateway.http.clients:
            assert len(c.buf) <= MAX_HEAD_BYTES + 256 * 1024, len(c.buf)
            assert c.have <= MAX_BODY + 256 * 1024
            # the queue stops growing at the cap, give or take the one request that crossed it
            assert c.queued_bytes <= PIPELINED_CAP + MAX_BODY + MAX_HEAD_BYTES
            assert len(c.queue) <= 256

    rig.loop.call(check)


def _served(rig: Rig) -> float:
    async def probe() -> float:
        r, w = await asyncio.open_connection("127.0.0.1", rig.port)
        t0 = time.perf_counter()
        w.write(b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_reply(r, 2)
        w.close()
        assert (status, body) == (200, b"{}")
        return time.perf_counter() - t0

    return rig.loop.run(probe())


def _mutate(raw: bytes, pos: int, byte: int, how: str) -> bytes:
    pos %= len(raw) + 1
    if how == "insert":
        return raw[:pos] + bytes((byte,)) + raw[pos:]
    if how == "replace":
        return raw[:pos] + bytes((byte,)) + raw[pos + 1 :]
    return raw[:pos] + raw[pos + 1 :]


pieces = st.one_of(
    st.sampled_from(VALID),
    st.sampled_from([raw for raw, _ in MALFORMED.values()]),
    st.binary(max_size=300),
    st.builds(
        _mutate,
        st.sampled_from(VALID),
        st.integers(0, 200),
        st.sampled_from(b"\r\n\x00 \t:\x7f\xff,aZ0"),
        st.sampled_from(["insert", "replace", "delete"]),
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(parts=st.lists(pieces, min_size=1, max_size=6), data=st.data())
def test_random_bytes_at_random_split_points(rig: Rig, parts: list[bytes], data: Any) -> None:
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    async def client() -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", rig.port)
        try:
            for c in chunks:
                if c:
                    w.write(c)
                    await w.drain()
                await asyncio.sleep(0)
            w.write_eof()
        except OSError:
            pass  # the gateway refused and closed before everything was sent
        try:
            return await read_until_closed(r, 5)
        finally:
            w.close()

    replies = rig.loop.run(client())
    assert not replies or replies.startswith(b"HTTP/1.1 "), replies[:200]
    _bounded(rig)
    assert not rig.errors, rig.errors
    assert not rig.recorder.violations, rig.recorder.violations
    assert _served(rig) < 1.0


def test_pipelined_flood_is_paused_not_buffered(rig: Rig) -> None:
    """50 MiB of pipelined requests: the door stops reading, every reply still comes, in order."""
    one = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    )
    n = 50 * 1024 * 1024 // len(one)
    peak = {"queued": 0, "clients": 0}

    async def flood() -> int:
        r, w = await asyncio.open_connection("127.0.0.1", rig.port, limit=1 << 20)

        async def write() -> None:
            block = one * 256
            for _ in range(n // 256):
                w.write(block)
                await w.drain()
                for c in rig.gateway.http.clients:
                    peak["queued"] = max(peak["queued"], c.queued_bytes)

        writer = asyncio.ensure_future(write())
        got = 0
        try:
            while got < (n // 256) * 256:
                status, _, body = await read_reply(r, 10)
                assert (status, body) == (200, b"{}")
                got += 1
        finally:
            await writer
            w.close()
        return got

    assert rig.loop.run(flood(), timeout=120) == (n // 256) * 256
    assert 0 < peak["queued"] <= PIPELINED_CAP + len(one)
    assert not rig.errors


def test_slow_reader_stops_the_replica_not_the_memory(rig: Rig) -> None:
    """A client asking for 1 MiB replies and reading none: the gateway holds about one
    socket buffer, not the replies (the replica's connection is paused)."""

    async def t() -> tuple[int, int]:
        r, w = await asyncio.open_connection("127.0.0.1", rig.port)
        w.write(b"GET /v2/models/big HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        await w.drain()
        await eventually(
            lambda: any(
                c.upstream is not None and c.upstream.paused for c in rig.gateway.http.clients
            ),
            30,
        )
        (c,) = [c for c in rig.gateway.http.clients if c.upstream is not None or c.queue]
        assert c.transport is not None
        held = c.transport.get_write_buffer_size() + c.queued_bytes
        upstream_paused = c.upstream is not None and c.upstream.paused
        # reading a little resumes the flow
        first = await r.readexactly(1 << 20)
        assert first.startswith(b"HTTP/1.1 200 OK")
        w.transport.abort()
        return held, int(upstream_paused)

    held, paused = rig.loop.run(t())
    assert held < 1 << 20, held  # less than one reply, though 20 were asked for
    assert paused == 1
    assert not rig.errors


def test_a_client_reading_none_of_its_replies_is_aborted(rig: Rig) -> None:
    async def t() -> float:
        r, w = await asyncio.open_connection("127.0.0.1", rig.port)
        w.write(b"GET /v2/models/big HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        t0 = time.monotonic()
        await asyncio.sleep(IDLE_S + 1.0)
        try:  # what the kernel had buffered, then a reset: nothing more is coming
            await read_until_closed(r, 5)
        finally:
            w.close()
        return time.monotonic() - t0

    elapsed = rig.loop.run(t())
    assert elapsed < IDLE_S + 3.0
    assert 'closed_connections_total{protocol="http",reason="idle_timeout"}' in (
        rig.gateway.metrics.render().decode()
    )
    assert not rig.errors


@given(st.binary(max_size=2000))
@example(b"Connection:\r\n")  # found by this test in a fresh clone: a head ending in CRLF
@example(b"Host: x\r\n\r\nX: y")
def test_parser_raises_only_framing_errors(raw: bytes) -> None:
    for candidate in (raw, b"GET / HTTP/1.1\r\n" + raw):
        with contextlib.suppress(FramingError):
            check_partial_head(candidate)
        try:
            head = parse_request_head(candidate)
        except FramingError as exc:
            assert 400 <= exc.status < 600
            continue
        # an accepted head forwards a head that is itself accepted, the same way
        again = parse_request_head(head.upstream_head[:-4])
        assert (again.method, again.target, again.length) == (head.method, head.target, head.length)


def test_head_cache_is_bounded_in_entries_and_bytes() -> None:
    cache: HeadCache[int] = HeadCache()
    for i in range(20_000):
        cache.remember(b"%d" % i + b"x" * 2000, i)
        assert len(cache) <= cache.limit and cache.nbytes <= cache.limit_bytes
    cache.remember(b"y" * (cache.max_key_bytes + 1), 0)
    assert b"y" * (cache.max_key_bytes + 1) not in cache
