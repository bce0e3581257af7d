"""Hostile model names and churning fleets cannot grow the gateway's memory or its /metrics.

No Triton needed: requests for unregistered models are answered by the gateway itself, and the
router's bookkeeping is driven directly with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.metrics import UNREGISTERED, GatewayMetrics
from adapters.gateway.router import FORGET_S, Router
from controlplane.replicas import ModelRouting, Replica

MADE_UP = 5000
METRICS_LIMIT_BYTES = 8 * 1024  # what /metrics stays under after MADE_UP made-up names


async def _http_made_up(host: str, port: int, n: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    body = b"{}"
    for i in range(n):
        writer.write(
            b"POST /v2/models/made-up-%d/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (i, len(body), body)
        )
        if i % 100 == 99 or i == n - 1:  # pipelined in batches, answered in order
            await writer.drain()
            for _ in range(min(100, i % 100 + 1)):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 404"), head
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _grpc_made_up(url: str, n: int) -> None:
    client = grpcclient.InferenceServerClient(url)
    try:
        for i in range(n):
            try:
                await client.get_model_metadata(f"grpc-made-up-{i}")
            except InferenceServerException as exc:
                assert "not registered" in str(exc)
    finally:
        await client.close()


def test_made_up_model_names_do_not_grow_metrics() -> None:
    async def scenario() -> bytes:
        directory = StaticDirectory()
        directory.register(ModelRouting(name="real"))
        gw = Gateway(GatewayConfig(http_port=0, grpc_port=0), directory)
        await gw.start()
        try:
            await _http_made_up(gw.config.host, gw.http_port, MADE_UP)
            assert gw.grpc_url is not None
            await _grpc_made_up(gw.grpc_url, 500)
            reader, writer = await asyncio.open_connection(gw.config.host, gw.http_port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            text = await reader.read()
            writer.close()
            return text
        finally:
            await gw.stop()

    text = asyncio.run(scenario())
    assert len(text) < METRICS_LIMIT_BYTES, len(text)
    assert b"made-up" not in text
    assert (
        b'tritonfleet_gateway_rejections_total{model="(unregistered)",reason="unknown_model"} '
        + str(MADE_UP + 500).encode()
    ) in text


def test_metrics_label_only_registered_models_and_at_most_max_models() -> None:
    known = {f"m{i}" for i in range(5)}
    metrics = GatewayMetrics(max_models=3)
    metrics.registered = known.__contains__
    for i in range(10_000):
        name = f"junk-{i}"
        metrics.rejections[name, "unknown_model"] += 1
        metrics.retries[name, "connect"] += 1
        metrics.cold_holds[name, "timeout"] += 1
    metrics.local("junk-0", "http", "503")  # only registered models get here; folded anyway
    for m in sorted(known):
        metrics.observe(m, "s0", "http", "200", 0.001)
    assert metrics.rejections[UNREGISTERED, "unknown_model"] == 10_000
    assert metrics.rejections["junk-7", "unknown_model"] == 10_000  # read through the fold
    for family in (metrics.rejections, metrics.retries, metrics.cold_holds):
        assert len(family) == 1
    models = {k[0] for k in metrics.requests}
    assert models == {UNREGISTERED, "m0", "m1", "m2", "(other)"}
    assert len(metrics.latency) == 4


def test_router_forgets_servers_that_left_and_idle_pairs() -> None:
    now = [1000.0]
    directory = StaticDirectory()
    router = Router(directory, GatewayConfig(), GatewayMetrics(), clock=lambda: now[0])
    rt = ModelRouting(name="m")

    class Handle:
        def expire(self) -> None:
            pass

    kept = Replica("m", "live", "http://h:1", "h:2", "http://h:3/metrics")
    kept_handle = Handle()
    router.begin(kept, kept_handle)  # still in flight when pruning: must stay
    for i in range(2000):  # a churning fleet: each server used once, then gone
        replica = Replica("m", f"s{i}", "http://h:1", "h:2", f"http://h{i}:3/metrics")
        assert router.admit("m", rt)
        handle = Handle()
        start = router.begin(replica, handle)
        router.end("m", replica, handle, start, ok=True)
        router.release("m")
    assert len(router.servers) == 2001 and len(router.latency) == 2000
    assert router.model_inflight == {}  # no key left at zero
    now[0] += FORGET_S + 1
    router.prune(now[0])
    assert set(router.servers) == {"live"}
    assert router.latency == {}
    assert router.metrics_urls == {"live": "http://h:3/metrics"}
    assert router.inflight("m", "live") == 1
