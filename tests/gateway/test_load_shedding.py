"""Triton sheds load with the status of a failing server: HTTP 503 / gRPC UNAVAILABLE with
"Request timeout expired" (the model's queue timeout, or the client's own `timeout`
parameter when the queue policy allows it) or "Exceeds maximum queue size". A replica that
sheds is alive: the gateway must not eject it (that moves its load onto the others), and a
request that waited out its timeout must not be sent again. Real Triton, two servers, a
300 ms model with one instance, so concurrent requests queue."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tritonclient.grpc import service_pb2

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.demofleet import DemoModel, load_everywhere
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.grpcproto import Status
from adapters.gateway.h2wire import DATA, END_STREAM, frame
from tests.gateway.hostile_h2 import RawH2, Reply, message
from tests.gateway.support import Env

pytestmark = pytest.mark.triton


class _Queued(DemoModel):
    """A DemoModel with a queue policy: `timeout` the client may shorten, or a queue cap."""

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.name.endswith("_timeout"):
            policy = {"allow_timeout_override": True, "default_timeout_microseconds": 10_000_000}
        else:
            policy = {"max_queue_size": 1}
        cfg["dynamic_batching"] = {"default_queue_policy": policy}
        return cfg


TIMEOUT = _Queued("shed_timeout", "TYPE_FP32", "double", service_ms=300.0, max_batch_size=1)
QUEUE = _Queued("shed_queue", "TYPE_FP32", "double", service_ms=300.0, max_batch_size=1)


@pytest.fixture
def gw(env: Env) -> Iterator[Gateway]:
    for m in (TIMEOUT, QUEUE):
        if not env.directory.replicas(m.name):
            env.loop.run(load_everywhere(env.snapshot, [m]))
    d = StaticDirectory()
    for m in (TIMEOUT, QUEUE):
        d.put(m.name, env.snapshot.servers)
    config = GatewayConfig(http_port=0, grpc_port=0, grpc_door="h2", policy="round-robin")
    g = Gateway(config, d)
    env.loop.run(g.start())
    yield g
    env.loop.run(g.stop())


def _http_burst(url: str, model: str, n: int, timeout_us: int | None) -> list[int]:
    body: dict[str, Any] = {
        "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    }
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as c:
            rs = await asyncio.gather(
                *(c.post(f"{url}/v2/models/{model}/infer", json=body) for _ in range(n))
            )
        return [r.status_code for r in rs]

    return asyncio.run(burst())


def _ejections_and_503_retries(g: Gateway) -> tuple[bool, bool]:
    text = g.metrics.render().decode()
    return "ejections_total{" in text, 'reason="503"' in text or 'reason="unavailable"' in text


def test_http_queue_timeouts_pass_through_without_ejection_or_retry(gw: Gateway) -> None:
    statuses = _http_burst(gw.http_url, TIMEOUT.name, 8, timeout_us=1000)
    assert statuses.count(503) >= 4, statuses  # each replica runs one, the rest time out
    assert statuses.count(200) >= 2, statuses
    ejected, retried = _ejections_and_503_retries(gw)
    assert not ejected
    assert not retried  # a timed-out request has spent its time: never sent twice


def test_http_full_queues_do_not_eject(gw: Gateway) -> None:
    statuses = _http_burst(gw.http_url, QUEUE.name, 8, timeout_us=None)
    assert 503 in statuses and 200 in statuses, statuses
    ejected, _ = _ejections_and_503_retries(gw)
    assert not ejected  # (a refusal by a full queue may be retried on the other replica)


def test_grpc_queue_timeouts_pass_through_without_ejection_or_retry(gw: Gateway) -> None:
    req = service_pb2.ModelInferRequest(model_name=TIMEOUT.name)
    t = req.inputs.add()
    t.name, t.datatype = "INPUT0", "FP32"
    t.shape.extend([1, 4])
    req.raw_input_contents.append(b"\x00" * 16)
    req.parameters["timeout"].int64_param = 1000
    body = message(req.SerializeToString())
    assert gw.grpc_url is not None
    url = gw.grpc_url

    async def burst() -> list[int | None]:
        c = await RawH2.connect(url)
        try:
            sids = [1 + 2 * k for k in range(8)]
            for sid in sids:
                c.send(c.headers(sid, "ModelInfer"), frame(DATA, END_STREAM, sid, body))
            await c.flush()
            done = lambda: all(c.replies.get(s, Reply()).status is not None for s in sids)  # noqa: E731
            await c.until(done, 20.0)
            return [c.replies.get(s, Reply()).status for s in sids]
        finally:
            c.close()

    statuses = asyncio.run(burst())
    assert statuses.count(Status.UNAVAILABLE) >= 4, statuses
    assert statuses.count(Status.OK) >= 2, statuses
    ejected, retried = _ejections_and_503_retries(gw)
    assert not ejected
    assert not retried


def test_the_grpcio_door_tells_shedding_from_failure_too(env: Env, gw: Gateway) -> None:
    # The same directory behind the other gRPC door (`grpc_door: grpcio`), with tritonclient
    # sending the KServe `timeout` parameter.
    import concurrent.futures

    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    d = StaticDirectory()
    d.put(TIMEOUT.name, env.snapshot.servers)
    config = GatewayConfig(http_port=0, grpc_port=0, grpc_door="grpcio", policy="round-robin")
    g = Gateway(config, d)
    env.loop.run(g.start())
    assert g.grpc_url is not None
    url = g.grpc_url

    def one(_: int) -> str:
        c = grpcclient.InferenceServerClient(url)
        x = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), np.float32))
        try:
            c.infer(TIMEOUT.name, [x], timeout=1000)
            return "OK"
        except InferenceServerException as exc:
            return str(exc.status())
        finally:
            c.close()

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(8)))
        assert statuses.count("StatusCode.UNAVAILABLE") >= 4, statuses
        ejected, retried = _ejections_and_503_retries(g)
        assert not ejected
        assert not retried
    finally:
        env.loop.run(g.stop())
