"""Signals through a real Prometheus (Debian's prometheus 2.42) scraping a real Triton.

The gateway's own feed (`adapters.gateway.signalfeed.feed` with `prometheus_url` set) runs its real
PromQL queries through prometheus-api-client against a Prometheus started here on a free
loopback port, into a real `Router`; nothing of the feed is copied or replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import httpx
import pytest

from adapters.gateway import signalfeed
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from adapters.templatefiles import TemplateFiles
from adapters.tritonbin import TritonInstall
from adapters.tritoncontrol import GrpcTritonControl
from adapters.tritonschema import ProtobufSchema
from controlplane.configgen import Renderer
from controlplane.fleet import Server
from controlplane.routing import ServerSignal
from controlplane.spec import ModelSpec
from tests.support import DOUBLE_PY, eventually, prometheus_server, python_spec, start_fleet

pytestmark = pytest.mark.triton


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian prometheus not installed")
def test_prometheus_signals_from_a_real_prometheus(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    async def scenario() -> None:
        fleet = await start_fleet(triton_install, tmp_path / "fleet", servers=1, admin_key=None)
        try:
            server = fleet.snapshot().servers[0]
            control = GrpcTritonControl()
            spec = ModelSpec.model_validate(python_spec("m"))
            config = Renderer(ProtobufSchema(), TemplateFiles()).render(spec).json()
            await control.load(server, "m", config, {"1/model.py": DOUBLE_PY.encode()})
            await control.close()
            await asyncio.to_thread(_with_prometheus, server, tmp_path)
        finally:
            await fleet.stop()

    asyncio.run(scenario())


def _with_prometheus(server: Server, tmp_path: Path) -> None:
    assert server.metrics_url is not None
    target = server.metrics_url.split("//", 1)[1].split("/", 1)[0]
    with prometheus_server([target], tmp_path) as url:
        sig = asyncio.run(_feed_until_latency(server, url))
    # The model answers in well under a second; Prometheus agrees with Triton's counters.
    assert 0 < sig.latency_s < 1.0, sig
    assert 0 <= sig.queue_s < sig.latency_s, sig
    assert sig.pending >= 0, sig


async def _feed_until_latency(server: Server, prometheus_url: str) -> ServerSignal:
    """Run the gateway's own feed (`signalfeed.feed` with `prometheus_url` set) into a real
    router until it has set a latency for `server`, sending requests meanwhile."""
    config = GatewayConfig(prometheus_url=prometheus_url, signal_interval_s=0.5)
    router = Router(StaticDirectory(), config, GatewayMetrics())
    assert server.metrics_url is not None
    router.metrics_urls[server.id] = server.metrics_url  # as `Router.begin` records a replica's
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}
    client = httpx.AsyncClient(base_url=server.http_url, timeout=10)

    async def traffic() -> None:
        for _ in range(20):
            (await client.post("/v2/models/m/infer", json=body)).raise_for_status()

    def latency_set() -> bool:
        st = router.servers.get(server.id)
        return st is not None and st.signal is not None and st.signal.latency_s > 0

    feed = asyncio.create_task(signalfeed.feed(router, config))
    try:
        # Rates need two scrapes with traffic between them: keep sending until there are.
        async def sent_and_seen() -> bool:
            await traffic()
            return latency_set()

        await eventually(sent_and_seen, 60, interval_s=0.2)
        assert not feed.done(), feed
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
        await client.aclose()
    signal = router.servers[server.id].signal
    assert signal is not None
    assert set(router.servers) == {server.id}  # matched by instance, nothing else invented
    return signal
