"""Slow and idle clients (slowloris): header timeout, idle timeout, connection limit.

No Triton here: the replica is a tiny HTTP server that answers after a delay, so a request
can be held in flight for as long as a test needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.h2wire import PREFACE, SETTINGS, frame
from controlplane.replicas import ModelRouting, Replica
from tests.gateway.hostile import read_until_closed
from tests.gateway.support import run_async
from tests.support import eventually

HEADER_T = 0.4
IDLE_T = 0.8
SLOW_S = 1.5  # the fake replica's answer time: longer than both timeouts
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
_OPEN: list[asyncio.StreamWriter] = []  # client connections, closed with the gateway
INFER = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def _slow_replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            await reader.readexactly(n)
            await asyncio.sleep(SLOW_S)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def _gateway(**cfg: object) -> AsyncIterator[Gateway]:
    replica_srv = await asyncio.start_server(_slow_replica, "127.0.0.1", 0)
    port = replica_srv.sockets[0].getsockname()[1]
    d = StaticDirectory()
    d.register(ModelRouting("m"))
    d.put_replicas("m", [Replica("m", "fake", f"http://127.0.0.1:{port}", "127.0.0.1:1")])
    config = GatewayConfig(
        http_port=0,
        grpc_port=0,
        header_timeout_s=HEADER_T,
        idle_timeout_s=IDLE_T,
        **cfg,  # type: ignore[arg-type]
    )
    gw = Gateway(config, d)
    await gw.start()
    try:
        yield gw
    finally:
        for w in _OPEN:
            w.close()
        _OPEN.clear()
        await gw.stop()
        replica_srv.close()
        await replica_srv.wait_closed()


async def _connect(port: int | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert port is not None
    r, w = await asyncio.open_connection("127.0.0.1", port)
    _OPEN.append(w)
    return r, w


async def _response(r: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return head + await r.readexactly(n)


async def _closed_within(r: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes (or resets), and when it closed."""
    t0 = time.monotonic()
    data = await read_until_closed(r, limit_s)
    return data, time.monotonic() - t0


def _run(test: Callable[[], Awaitable[None]]) -> None:
    run_async(test())


def test_half_a_head_gets_408_and_close() -> None:
    async def t() -> None:
        async with _gateway() as gw:
            r, w = await _connect(gw.http_port)
            w.write(b"GET /v2/health/live HTTP/1.1\r\nHost: ")
            t0 = time.monotonic()
            data, _ = await _closed_within(r, HEADER_T + 2)
            elapsed = time.monotonic() - t0
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
            assert b"Connection: close" in data
            assert HEADER_T * 0.9 <= elapsed <= HEADER_T + 0.5
            # a byte dribbled now and then does not reset the head clock
            r, w = await _connect(gw.http_port)

            async def dribble() -> None:
                for b in b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n":
                    w.write(bytes((b,)))
                    await asyncio.sleep(0.05)

            dribbler = asyncio.ensure_future(dribble())
            data, elapsed = await _closed_within(r, 2)
            dribbler.cancel()
            # the 408 is sent, but the bytes dribbled after it may turn the close into a reset
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
            assert elapsed <= HEADER_T + 0.5
            # a connection that sends nothing is closed silently
            r, w = await _connect(gw.http_port)
            data, elapsed = await _closed_within(r, HEADER_T + 2)
            assert data == b""
            assert elapsed <= HEADER_T + 0.5
            text = gw.metrics.render().decode()
            assert 'closed_connections_total{protocol="http",reason="header_timeout"} 3' in text, (
                text
            )

    _run(t)


