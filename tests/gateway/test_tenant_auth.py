"""Gateway auth per tenant against real Triton servers (the session fleet), through both doors
with unmodified tritonclient: no or a bad token is 401 / UNAUTHENTICATED; another tenant's
model is the same 404 / NOT_FOUND as a model that does not exist; a tenant over its rate
limit gets 429 with Retry-After (RESOURCE_EXHAUSTED on gRPC)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.grpcproto import Status
from adapters.gateway.h2wire import DATA, END_STREAM, frame
from controlplane.replicas import ModelRouting
from controlplane.tenants import Quota, Tenant, TenantIndex, hash_token
from tests.gateway.cases import CASES, check
from tests.gateway.hostile_h2 import RawH2, Reply, infer_request, message
from tests.gateway.support import Env

pytestmark = pytest.mark.triton

TOKENS = {"a": "tft_token-of-a", "b": "tft_token-of-b", "slow": "tft_token-of-slow"}
ADMIN = "gateway-admin-token"


@pytest.fixture(scope="module")
def gw(env: Env) -> Iterator[Gateway]:
    directory = StaticDirectory()
    directory.register(ModelRouting(name="double_fp32", tenant="a"))
    directory.register(ModelRouting(name="add1_int64", tenant="slow"))
    directory.register(ModelRouting(name="echo_bytes"))  # of no tenant: any valid token
    for model in ("double_fp32", "add1_int64", "echo_bytes"):
        directory.put(model, env.snapshot.servers)
    index = TenantIndex(
        [
            Tenant("a", hash_token(TOKENS["a"]), Quota(), 0.0),
            Tenant("b", hash_token(TOKENS["b"]), Quota(), 0.0),
            Tenant("slow", hash_token(TOKENS["slow"]), Quota(requests_per_s=0.01, burst=2), 0.0),
            Tenant("gone", hash_token("tft_revoked"), Quota(), 0.0, revoked_at=1.0),
        ]
    )
    config = GatewayConfig(http_port=0, grpc_port=0, auth="tenants")
    gateway = Gateway(config, directory, tenants=index, admin_token=ADMIN)
    env.loop.run(gateway.start())
    yield gateway
    env.loop.run(gateway.stop())


def _http_infer(gw: Gateway, model: str, token: str | None) -> object:
    dtype, x, _ = CASES.get(model, CASES["double_fp32"])
    i = httpclient.InferInput("INPUT0", list(x.shape), dtype)
    i.set_data_from_numpy(x)
    c = httpclient.InferenceServerClient(gw.http_url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return c.infer(model, [i], headers=headers).as_numpy("OUTPUT0")


def _grpc_infer(gw: Gateway, model: str, token: str | None) -> object:
    dtype, x, _ = CASES.get(model, CASES["double_fp32"])
    i = grpcclient.InferInput("INPUT0", list(x.shape), dtype)
    i.set_data_from_numpy(x)
    assert gw.grpc_url is not None
    c = grpcclient.InferenceServerClient(gw.grpc_url)
    try:
        headers = {"authorization": f"Bearer {token}"} if token else None
        return c.infer(model, [i], headers=headers).as_numpy("OUTPUT0")
    finally:
        c.close()


def _http_error(gw: Gateway, model: str, token: str | None) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as e:
        _http_infer(gw, model, token)
    return str(e.value.status()), e.value.message()


def _grpc_error(gw: Gateway, model: str, token: str | None) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as e:
        _grpc_infer(gw, model, token)
    return str(e.value.status()), e.value.message()


def test_own_model_and_shared_model_and_admin_are_served(gw: Gateway) -> None:
    check("double_fp32", _http_infer(gw, "double_fp32", TOKENS["a"]))
    check("double_fp32", _grpc_infer(gw, "double_fp32", TOKENS["a"]))
    check("echo_bytes", _http_infer(gw, "echo_bytes", TOKENS["b"]))
    check("double_fp32", _http_infer(gw, "double_fp32", ADMIN))
    check("double_fp32", _grpc_infer(gw, "double_fp32", ADMIN))


def test_another_tenants_model_is_exactly_an_unknown_model(gw: Gateway) -> None:
    status, message = _http_error(gw, "double_fp32", TOKENS["b"])
    unknown = _http_error(gw, "no_such_model", TOKENS["b"])
    assert status == "404" and unknown[0] == "404"
    assert message.replace("double_fp32", "X") == unknown[1].replace("no_such_model", "X")
    status, message = _grpc_error(gw, "double_fp32", TOKENS["b"])
    unknown = _grpc_error(gw, "no_such_model", TOKENS["b"])
    assert status == "StatusCode.NOT_FOUND" and unknown[0] == status
    assert message.replace("double_fp32", "X") == unknown[1].replace("no_such_model", "X")
    # Metadata and readiness of A's model are hidden from B the same way.
    r = httpx.get(
        f"{gw.http_url}/v2/models/double_fp32", headers={"Authorization": f"Bearer {TOKENS['b']}"}
    )
    assert r.status_code == 404


@pytest.mark.parametrize("token", [None, "tft_wrong", "tft_revoked"])
def test_no_or_a_bad_token_is_401(gw: Gateway, token: str | None) -> None:
    status, message = _http_error(gw, "double_fp32", token)
    assert status == "401" and "Bearer" in message
    assert _http_error(gw, "no_such_model", token)[0] == "401"  # the same for every model
    assert _grpc_error(gw, "double_fp32", token)[0] == "StatusCode.UNAUTHENTICATED"
    r = httpx.get(f"{gw.http_url}/v2/models/double_fp32", headers={"Authorization": "Basic x"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{gw.http_url}/v2/health/ready").status_code == 200  # probes stay open


def test_rate_limit_is_429_with_retry_after(gw: Gateway) -> None:
    check("add1_int64", _http_infer(gw, "add1_int64", TOKENS["slow"]))
    check("add1_int64", _grpc_infer(gw, "add1_int64", TOKENS["slow"]))  # burst of 2 spent
    headers = {"Authorization": f"Bearer {TOKENS['slow']}"}
    r = httpx.get(f"{gw.http_url}/v2/models/add1_int64/ready", headers=headers)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "rate limit" in r.json()["error"]
    assert _grpc_error(gw, "add1_int64", TOKENS["slow"])[0] == "StatusCode.RESOURCE_EXHAUSTED"
    check("double_fp32", _http_infer(gw, "double_fp32", TOKENS["a"]))  # other tenants unaffected


def test_the_grpcio_door_checks_the_same(env: Env) -> None:
    directory = StaticDirectory()
    directory.register(ModelRouting(name="double_fp32", tenant="a"))
    directory.put("double_fp32", env.snapshot.servers)
    index = TenantIndex([Tenant(t, hash_token(TOKENS[t]), Quota(), 0.0) for t in ("a", "b")])
    config = GatewayConfig(http_port=0, grpc_port=0, auth="tenants", grpc_door="grpcio")
    gateway = Gateway(config, directory, tenants=index)
    env.loop.run(gateway.start())
    try:
        check("double_fp32", _grpc_infer(gateway, "double_fp32", TOKENS["a"]))
        assert _grpc_error(gateway, "double_fp32", TOKENS["b"])[0] == "StatusCode.NOT_FOUND"
        assert _grpc_error(gateway, "double_fp32", None)[0] == "StatusCode.UNAUTHENTICATED"
    finally:
        env.loop.run(gateway.stop())


@pytest.mark.parametrize("first_valid", [True, False])
def test_two_authorization_headers_are_a_401_whatever_their_order(
    gw: Gateway, first_valid: bool
) -> None:
    # As the control API: which one counts would be a guess, and a proxy that appends its own
    # must not turn a caller into someone else (HTTP took the last, h2 the first).
    values = [f"Bearer {ADMIN}", "Bearer tft_wrong"]
    if not first_valid:
        values.reverse()
    r = httpx.get(
        f"{gw.http_url}/v2/models/double_fp32",
        headers=[("Authorization", values[0]), ("Authorization", values[1])],
    )
    assert r.status_code == 401, r.text
    assert gw.grpc_url is not None
    url = gw.grpc_url

    async def call() -> int | None:
        c = await RawH2.connect(url)
        try:
            extra = tuple(("authorization", v) for v in values)
            c.send(
                c.headers(1, "ModelInfer", extra=extra),
                frame(DATA, END_STREAM, 1, message(infer_request("double_fp32"))),
            )
            await c.flush()
            await c.until(lambda: c.replies.get(1, Reply()).status is not None, 10.0)
            return c.replies.get(1, Reply()).status
        finally:
            c.close()

    assert asyncio.run(call()) == Status.UNAUTHENTICATED
    # Either header alone does what it says.
    ok = httpx.get(
        f"{gw.http_url}/v2/models/double_fp32", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert ok.status_code == 200
