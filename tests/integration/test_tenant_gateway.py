"""Tenant isolation end to end: a real `tritonfleet up --api-token … --gateway-auth tenants`
(real Triton), its in-process gateway and a `tritonfleet gateway` apart (the chart's shape).
Tenant B reads, updates, deletes, ensures and infers against tenant A's model and gets 404
every time; nothing of A's changes; a revoked token stops working at the remote gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from adapters.tritonbin import TritonInstall
from tests.integration.test_crash_safety import Up
from tests.support import python_spec, wait_until

pytestmark = pytest.mark.triton

ADMIN = "integration-admin-token"


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _infer(host: str, model: str, token: str | None) -> np.ndarray:
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    client = httpclient.InferenceServerClient(host)
    try:
        out = client.infer(model, [inp], headers=_bearer(token) or None).as_numpy("OUTPUT0")
    finally:
        client.close()
    np.testing.assert_array_equal(out, x * 2)
    return out


def _status_of_infer(host: str, model: str, token: str | None) -> str:
    try:
        _infer(host, model, token)
    except InferenceServerException as e:
        return str(e.status())
    return "200"


def test_tenant_isolation_through_api_and_both_gateways(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    flags = ("--api-token", ADMIN, "--gateway-auth", "tenants")
    up = Up(tmp_path / "data", tmp_path / "up.log", *flags)
    gw = None
    try:
        api = up.api
        tokens = {}
        for name in ("a", "b"):
            r = httpx.post(f"{api}/v1/tenants", json={"name": name}, headers=_bearer(ADMIN))
            assert r.status_code == 201, r.text
            tokens[name] = r.json()["token"]
        a, b = tokens["a"], tokens["b"]
        spec = python_spec("a.m", min_replicas=1)
        assert httpx.post(f"{api}/v1/models", json=spec, headers=_bearer(a)).status_code == 201
        wait_until(
            lambda: (
                httpx.get(f"{api}/v1/models/a.m/status", headers=_bearer(a)).json()["state"]
                == "READY"
            ),
            90,
        )
        host = json.loads(up.ready.read_text())["gateway_http_url"].removeprefix("http://")
        _infer(host, "a.m", a)
        _infer(host, "a.m", ADMIN)
        assert _status_of_infer(host, "a.m", b) == "404"
        assert _status_of_infer(host, "a.m", None) == "401"

        for method, path, body in (
            ("GET", "/v1/models/a.m", None),
            ("PUT", "/v1/models/a.m", python_spec("a.m", min_replicas=0)),
            ("DELETE", "/v1/models/a.m", None),
            ("POST", "/v1/models/a.m/ensure", None),
        ):
            r = httpx.request(method, f"{api}{path}", json=body, headers=_bearer(b))
            assert r.status_code == 404, (method, path, r.text)

        # The chart's shape: a gateway apart, reading tenants' hashes with the admin token.
        gw = subprocess.Popen(
            [
                sys.executable,
                *("-m", "adapters.cli", "gateway", "--controlplane-url", api),
                *("--http-port", "0", "--grpc-port", "0", "--auth", "tenants"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "TRITONFLEET_API_TOKEN": ADMIN},
        )
        assert gw.stdout is not None
        line = gw.stdout.readline()
        assert line.startswith("gateway: KServe v2 HTTP http://"), line
        remote = line.split()[4].removeprefix("http://")
        _infer(remote, "a.m", a)
        assert _status_of_infer(remote, "a.m", b) == "404"
        assert _status_of_infer(remote, "a.m", None) == "401"

        r = httpx.delete(f"{api}/v1/tenants/a", headers=_bearer(ADMIN))
        assert r.status_code == 200 and r.json()["active"] is False
        wait_until(lambda: _status_of_infer(remote, "a.m", a) == "401", 15)

        # Nothing of A's changed: generation 1, still READY, still served to the admin.
        model = httpx.get(f"{api}/v1/models/a.m", headers=_bearer(ADMIN)).json()
        assert model["generation"] == 1 and model["tenant"] == "a"
        _infer(remote, "a.m", ADMIN)
    finally:
        if gw is not None:
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=30)
            if gw.stdout is not None:
                gw.stdout.close()
        up.stop()