def test_idle_keep_alive_is_closed_but_busy_ones_are_not() -> None:
    async def t() -> None:
        async with _gateway() as gw:
            idle_r, idle_w = await _connect(gw.http_port)
            idle_w.write(LIVE)
            assert (await _response(idle_r)).startswith(b"HTTP/1.1 200")
            t_idle = time.monotonic()
            # in flight to a slow replica for longer than both timeouts
            slow_r, slow_w = await _connect(gw.http_port)
            slow_w.write(INFER)
            slow = asyncio.ensure_future(_response(slow_r))
            # regular requests, each well within the idle timeout
            busy_r, busy_w = await _connect(gw.http_port)
            for _ in range(int(SLOW_S / 0.2) + 1):
                busy_w.write(LIVE)
                assert (await _response(busy_r)).startswith(b"HTTP/1.1 200")
                await asyncio.sleep(0.2)
            # the kept-alive connection was idle, so the header timeout did not apply to it
            data, _ = await _closed_within(idle_r, 2)
            assert data == b""
            assert (await slow).startswith(b"HTTP/1.1 200")
            assert time.monotonic() - t_idle >= IDLE_T
            # both busy connections still work
            for r, w in ((slow_r, slow_w), (busy_r, busy_w)):
                w.write(LIVE)
                assert (await _response(r)).startswith(b"HTTP/1.1 200")
            text = gw.metrics.render().decode()
            assert 'closed_connections_total{protocol="http",reason="idle_timeout"} 1' in text

    _run(t)


def test_idle_timeout_closes_after_the_last_reply() -> None:
    async def t() -> None:
        async with _gateway() as gw:
            r, w = await _connect(gw.http_port)
            w.write(LIVE)
            await _response(r)
            data, elapsed = await _closed_within(r, IDLE_T + 2)
            assert data == b""
            assert IDLE_T * 0.8 <= elapsed <= IDLE_T + 0.5

    _run(t)


def test_connections_over_the_limit_are_closed() -> None:
    async def t() -> None:
        async with _gateway(max_client_connections=2) as gw:
            kept = [await _connect(gw.http_port) for _ in range(2)]
            await eventually(lambda: len(gw.http.clients) == 2, 10, 0.01)  # both accepted
            r, _ = await _connect(gw.http_port)
            data, elapsed = await _closed_within(r, 3)
            assert data == b"" and elapsed < 2.0
            for r, w in kept:
                w.write(LIVE)
                assert (await _response(r)).startswith(b"HTTP/1.1 200")
            # h2 door: its own limit
            for _ in range(2):
                h2_r, _ = await _connect(gw.grpc_port)
                assert await h2_r.readexactly(9)  # the door's SETTINGS: it took the connection
            r, _ = await _connect(gw.grpc_port)
            data, elapsed = await _closed_within(r, 3)
            assert data == b"" and elapsed < 2.0
            text = gw.metrics.render().decode()
            assert 'rejected_connections_total{protocol="http"} 1' in text
            assert 'rejected_connections_total{protocol="grpc"} 1' in text

    _run(t)


def test_h2_partial_preface_is_closed() -> None:
    async def t() -> None:
        async with _gateway() as gw:
            r, w = await _connect(gw.grpc_port)
            w.write(PREFACE[:10])
            data, elapsed = await _closed_within(r, HEADER_T + 2)
            assert elapsed <= HEADER_T + 0.5
            assert data[3] == SETTINGS  # the gateway's own SETTINGS, then GOAWAY
            assert b"preface" in data
            # preface but no SETTINGS: closed as well
            r, w = await _connect(gw.grpc_port)
            w.write(PREFACE)
            data, elapsed = await _closed_within(r, HEADER_T + 2)
            assert elapsed <= HEADER_T + 0.5
            text = gw.metrics.render().decode()
            assert 'closed_connections_total{protocol="grpc",reason="header_timeout"} 2' in text

    _run(t)


def test_h2_idle_connection_is_closed_after_idle_timeout() -> None:
    async def t() -> None:
        async with _gateway() as gw:
            r, w = await _connect(gw.grpc_port)
            w.write(PREFACE + frame(SETTINGS, 0, 0))
            data, elapsed = await _closed_within(r, IDLE_T + 2)
            assert IDLE_T * 0.8 <= elapsed <= IDLE_T + 0.5
            assert b"idle connection" in data
            text = gw.metrics.render().decode()
            assert 'closed_connections_total{protocol="grpc",reason="idle_timeout"} 1' in text

    _run(t)
