"""loadgen.leanhttp: request bytes, response framing and error kinds against scripted servers.

The servers here are plain asyncio servers that answer (or misbehave) exactly as each test
says; the same client against a real Triton is tested in test_triton.py.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Awaitable, Callable

import httptools
import numpy as np
import pytest

from loadgen.inputs import ModelSignature, TensorSpec
from loadgen.leanhttp import Pool, build_request, split_hostport
from loadgen.transport import LeanHttpTransport, infer_bodies

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --- request serialisation (pure) ---------------------------------------------------------
class _Req:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def _parse_request(data: bytes) -> tuple[httptools.HttpRequestParser, _Req]:
    req = _Req()
    parser = httptools.HttpRequestParser(req)
    parser.feed_data(data)
    return parser, req


def test_build_request_is_one_complete_keep_alive_post() -> None:
    body = b'{"inputs":[]}' + b"\x00\x01\x02\x03"
    data = build_request("h:8000", "/v2/models/m/infer", body, json_header_size=13)
    parser, req = _parse_request(data)
    assert req.done and parser.get_method() == b"POST" and req.url == b"/v2/models/m/infer"
    assert parser.should_keep_alive()
    assert req.headers["host"] == "h:8000"
    assert req.headers["content-length"] == str(len(body))
    assert req.headers["inference-header-content-length"] == "13"
    assert req.headers["content-type"] == "application/octet-stream"
    assert req.body == body
    plain = build_request("h:1", "/x", b"{}")
    _, req2 = _parse_request(plain)
    assert "inference-header-content-length" not in req2.headers
    assert req2.headers["content-type"] == "application/json" and req2.body == b"{}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:8000", ("localhost", 8000)),
        ("[::1]:9", ("::1", 9)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
    ],
)
def test_split_hostport(text: str, expected: tuple[str, int]) -> None:
    assert split_hostport(text) == expected
    with pytest.raises(ValueError):
        split_hostport("nohost")


def _sig(datatype: str, shape: tuple[int, ...], version: str = "") -> ModelSignature:
    return ModelSignature(
        "m",
        version,
        8,
        (TensorSpec("INPUT0", datatype, shape),),
        (TensorSpec("OUTPUT0", datatype, shape),),
    )


def test_binary_body_layout_fp32_and_bytes() -> None:
    """KServe v2 binary extension: JSON header of the stated size, then the raw tensor bytes."""
    arr = np.arange(8, dtype=np.float32).reshape(2, 4)
    ((body, size),) = infer_bodies(_sig("FP32", (-1, 4)), [{"INPUT0": arr}], binary=True)
    assert size is not None
    head = json.loads(body[:size])
    (inp,) = head["inputs"]
    assert inp["name"] == "INPUT0" and inp["datatype"] == "FP32" and inp["shape"] == [2, 4]
    assert inp["parameters"]["binary_data_size"] == 32
    assert head["outputs"] == [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    assert body[size:] == arr.tobytes()

    strings = np.array([[b"ab"], [b"xyz"]], dtype=np.object_)
    ((body, size),) = infer_bodies(_sig("BYTES", (-1, 1)), [{"INPUT0": strings}], binary=True)
    assert size is not None
    (inp,) = json.loads(body[:size])["inputs"]
    assert inp["datatype"] == "BYTES" and inp["shape"] == [2, 1]
    raw = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 3) + b"xyz"
    assert inp["parameters"]["binary_data_size"] == len(raw) and body[size:] == raw


def test_json_body_and_request_path() -> None:
    arr = np.array([[1.5, 2, 3, 4]], dtype=np.float32)
    ((body, size),) = infer_bodies(_sig("FP32", (-1, 4)), [{"INPUT0": arr}], binary=False)
    assert size is None
    assert json.loads(body)["inputs"][0]["data"] == [1.5, 2.0, 3.0, 4.0]
    assert LeanHttpTransport.request_path(_sig("FP32", (4,))) == "/v2/models/m/infer"
    assert (
        LeanHttpTransport.request_path(_sig("FP32", (4,), "3")) == "/v2/models/m/versions/3/infer"
    )


# --- the pool against scripted servers ----------------------------------------------------
async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def _response(status: int, body: bytes, *, extra: str = "") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 503: "Service Unavailable"}[status]
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


def _run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


REQ = build_request("x:1", "/v2/models/m/infer", b"{}")


def test_keep_alive_reuses_one_connection_and_reports_status_kinds() -> None:
    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        n = 0
        while await _read_request(reader) is not None:
            n += 1
            if n % 3 == 0:
                writer.write(_response(400, b'{"error":"bad input"}'))
            elif n % 3 == 1:
                writer.write(_response(200, b"x" * 1000))
            else:  # chunked framing, split across writes
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                await writer.drain()
                writer.write(b"0\r\n\r\n")
        writer.close()

    async def main() -> None:
        server, hp = await _serve(handler)
        pool = Pool(hp, limit=8, timeout_s=5)
        try:
            results = [await pool.request(REQ) for _ in range(9)]
        finally:
            await pool.close()
            server.close()
        assert [k for k, _ in results] == [None, None, "http_400"] * 3
        assert json.loads(results[2][1]) == {"error": "bad input"}
        assert pool.opened == 1 and accepted == 1

    _run(main())


def test_pool_grows_to_the_limit_and_queues_beyond_it() -> None:
    live = 0
    peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        while await _read_request(reader) is not None:
            await asyncio.sleep(0.02)
            writer.write(_response(200, b"ok"))
        live -= 1
        writer.close()

    async def main() -> None:
        server, hp = await _serve(handler)
        pool = Pool(hp, limit=3, timeout_s=5)
        done: list[str | None] = []
        try:
            for _ in range(12):
                pool.submit(REQ, lambda k, _d: done.append(k))
            t = time.perf_counter()
            while len(done) < 12 and time.perf_counter() - t < 5:
                await asyncio.sleep(0.01)
        finally:
            await pool.close()
            server.close()
        assert done == [None] * 12
        assert pool.opened == 3 and peak == 3

    _run(main())


def test_connection_close_header_server_close_and_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await _read_request(reader)
        if req is not None and b"/close-after" in req:
            writer.write(_response(200, b"ok", extra="Connection: close\r\n"))
            await writer.drain()
        # otherwise: close without answering
        writer.close()

    async def main() -> None:
        server, hp = await _serve(handler)
        pool = Pool(hp, limit=4, timeout_s=5)
        try:
            ok = build_request("x:1", "/close-after", b"")
            assert (await pool.request(ok))[0] is None
            assert (await pool.request(ok))[0] is None  # a new connection after the close
            assert pool.opened == 2
            kind, detail = await pool.request(REQ)  # closed mid-request
            assert kind == "connection" and detail
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()
        refused = Pool(hp, limit=4, timeout_s=5)  # nothing listens there any more
        try:
            assert (await refused.request(REQ))[0] == "connection"
        finally:
            await refused.close()

    _run(main())


def test_silent_server_times_out_and_the_connection_is_replaced() -> None:
    answer = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await _read_request(reader) is not None:
            if answer.is_set():
                writer.write(_response(200, b"ok"))
        writer.close()

    async def main() -> None:
        server, hp = await _serve(handler)
        pool = Pool(hp, limit=2, timeout_s=0.2)
        try:
            t = time.perf_counter()
            results = await asyncio.gather(*(pool.request(REQ) for _ in range(4)))
            took = time.perf_counter() - t
            # two connections time out; the two queued requests time out waiting for them
            assert [k for k, _ in results] == ["timeout"] * 4
            assert 0.15 <= took < 3.0
            assert pool.connections == 0  # timed-out connections are dropped, not reused
            answer.set()
            assert (await pool.request(REQ))[0] is None
        finally:
            await pool.close()
            server.close()

    _run(main())


def test_garbage_response_is_a_bad_response() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()  # the client hangs up on a response it cannot parse
        writer.close()
        closed.set()

    async def main() -> None:
        server, hp = await _serve(handler)
        pool = Pool(hp, limit=1, timeout_s=5)
        try:
            assert (await pool.request(REQ))[0] == "bad_response"
            await asyncio.wait_for(closed.wait(), 2)
        finally:
            await pool.close()
            server.close()

    _run(main())
