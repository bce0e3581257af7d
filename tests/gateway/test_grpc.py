"""KServe v2 over gRPC through the gateway, with unmodified tritonclient (sync and asyncio).

Every test runs against both gRPC doors (`grpc_door`: the HTTP/2 frame relay and grpcio).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.utils import InferenceServerException

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.grpcdoor import field1_string
from tests.gateway import support
from tests.gateway.cases import CASES, check
from tests.gateway.support import Env, run_async
from tests.support import eventually

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module", params=["h2", "grpcio"])
def door(request: pytest.FixtureRequest, env: Env) -> Iterator[Gateway]:
    """A gateway whose gRPC door is of the given kind, over the session's fleet."""
    if env.gateway.config.grpc_door == request.param:
        yield env.gateway
        return
    config = env.gateway.config.model_copy(update={"grpc_door": request.param})
    gw = Gateway(GatewayConfig.model_validate(config.model_dump()), env.directory)
    env.loop.run(gw.start())
    try:
        yield gw
    finally:
        env.loop.run(gw.stop())


@pytest.fixture(scope="module")
def grpc_url(door: Gateway) -> str:
    """host:port of the gRPC door."""
    assert door.grpc_url is not None
    return door.grpc_url


@pytest.fixture(scope="module")
def slow_model(env: Env) -> str:
    """A model that takes 2 s per request, on the fleet's first server."""
    return support.slow_model(env)


def _inputs(mod: object, model: str) -> list[object]:
    dtype, x, _ = CASES[model]
    i = mod.InferInput("INPUT0", list(x.shape), dtype)  # type: ignore[attr-defined]
    i.set_data_from_numpy(x)
    return [i]


@pytest.mark.parametrize("model", list(CASES))
def test_sync_infer(grpc_url: str, model: str) -> None:
    c = grpcclient.InferenceServerClient(grpc_url)
    try:
        check(model, c.infer(model, _inputs(grpcclient, model)).as_numpy("OUTPUT0"))
    finally:
        c.close()


@pytest.mark.parametrize("model", list(CASES))
def test_aio_infer(grpc_url: str, model: str) -> None:
    async def go() -> np.ndarray:
        c = aiogrpcclient.InferenceServerClient(grpc_url)
        try:
            return (await c.infer(model, _inputs(aiogrpcclient, model))).as_numpy("OUTPUT0")
        finally:
            await c.close()

    check(model, run_async(go()))


def test_stream_infer(grpc_url: str) -> None:
    results: list[object] = []
    c = grpcclient.InferenceServerClient(grpc_url)
    try:
        c.start_stream(callback=lambda result, error: results.append(error or result))
        for _ in range(3):
            c.async_stream_infer("double_fp32", _inputs(grpcclient, "double_fp32"))
        c.stop_stream()
    finally:
        c.close()
    assert len(results) == 3
    for r in results:
        assert not isinstance(r, Exception), r
        check("double_fp32", r.as_numpy("OUTPUT0"))  # type: ignore[attr-defined]


def test_cancelled_call_gives_back_everything(door: Gateway, env: Env, slow_model: str) -> None:
    """A client that gives up (its deadline passes, the call is cancelled) releases the
    model's admission and the replica's in-flight count, on both doors: a leaked count would
    make the hot-cold policy see the replica as stuck forever."""
    router = door.router
    server = env.snapshot.servers[0].id

    async def give_up() -> None:
        c = aiogrpcclient.InferenceServerClient(door.grpc_url or "")
        try:
            for _ in range(3):
                with pytest.raises(InferenceServerException, match="Deadline"):
                    await c.infer(
                        slow_model, _inputs(aiogrpcclient, "double_fp32"), client_timeout=0.2
                    )
        finally:
            await c.close()

    run_async(give_up())

    def released() -> bool:
        st = router.servers.get(server)
        return (
            slow_model not in router.model_inflight
            and router.inflight(slow_model, server) == 0
            and (st is None or (st.rif == 0 and not st.inflight))
        )

    # the cancels reach the gateway asynchronously; the bound is far above their latency
    env.loop.run(eventually(released, timeout_s=10.0))


def test_server_and_model_endpoints(grpc_url: str) -> None:
    c = grpcclient.InferenceServerClient(grpc_url)
    try:
        assert c.is_server_live() and c.is_server_ready()
        assert c.get_server_metadata().name == "tritonfleet"
        assert c.is_model_ready("echo_bytes")
        assert c.get_model_metadata("double_fp32").inputs[0].name == "INPUT0"
        assert c.get_model_config("add1_int64").config.input[0].name == "INPUT0"
        assert c.get_inference_statistics("double_fp32").model_stats[0].name == "double_fp32"
    finally:
        c.close()


def test_unknown_model_is_not_found(grpc_url: str) -> None:
    c = grpcclient.InferenceServerClient(grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="not registered") as e:
            c.infer("no_such_model", _inputs(grpcclient, "double_fp32"))
        assert e.value.status() == "StatusCode.NOT_FOUND"
    finally:
        c.close()


def test_wrong_shape_passes_tritons_message(grpc_url: str) -> None:
    c = grpcclient.InferenceServerClient(grpc_url)
    try:
        i = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
        i.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        with pytest.raises(
            InferenceServerException, match="unexpected shape for input 'INPUT0'"
        ) as e:
            c.infer("double_fp32", [i])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        c.close()


def test_closed_doors_are_permission_denied(grpc_url: str) -> None:
    c = grpcclient.InferenceServerClient(grpc_url)
    try:
        for call in (
            lambda: c.get_model_repository_index(),
            lambda: c.load_model("double_fp32"),
            lambda: c.unload_model("double_fp32"),
            lambda: c.get_log_settings(),
            lambda: c.update_log_settings({"log_verbose_level": 1}),
            lambda: c.get_system_shared_memory_status(),
            lambda: c.get_trace_settings(),
        ):
            with pytest.raises(InferenceServerException, match=r"tritonfleet|gateway") as e:
                call()
            assert e.value.status() == "StatusCode.PERMISSION_DENIED"
        assert c.is_model_ready("double_fp32")
    finally:
        c.close()


def test_unknown_method_is_unimplemented(grpc_url: str) -> None:
    with grpc.insecure_channel(grpc_url) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/inference.GRPCInferenceService/NoSuchThing")(b"")
        assert e.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_field1_string() -> None:
    from tritonclient.grpc import service_pb2

    msg = service_pb2.ModelInferRequest(model_name="m-1", model_version="2", id="x")
    assert field1_string(msg.SerializeToString()) == "m-1"
    # field order on the wire is not guaranteed: field 1 after others still parses
    tail_first = service_pb2.ModelInferRequest(id="abc").SerializeToString()
    assert field1_string(tail_first + b"\x0a\x03abc") == "abc"
    assert field1_string(b"") == ""
    with pytest.raises(ValueError):
        field1_string(b"\x0a\x80")
