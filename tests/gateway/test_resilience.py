"""Failing and cold replicas: SIGKILL under load, cold holds, admission control."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.demofleet import DemoModel
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.remote import RemoteDirectory
from adapters.runtime import Runtime
from adapters.tritonbin import TritonInstall
from controlplane.replicas import ModelRouting, Replica, replica_on
from controlplane.spec import ModelSpec
from tests.gateway.support import Env, start_env, stop_env
from tests.support import eventually, python_spec, up_settings, wait_until

pytestmark = pytest.mark.triton

SLOW = DemoModel("slow_double", "TYPE_FP32", "double", service_ms=5.0)


@pytest.fixture(scope="module")
def three(triton_install: TritonInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = start_env(
        triton_install,
        tmp_path_factory.mktemp("three"),
        servers=3,
        models=(SLOW,),
        config=GatewayConfig(http_port=0, grpc_port=None),
    )
    yield e
    stop_env(e)


def _infer(c: httpclient.InferenceServerClient, model: str = SLOW.name) -> np.ndarray:
    i = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    i.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    return c.infer(model, [i]).as_numpy("OUTPUT0")


def test_sigkill_one_of_three_under_load(three: Env) -> None:
    stop = threading.Event()
    ok = [0]
    failures: list[str] = []

    def worker() -> None:
        c = httpclient.InferenceServerClient(three.http, network_timeout=10)
        while not stop.is_set():
            try:
                _infer(c)
                ok[0] += 1
            except InferenceServerException as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: ok[0] >= 100, 60)  # the load is flowing to all three
    victim = three.snapshot.servers[0]
    router = three.gateway.router
    in_flight = three.loop.call(lambda: router.servers[victim.id].rif)
    assert victim.pid is not None
    os.killpg(victim.pid, signal.SIGKILL)
    served_before = ok[0]
    metrics = three.gateway.metrics

    def ejected_and_serving() -> bool:
        text = metrics.render().decode()
        ejected = f'tritonfleet_gateway_ejections_total{{replica="{victim.id}"}} 1' in text
        return ejected and ok[0] >= served_before + 100

    wait_until(ejected_and_serving, 60)  # the victim is out; the other two keep serving
    stop.set()
    for t in threads:
        t.join(15)
    text = three.gateway.metrics.render().decode()
    print(
        f"\nSIGKILL of {victim.id}: {in_flight} requests in flight to it, "
        f"{len(failures)} client-visible failures, {ok[0]} successes"
    )
    assert len(failures) <= in_flight, failures[:3]
    assert f'tritonfleet_gateway_ejections_total{{replica="{victim.id}"}} 1' in text
    assert "tritonfleet_gateway_retries_total" in text


class _Warming(StaticDirectory):
    """A directory whose `ensure` makes replicas appear after `delay_s` (a load, faked in time)."""

    def __init__(self, replicas: Sequence[Replica], delay_s: float) -> None:
        super().__init__()
        self._later = tuple(replicas)
        self._delay_s = delay_s

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        self.ensure_calls.append(model)
        if self._delay_s > timeout_s:
            await asyncio.sleep(timeout_s)
            return ()
        await asyncio.sleep(self._delay_s)
        self.put_replicas(model, self._later)
        return self._later


def _side_gateway(env: Env, directory: StaticDirectory, **cfg: object) -> Gateway:
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, **cfg), directory)  # type: ignore[arg-type]
    env.loop.run(gw.start())
    return gw


def test_cold_model_is_held_until_warm(env: Env) -> None:
    d = _Warming([replica_on(s, "double_fp32") for s in env.snapshot.servers], delay_s=0.5)
    d.register(ModelRouting("double_fp32"))
    gw = _side_gateway(env, d, cold_hold_s=5.0)
    try:
        c = httpclient.InferenceServerClient(gw.http_url.removeprefix("http://"))
        t0 = time.monotonic()
        out = _infer(c, "double_fp32")
        assert time.monotonic() - t0 >= 0.5
        np.testing.assert_array_equal(out, np.full((1, 4), 2.0, dtype=np.float32))
        assert d.ensure_calls == ["double_fp32"]
        assert (
            'cold_holds_total{model="double_fp32",outcome="warm"} 1' in gw.metrics.render().decode()
        )
    finally:
        env.loop.run(gw.stop())


def test_cold_model_past_hold_gets_503_with_retry_after(env: Env) -> None:
    d = _Warming([], delay_s=60)
    d.register(ModelRouting("double_fp32"))
    gw = _side_gateway(env, d, cold_hold_s=0.3, retry_after_s=7)
    try:
        import http.client

        host, port = gw.http_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/v2/models/double_fp32/ready")
        r = conn.getresponse()
        assert r.status == 503
        assert r.getheader("Retry-After") == "7"
        assert b"no ready replica" in r.read()
        conn.close()
    finally:
        env.loop.run(gw.stop())


GATED_PY = """
import json
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.gate = params["gate"]["string_value"]

    def execute(self, requests):
        deadline = time.monotonic() + 60
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x * 2)]))
        return out
