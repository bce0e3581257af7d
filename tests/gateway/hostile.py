"""Hostile HTTP/1.1 clients: malformed heads, smuggling attempts, floods and slow readers.

Shared by `test_http_adversarial` (each class refused, others still served) and
`benchmarks.gateway_hostile` (the same attacks, side by side, with latencies and RSS).
Every function here talks to a gateway over loopback with raw asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable

LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
_INFER = "POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\n{extra}\r\n"

# Each head must be refused with its status and a close; none may reach a replica.
# `Host: x` keeps llhttp's view and ours aligned on everything but the defect under test.
MALFORMED: dict[str, tuple[bytes, int]] = {
    "obs_fold": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    "bare_lf": (b"GET /v2/models/double_fp32 HTTP/1.1\nHost: x\n\n", 400),
    "bare_lf_in_header": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
    "bare_cr": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
    "space_before_colon": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "ctl_in_name": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHo\x01st: x\r\n\r\n", 400),
    "nul_in_value": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHost: x\x00y\r\n\r\n", 400),
    "del_in_value": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHost: x\x7fy\r\n\r\n", 400),
    "two_hosts": (b"GET /v2/models/double_fp32 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    "duplicate_cl": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        400,
    ),
    "conflicting_cl": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 40\r\n\r\n{}",
        400,
    ),
    "cl_list": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}",
        400,
    ),
    "cl_plus_sign": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}",
        400,
    ),
    # CL.TE: a front end that trusted Content-Length would forward "0\r\n\r\nGET /smuggled"
    "te_and_cl": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v2/repository/index HTTP/1.1\r\n\r\n",
        400,
    ),
    "te_gzip": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    ),
    "te_chunked_gzip": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),
    "te_obfuscated": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        400,
    ),
    "te_chunked": (
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\n",
        411,
    ),
    "long_request_line": (b"GET /v2/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "long_head": (b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    "many_headers": (
        b"GET /v2 HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(150))
        + b"\r\n",
        431,
    ),
    "absolute_form": (b"GET http://evil/v2 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "http2_version": (b"GET /v2 HTTP/2.0\r\nHost: x\r\n\r\n", 505),
}


def infer_request(model: str, body: bytes, extra: str = "") -> bytes:
    head = _INFER.format(model=model, extra=f"Content-Length: {len(body)}\r\n{extra}")
    return head.encode() + body


def double_body() -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    ).encode()


def big_body(n_floats: int) -> bytes:
    """A binary-tensor request for an FP32 echo model with `n_floats` values (4 bytes each)."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, n_floats],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4 * n_floats},
                }
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + struct.pack(f"<{n_floats}f", *([1.0] * n_floats))


def big_request(model: str, n_floats: int) -> bytes:
    body = big_body(n_floats)
    header_len = len(body) - 4 * n_floats
    return infer_request(model, body, f"Inference-Header-Content-Length: {header_len}\r\n")


