"""The autopilot's Prometheus path: a real Prometheus 2.42 scraping a real gateway and Triton.

This is how a control plane reads load when the gateway runs in another pod (the Helm chart):
`PrometheusSignals` runs its PromQL through prometheus-api-client against the gateway's own
histograms and Triton's counters. The gateway and Triton here are the real ones `tritonfleet up`
runs (`Runtime`); only the reading side is exercised apart, so its numbers can be compared
with what the in-process path (`GatewaySignals`) measured over the same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from adapters.loadsignals import PrometheusSignals
from adapters.runtime import Runtime
from controlplane.spec import ModelSpec
from tests.support import eventually, prometheus_server, stepper_spec, up_settings

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian prometheus missing"),
]

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}
).encode()


def test_prometheus_signals_match_the_gateway(tmp_path: Path) -> None:
    async def scenario() -> None:
        rt = await Runtime(up_settings(tmp_path, servers=1)).start()
        try:
            assert rt.registry is not None and rt.reconciler is not None and rt.gateway
            spec = ModelSpec.model_validate(stepper_spec("promm"))
            await rt.registry.register(spec)
            assert await rt.reconciler.ensure("promm", 60)
            server = rt.reconciler.state.snapshot.servers[0]
            assert server.metrics_url is not None
            triton = server.metrics_url.split("//", 1)[1].split("/", 1)[0]
            gateway = rt.gateway.http_url.removeprefix("http://")
            gw_url = rt.gateway.http_url

            async def traffic() -> None:
                async with httpx.AsyncClient(base_url=gw_url, timeout=10) as c:
                    while True:
                        await asyncio.gather(
                            *(c.post("/v2/models/promm/infer", content=BODY) for _ in range(8))
                        )

            load = asyncio.create_task(traffic())
            try:
                with prometheus_server([gateway, triton], tmp_path) as url:
                    source = PrometheusSignals(url)
                    models = {"promm": (spec, [server])}

                    # Short windows on both paths: Prometheus has only scraped for seconds, and
                    # rate() over a range longer than its data under-reads.
                    async def measured() -> bool:
                        got = await source.read(models, 5, 5, time.time())
                        m = got.get("promm")
                        return (
                            m is not None and m.capacity_rps is not None and m.stable.completed > 50
                        )

                    await eventually(measured, 60, interval_s=0.5)
                    m = (await source.read(models, 5, 5, time.time()))["promm"]
                    inproc = rt.gateway.metrics.log.window("promm", 5, time.time())
                    # Same requests, two paths; Prometheus' rate() extrapolates: roughly equal.
                    assert m.stable.p95_s is not None and inproc.p95_s is not None
                    assert 0.01 < m.stable.p95_s < 1.0
                    assert m.stable.errors == 0 and m.stable.rejected == 0
                    ratio = m.stable.completed / max(inproc.completed, 1)
                    assert 0.3 < ratio < 3, (m.stable, inproc)
                    # 15 ms + 1 ms per request in batches of up to 4: ~60 to ~210 a second
                    assert m.capacity_rps is not None and 40 < m.capacity_rps < 300, m
                    assert m.last_request_at is not None and m.fresh
                    # A model without series is stale (absent), never "no load".
                    ghost = {"ghost": (spec, [server])}
                    assert await source.read(ghost, 30, 5, time.time()) == {}
                # Prometheus gone: the read fails, and the autopilot turns that into a hold.
                with pytest.raises(Exception):  # noqa: B017 - any transport error will do
                    await source.read(models, 30, 5, time.time())
            finally:
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load
        finally:
            await rt.stop()

    asyncio.run(scenario())
