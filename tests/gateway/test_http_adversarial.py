"""Hostile HTTP/1.1 clients against a real gateway in front of a real Triton.

Each class of the issue: malformed heads refused with their status and a close, never
forwarded (Triton's own counters prove it); smuggling attempts that would desynchronise the
shared keep-alive upstream connection; pipelined floods capped in bytes; clients that do not
read their (1 MiB) replies; slowloris. While each runs, a well-behaved client keeps being
answered. The same attacks, with numbers, are in `benchmarks.gateway_hostile`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import tritonclient.http as httpclient

from adapters.gateway.config import GatewayConfig
from adapters.gateway.demofleet import DemoModel
from adapters.tritonbin import TritonInstall
from tests.gateway import hostile
from tests.gateway.support import Env, run_async, start_env, stop_env
from tests.support import eventually

pytestmark = pytest.mark.triton

DOUBLE = DemoModel("double_fp32", "TYPE_FP32", "double")
BIG_FLOATS = 256 * 1024  # 1 MiB of FP32 each way
BIG = DemoModel("echo_big", "TYPE_FP32", "echo", dims=(BIG_FLOATS,), max_batch_size=1)
PIPELINED_CAP = 256 * 1024
GOOD = hostile.infer_request(DOUBLE.name, hostile.double_body())


@pytest.fixture(scope="module")
def gw(triton_install: TritonInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = start_env(
        triton_install,
        tmp_path_factory.mktemp("hostile"),
        servers=1,
        models=(DOUBLE, BIG),
        config=GatewayConfig(
            http_port=0,
            grpc_port=None,
            max_body_bytes=4 << 20,
            max_pipelined_bytes=PIPELINED_CAP,
            header_timeout_s=2.0,
        ),
    )
    yield e
    stop_env(e)


def _addr(env: Env) -> tuple[str, int]:
    host, port = env.http.split(":")
    return host, int(port)


def _forwarded(env: Env) -> int:
    """Requests the gateway sent to a replica (local answers have no replica)."""
    return int(
        env.loop.call(lambda: sum(v for k, v in env.gateway.metrics.requests.items() if k[1]))
    )


def _triton_inferences(env: Env) -> int:
    c = httpclient.InferenceServerClient(env.snapshot.servers[0].http_url.removeprefix("http://"))
    stats = c.get_inference_statistics(DOUBLE.name)["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


@pytest.mark.parametrize("name", list(hostile.MALFORMED))
def test_malformed_head_is_refused_and_closed(gw: Env, name: str) -> None:
    raw, status = hostile.MALFORMED[name]
    before = _forwarded(gw)
    got, data = run_async(hostile.refused(*_addr(gw), raw))
    assert got == status, data[:300]
    assert data.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in data
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
    assert _forwarded(gw) == before


SMUGGLE = hostile.infer_request(DOUBLE.name, hostile.double_body())


@pytest.mark.parametrize(
    "raw",
    [
        # CL.TE: a chunked-aware back end would see the body end at "0" and a second request
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s" % (5 + len(SMUGGLE), SMUGGLE),
        # TE.CL
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLE), SMUGGLE),
        # two lengths: whichever one a back end picks, the other leaves a request behind
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLE), SMUGGLE),
        # an obs-folded Transfer-Encoding some parsers join to the previous line
        b"POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"X-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\n%s" % (len(SMUGGLE), SMUGGLE),
    ],
    ids=["cl-te", "te-cl", "two-cl", "folded-te"],
)
def test_smuggling_attempts_reach_nothing(gw: Env, raw: bytes) -> None:
    before = _triton_inferences(gw)
    got, data = run_async(hostile.refused(*_addr(gw), raw))
    assert got == 400 and data.count(b"HTTP/1.1 ") == 1, data[:300]
    # the shared upstream connections still answer each well-behaved request with its own reply
    for _ in range(5):
        status, body = _good_request(gw)
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2, 4, 6, 8]
    assert _triton_inferences(gw) == before + 5  # the smuggled inference never ran


def _good_request(env: Env) -> tuple[int, bytes]:
    async def one() -> tuple[int, bytes]:
        r, w = await asyncio.open_connection(*_addr(env))
        try:
            w.write(GOOD)
            status, _, body = await hostile.read_reply(r)
            return status, body
        finally:
            w.close()

    return run_async(one())


def test_a_refusal_behind_replies_owed_comes_in_its_turn(gw: Env) -> None:
    raw, _ = hostile.MALFORMED["obs_fold"]

    async def t() -> bytes:
        r, w = await asyncio.open_connection(*_addr(gw))
        w.write(GOOD * 3 + raw + GOOD)
        try:
            return await hostile.read_until_closed(r)
        finally:
            w.close()

    data = run_async(t())
    statuses = [
        int(data[i + 9 : i + 12]) for i in range(len(data)) if data.startswith(b"HTTP/1.1 ", i)
    ]
    assert statuses == [200, 200, 200, 400]


def test_pipelined_bytes_are_capped(gw: Env) -> None:
    """4 MiB of pipelined requests, none of the replies read: once the door stops reading,
    it holds at most the cap (plus the request that crossed it), then answers every one, in
    order."""
    n = (4 << 20) // len(GOOD)

    def stopped_reading() -> bool:
        return any(c.reading_paused for c in gw.gateway.http.clients)

    async def t() -> tuple[int, int]:
        r, w = await asyncio.open_connection(*_addr(gw))
        w.write(GOOD * n)
        await eventually(lambda: gw.loop.call(stopped_reading), 30)
        peak = gw.loop.call(
            lambda: max((c.queued_bytes for c in gw.gateway.http.clients), default=0)
        )
        got = 0
        for _ in range(n):
            status, _, body = await hostile.read_reply(r, 20)
            assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2, 4, 6, 8]
            got += 1
        w.close()
        return peak, got

    peak, got = run_async(t())
    assert got == n
    assert 0 < peak <= PIPELINED_CAP + len(GOOD)


def test_slow_reader_of_1mib_replies_holds_less_than_one_reply(gw: Env) -> None:
    """Eight 1 MiB replies asked for and none read: the replica's connection is paused with
    less than one reply in the gateway; reading resumes the flow, every byte arrives."""
    req = hostile.big_request(BIG.name, BIG_FLOATS)

    async def t() -> tuple[int, bool, list[int]]:
        r, w = await hostile.open_small_window(*_addr(gw))
        w.write(req * 8)
        await w.drain()

        def upstream_paused() -> bool:
            return any(
                c.upstream is not None and c.upstream.paused for c in gw.gateway.http.clients
            )

        await eventually(lambda: gw.loop.call(upstream_paused), 30)

        def held() -> tuple[int, bool]:
            (c,) = [c for c in gw.gateway.http.clients if c.upstream is not None or c.queue]
            assert c.transport is not None
            up = c.upstream
            return c.transport.get_write_buffer_size(), up is not None and up.paused

        buffered, paused = gw.loop.call(held)
        sizes = []
        for _ in range(8):
            status, _, body = await hostile.read_reply(r, 20)
            assert status == 200
            sizes.append(len(body))
        w.close()
        return buffered, paused, sizes

    buffered, paused, sizes = run_async(t())
    assert paused and buffered < 1 << 20, buffered
    assert all(s > 4 * BIG_FLOATS for s in sizes)  # JSON header + 1 MiB of binary output


ATTACKS: dict[str, Callable[[str, int], Awaitable[object]]] = {
    "malformed_flood": lambda host, port: hostile.flood_malformed(host, port, 1.5),
    "pipelined_flood": lambda host, port: hostile.pipeline_without_reading(
        host, port, GOOD, 16 << 20, 1.5
    ),
    "slow_readers": lambda host, port: hostile.slow_readers(
        host, port, hostile.big_request(BIG.name, BIG_FLOATS), 20, 1.5, 64 * 1024
    ),
    "slowloris": lambda host, port: hostile.slowloris(host, port, 1.5, 50),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_others_are_served_during_each_attack(gw: Env, attack: str) -> None:
    host, port = _addr(gw)

    async def t() -> dict[str, float]:
        prober = await hostile.while_probing(host, port, GOOD, lambda: ATTACKS[attack](host, port))
        return prober.summary()

    t0 = time.monotonic()
    s = run_async(t())
    assert time.monotonic() - t0 < 30
    assert s["errors"] == 0 and s["n"] >= 10, s
    # the test's attackers share the gateway's process (and GIL); the benchmark runs the
    # gateway on its own and records the tail (docs/gateway.md)
    assert s["p50_ms"] < 100, s