async def open_small_window(
    host: str, port: int, rcvbuf: int = 64 * 1024, limit: int = 1 << 16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose receive buffer is set before connecting (so TCP's window stays
    small and a client that reads slowly is slow as the gateway sees it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=limit)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


async def read_reply(r: asyncio.StreamReader, timeout_s: float = 5.0) -> tuple[int, bytes, bytes]:
    """One reply: (status, head, body)."""
    async with asyncio.timeout(timeout_s):
        head = await r.readuntil(b"\r\n\r\n")
        return int(head[9:12]), head, await r.readexactly(_content_length(head))


async def read_until_closed(r: asyncio.StreamReader, timeout_s: float = 5.0) -> bytes:
    data = b""
    async with asyncio.timeout(timeout_s):
        try:
            while chunk := await r.read(65536):
                data += chunk
        except ConnectionError:
            pass  # closed with our bytes unread: TCP answers with RST
    return data


async def refused(host: str, port: int, raw: bytes, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """Send `raw`; returns the one status the gateway answered and everything it sent before
    it closed (the test asserts there was exactly one reply and a close)."""
    r, w = await asyncio.open_connection(host, port)
    try:
        w.write(raw)
        data = await read_until_closed(r, timeout_s)
    finally:
        w.close()
    return (int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0), data


class Prober:
    """A well-behaved client: one request at a time on a kept-alive connection, timed."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.addr = (host, port)
        self.request = request
        self.latencies_s: list[float] = []
        self.errors: list[str] = []
        self.attack_result: object = None

    async def run(self, stop: asyncio.Event, interval_s: float = 0.02) -> None:
        r, w = await asyncio.open_connection(*self.addr)
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                w.write(self.request)
                try:
                    status, _, _ = await read_reply(r, 2.0)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
                    self.errors.append(repr(exc))
                    w.close()
                    r, w = await asyncio.open_connection(*self.addr)
                    continue
                self.latencies_s.append(time.perf_counter() - t0)
                if status != 200:
                    self.errors.append(f"status {status}")
                await asyncio.sleep(interval_s)
        finally:
            w.close()

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies_s) or [float("nan")]
        return {
            "n": len(self.latencies_s),
            "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max_ms": 1000 * lat[-1],
            "errors": len(self.errors),
        }


async def while_probing(
    host: str, port: int, probe: bytes, attack: Callable[[], Awaitable[object]]
) -> Prober:
    """Run `attack` to its end while a well-behaved client keeps asking; returns the prober."""
    prober = Prober(host, port, probe)
    stop = asyncio.Event()
    task = asyncio.ensure_future(prober.run(stop))
    try:
        await asyncio.sleep(0.05)
        prober.attack_result = await attack()
    finally:
        stop.set()
        await task
    return prober


# --- attacks that run for a while ---------------------------------------------------------
async def flood_malformed(host: str, port: int, seconds: float, connections: int = 8) -> int:
    """Connections sending every malformed head, again and again; returns heads sent."""
    deadline = time.monotonic() + seconds
    sent = 0

    async def one() -> None:
        nonlocal sent
        heads = list(MALFORMED.values())
        i = 0
        while time.monotonic() < deadline:
            raw, _ = heads[i % len(heads)]
            i += 1
            with contextlib.suppress(TimeoutError, OSError):
                await refused(host, port, raw, 2.0)
            sent += 1

    await asyncio.gather(*(one() for _ in range(connections)))
    return sent


async def pipeline_without_reading(
    host: str, port: int, request: bytes, total_bytes: int, hold_s: float
) -> None:
    """Write `total_bytes` worth of pipelined requests, read nothing for `hold_s`, then close."""
    _r, w = await asyncio.open_connection(host, port)
    try:
        n = max(1, total_bytes // len(request))
        chunk = request * max(1, (256 * 1024) // len(request))
        sent = 0
        async with asyncio.timeout(hold_s):
            while sent < n * len(request):
                w.write(chunk)
                sent += len(chunk)
                await w.drain()  # blocks once the gateway stops reading: that is the point
        await asyncio.sleep(hold_s)
    except TimeoutError:
        pass
    finally:
        w.transport.abort()


async def slow_readers(
    host: str,
    port: int,
    request: bytes,
    clients: int,
    seconds: float,
    read_bps: int,
    depth: int = 8,
) -> int:
    """`clients` connections each keeping `depth` requests outstanding and reading the replies
    at `read_bps` (a new request as each reply completes); returns the body bytes read."""
    deadline = time.monotonic() + seconds
    got = 0
    step = max(1, read_bps // 10)

    async def one() -> None:
        nonlocal got
        r, w = await open_small_window(host, port, limit=step)
        try:
            w.write(request * depth)
            while time.monotonic() < deadline:
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                n = _content_length(head)
                while n > 0 and time.monotonic() < deadline:
                    data = await asyncio.wait_for(r.read(min(step, n)), 10)
                    if not data:
                        return
                    n -= len(data)
                    got += len(data)
                    await asyncio.sleep(0.1)
                w.write(request)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.transport.abort()

    await asyncio.gather(*(one() for _ in range(clients)))
    return got


async def slowloris(host: str, port: int, seconds: float, connections: int = 50) -> None:
    """Connections dribbling a head one byte at a time."""
    deadline = time.monotonic() + seconds
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 1000

    async def one() -> None:
        while time.monotonic() < deadline:
            try:
                r, w = await asyncio.open_connection(host, port)
                for b in head:
                    if time.monotonic() >= deadline or r.at_eof():
                        break
                    w.write(bytes((b,)))
                    await asyncio.sleep(0.05)
                w.transport.abort()
            except OSError:
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(connections)))
