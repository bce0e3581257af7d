"""Signals through a real Prometheus (Debian's prometheus 2.42) scraping a real Triton.

The gateway's Prometheus path (`adapters.gateway.signals`) runs its real PromQL queries through
prometheus-api-client against a Prometheus started here on a free loopback port; only the router
is replaced by a recorder of the signals it would receive.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_api_client import PrometheusConnect

from adapters.gateway import signals
from adapters.tritonbin import TritonInstall
from adapters.tritoncontrol import GrpcTritonControl
from adapters.tritonschema import ProtobufSchema
from controlplane.configgen import Renderer
from controlplane.fleet import Server
from controlplane.spec import ModelSpec
from tests.support import DOUBLE_PY, prometheus_server, python_spec, start_fleet, wait_until

pytestmark = pytest.mark.triton


class SignalRecorder:
    def __init__(self, metrics_urls: dict[str, str]) -> None:
        self.metrics_urls = metrics_urls
        self.signals: dict[str, Any] = {}

    def set_signal(self, server_id: str, signal: Any) -> None:
        self.signals[server_id] = signal


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
            config = Renderer(ProtobufSchema()).render(spec).json()
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
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        prom_client = PrometheusConnect(url=url, disable_ssl=True)
        recorder = SignalRecorder({server.id: server.metrics_url})

        def has_latency() -> bool:
            for _ in range(20):
                client.infer("m", [inp])
            results = {k: prom_client.custom_query(query=q) for k, q in signals._QUERIES.items()}
            signals.apply_prometheus(recorder, results, time.monotonic())  # type: ignore[arg-type]
            sig = recorder.signals.get(server.id)
            # Rates need two scrapes with traffic between them: wait until there is one.
            return sig is not None and sig.latency_s > 0

        wait_until(has_latency, 60)
        sig = recorder.signals[server.id]
        # The model answers in well under a second; Prometheus agrees with Triton's counters.
        assert 0 < sig.latency_s < 1.0, sig
        assert 0 <= sig.queue_s < sig.latency_s, sig
        assert sig.pending >= 0, sig
        client.close()