"""

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}
).encode()


def test_admission_limit_from_the_spec_is_429_in_both_gateways(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    """`admission: {max_inflight: 1}` in a registered spec reaches the in-process gateway of
    `tritonfleet up` (the reconciler's directory) and a gateway running apart (the control
    API's `/v1/replicas` read by `RemoteDirectory`, as the Helm chart deploys it). A model that
    answers only once the test opens its gate holds exactly one request in flight, so the
    second is refused with 429 and Retry-After, and the limit frees when the first returns."""
    gate = tmp_path / "gate"

    async def scenario() -> None:
        rt = await Runtime(up_settings(tmp_path, servers=1)).start()
        remote = RemoteDirectory(rt.api_url, admin_key=rt.settings.admin_key, interval_s=0.2)
        apart = Gateway(GatewayConfig(http_port=0, grpc_port=None), remote)
        try:
            assert rt.registry is not None and rt.reconciler is not None and rt.gateway
            spec = python_spec("gated", source=GATED_PY, min_replicas=1)
            spec["parameters"] = {"gate": str(gate)}
            spec["admission"] = {"max_inflight": 1}
            await rt.registry.register(ModelSpec.model_validate(spec))
            assert await rt.reconciler.ensure("gated", 60), rt.reconciler.model_status("gated")
            await remote.start()
            await apart.start()
            await eventually(lambda: remote.replicas("gated"), 30)
            for directory in (rt.reconciler, remote):
                routing = directory.routing("gated")
                assert routing is not None and routing.max_queue == 1, routing
            for gw in (rt.gateway, apart):
                await _one_admitted_then_429(gw, gate)
        finally:
            await apart.stop()
            await remote.stop()
            await rt.stop()

    asyncio.run(scenario())


async def _one_admitted_then_429(gw: Gateway, gate: Path) -> None:
    gate.unlink(missing_ok=True)
    url = "/v2/models/gated/infer"
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=60) as client:
        held = asyncio.create_task(client.post(url, content=BODY))
        await eventually(lambda: gw.router.model_inflight.get("gated") == 1, 30)
        refused = await client.post(url, content=BODY)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "admission.max_inflight" in refused.json()["error"]
        gate.touch()
        first = await held
        assert first.status_code == 200, first.text
        assert first.json()["outputs"][0]["data"] == [2.0] * 4
        # the limit is one in flight, not zero: with the first answered, the next is served
        again = await client.post(url, content=BODY)
        assert again.status_code == 200, again.text
    assert 'rejections_total{model="gated",reason="queue_full"} 1' in gw.metrics.render().decode()


def test_refused_connection_is_retried_on_another_replica(env: Env, tmp_path: Path) -> None:
    from adapters.netutil import free_port

    dead = Replica("double_fp32", "dead", f"http://127.0.0.1:{free_port()}", "127.0.0.1:1")
    d = StaticDirectory()
    d.register(ModelRouting("double_fp32"))
    d.put_replicas("double_fp32", [dead, replica_on(env.snapshot.servers[0], "double_fp32")])
    gw = _side_gateway(env, d, policy="round-robin")
    try:
        c = httpclient.InferenceServerClient(gw.http_url.removeprefix("http://"))
        for _ in range(6):
            _infer(c, "double_fp32")
        text = gw.metrics.render().decode()
        assert 'retries_total{model="double_fp32",reason="connect"}' in text
        assert 'ejections_total{replica="dead"} 1' in text
    finally:
        env.loop.run(gw.stop())
