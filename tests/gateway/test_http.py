"""KServe v2 over HTTP through the gateway, with unmodified tritonclient (sync and asyncio)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

from tests.gateway import support
from tests.gateway.cases import CASES, check
from tests.gateway.support import Env, run_async
from tests.support import eventually

pytestmark = pytest.mark.triton


def _inputs(mod: object, model: str, binary: bool) -> list[object]:
    dtype, x, _ = CASES[model]
    i = mod.InferInput("INPUT0", list(x.shape), dtype)  # type: ignore[attr-defined]
    i.set_data_from_numpy(x, binary_data=binary)
    return [i]


def _outputs(mod: object, binary: bool) -> list[object]:
    return [mod.InferRequestedOutput("OUTPUT0", binary_data=binary)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", list(CASES))
def test_sync_infer(env: Env, model: str, binary: bool) -> None:
    c = httpclient.InferenceServerClient(env.http)
    r = c.infer(model, _inputs(httpclient, model, binary), outputs=_outputs(httpclient, binary))
    check(model, r.as_numpy("OUTPUT0"))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", list(CASES))
def test_aio_infer(env: Env, model: str, binary: bool) -> None:
    async def go() -> np.ndarray:
        c = aiohttpclient.InferenceServerClient(env.http)
        try:
            r = await c.infer(
                model,
                _inputs(aiohttpclient, model, binary),
                outputs=_outputs(aiohttpclient, binary),
            )
            return r.as_numpy("OUTPUT0")
        finally:
            await c.close()

    check(model, run_async(go()))


def test_server_and_model_endpoints(env: Env) -> None:
    c = httpclient.InferenceServerClient(env.http)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["name"] == "tritonfleet"
    assert c.is_model_ready("double_fp32")
    meta = c.get_model_metadata("double_fp32")
    assert meta["inputs"][0]["name"] == "INPUT0"
    # model config is a restricted API on the servers: the gateway adds the key itself
    assert c.get_model_config("add1_int64")["input"][0]["data_type"] == "TYPE_INT64"
    stats = c.get_inference_statistics("double_fp32")
    assert stats["model_stats"][0]["name"] == "double_fp32"


def test_unknown_model_is_404(env: Env) -> None:
    c = httpclient.InferenceServerClient(env.http)
    with pytest.raises(InferenceServerException, match="not registered") as e:
        c.infer("no_such_model", _inputs(httpclient, "double_fp32", True))
    assert e.value.status() == "404"
    assert not c.is_model_ready("no_such_model")


def test_wrong_shape_is_400_with_tritons_message(env: Env) -> None:
    c = httpclient.InferenceServerClient(env.http)
    i = httpclient.InferInput("INPUT0", [1, 3], "FP32")
    i.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("double_fp32", [i])
    assert e.value.status() == "400"
    assert "unexpected shape for input 'INPUT0'" in str(e.value)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/double_fp32/load"),
        ("POST", "/v2/repository/models/double_fp32/unload"),
        ("GET", "/v2/logging"),
        ("POST", "/v2/logging"),
        ("GET", "/v2/systemsharedmemory/status"),
        ("POST", "/v2/cudasharedmemory/region/x/register"),
        ("GET", "/v2/trace/setting"),
        ("POST", "/v2/models/double_fp32/trace/setting"),
    ],
)
def test_closed_doors_are_403(env: Env, method: str, path: str) -> None:
    status, body = _raw(
        env, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    assert status == 403
    assert "tritonfleet" in json.loads(body)["error"] or "gateway" in json.loads(body)["error"]


def test_tritonclient_repository_calls_are_refused(env: Env) -> None:
    c = httpclient.InferenceServerClient(env.http)
    with pytest.raises(InferenceServerException, match="managed by tritonfleet"):
        c.unload_model("double_fp32")
    with pytest.raises(InferenceServerException, match="managed by tritonfleet"):
        c.update_log_settings({"log_verbose_level": 1})
    assert c.is_model_ready("double_fp32")  # nothing reached the servers


def test_body_over_limit_is_413_before_reading(env: Env) -> None:
    # Announce 8 MiB (over the 1 MiB limit) but send none of it: the answer must still come.
    status, body = _raw(
        env,
        "POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n",
    )
    assert status == 413
    assert "limit" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("request_text", "status"),
    [
        ("GARBAGE\r\n\r\n", 400),
        ("GET /v2 HTTP/2.0\r\n\r\n", 505),
        (
            "POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            411,
        ),
        ("GET /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        ("GET /v2 HTTP/1.1\r\n\r\n", 400),  # no Host (RFC 9112 section 3.2)
        ("GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n\r\n", 400),
        (
            "POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: x1\r\n\r\n",
            400,
        ),
    ],
)
def test_client_mistakes_are_4xx(env: Env, request_text: str, status: int) -> None:
    got, body = _raw(env, request_text)
    assert got == status, body
    assert json.loads(body)["error"]


def test_keep_alive_pipelining_and_expect_continue(env: Env) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    )
    one = (
        "POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    with socket.create_connection(_addr(env), timeout=10) as s:
        s.sendall((one * 3).encode())  # three pipelined requests, answered in order
        replies = _read_replies(s, 3)
        assert [st for st, _ in replies] == [200, 200, 200]
        assert all(json.loads(b)["outputs"][0]["data"] == [2, 4, 6, 8] for _, b in replies)
        s.sendall(
            (
                "POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
        )
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body.encode())
        assert _read_replies(s, 1)[0][0] == 200


def test_a_client_that_leaves_gives_its_request_back(env: Env) -> None:
    """A client that closes its connection while its request is at a replica: the request
    is given up at once (code 499, as nginx counts it), its admission slot and the replica's
    in-flight count released, and the replica's connection dropped (its reply has no reader)."""
    model = support.slow_model(env)
    gw = env.gateway
    server = env.snapshot.servers[0].id
    state = gw.router.servers.get(server)
    failures_before = state.failures if state is not None else 0
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    )
    with socket.create_connection(_addr(env), timeout=10) as s:
        s.sendall(
            (
                f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
        )
        env.loop.run(eventually(lambda: gw.router.model_inflight.get(model) == 1, timeout_s=10.0))

    def given_back() -> bool:
        return model not in gw.router.model_inflight and gw.router.inflight(model, server) == 0

    env.loop.run(eventually(given_back, timeout_s=10.0))
    codes = {k[3]: v for k, v in gw.metrics.requests.items() if k[0] == model and k[2] == "http"}
    assert codes == {"499": 1}, codes  # given up, not answered 200 after the model's 2 s
    assert gw.router.servers[server].failures <= failures_before  # not the replica's failure


def test_gateway_metrics(env: Env) -> None:
    c = httpclient.InferenceServerClient(env.http)
    c.infer("double_fp32", _inputs(httpclient, "double_fp32", True))
    status, text = _raw(env, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert 'tritonfleet_gateway_requests_total{model="double_fp32"' in text
    assert "tritonfleet_gateway_request_duration_seconds_bucket" in text
    # A name the client made up is never a label value (see test_bounds.py).
    assert 'model="no_such_model"' not in text
    assert (
        'tritonfleet_gateway_rejections_total{model="(unregistered)",reason="unknown_model"}'
        in text
    )


# --- raw socket helpers ------------------------------------------------------------------
def _addr(env: Env) -> tuple[str, int]:
    host, port = env.http.split(":")
    return host, int(port)


def _read_replies(s: socket.socket, n: int) -> list[tuple[int, str]]:
    buf = b""
    out: list[tuple[int, str]] = []
    while len(out) < n:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode()
            length = next(
                int(h.split(":", 1)[1])
                for h in head.split("\r\n")[1:]
                if h.lower().startswith("content-length:")
            )
            if len(buf) >= end + 4 + length:
                out.append((int(head[9:12]), buf[end + 4 : end + 4 + length].decode()))
                buf = buf[end + 4 + length :]
                continue
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} replies: {buf!r}")
        buf += chunk
    return out


def _raw(env: Env, text: str) -> tuple[int, str]:
    with socket.create_connection(_addr(env), timeout=10) as s:
        s.sendall(text.encode())
        return _read_replies(s, 1)[0]


def test_triton_signals_are_scraped(env: Env) -> None:
    import time

    c = httpclient.InferenceServerClient(env.http)
    c.infer("double_fp32", _inputs(httpclient, "double_fp32", True))
    deadline = time.monotonic() + 5
    router = env.gateway.router
    while time.monotonic() < deadline:
        sigs = env.loop.call(lambda: [s.signal for s in router.servers.values()])
        if sigs and any(s is not None for s in sigs):
            return
        time.sleep(0.2)
    raise AssertionError("no Triton signal was scraped within 5 s")


def test_unparseable_body_is_400_not_tritons_500(env: Env) -> None:
    status, body = _raw(
        env,
        "POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    )
    assert status == 400
    assert "failed to parse" in json.loads(body)["error"]


def test_many_pipelined_local_answers_behind_an_inference(env: Env) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    )
    infer = (
        "POST /v2/models/double_fp32/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    with socket.create_connection(_addr(env), timeout=10) as s:
        s.sendall((infer + "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * 200).encode())
        replies = _read_replies(s, 201)
    assert replies[0][0] == 200 and {st for st, _ in replies[1:]} == {404}
    with socket.create_connection(_addr(env), timeout=10) as s:
        # past the pipelining limit: the gateway stops reading until replies drain
        s.sendall((infer * 400).encode())
        replies = _read_replies(s, 400)
    assert {st for st, _ in replies} == {200}
