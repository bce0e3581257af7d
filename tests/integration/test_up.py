"""`tritonfleet up` as the README runs it: real servers, the examples loaded, a clean stop."""

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

from adapters.tritonbin import TritonInstall
from tests.support import free_port_block, wait_until

pytestmark = pytest.mark.triton


def test_up_brings_up_real_servers_and_answers(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    port = free_port_block(1)
    ready = tmp_path / "ready.json"
    data = tmp_path / "data"
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adapters.cli",
                "up",
                "--data-dir",
                str(data),
                "--api-port",
                str(port),
                "--ready-file",
                str(ready),
                "--gateway-http-port",
                "0",
                "--gateway-grpc-port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: ready.exists() or proc.poll() is not None, 120)
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            api = json.loads(ready.read_text())["api_url"]
            models = httpx.get(f"{api}/v1/models").json()["models"]
            assert sorted(m["name"] for m in models) == ["batch_sleep", "text_stats"]

            def both_ready() -> bool:
                states = [
                    httpx.get(f"{api}/v1/models/{n}/status").json()["state"]
                    for n in ("batch_sleep", "text_stats")
                ]
                return states == ["READY", "READY"]

            wait_until(both_ready, 90)
            fleet = httpx.get(f"{api}/v1/fleet").json()
            assert [s["health"] for s in fleet["servers"]] == ["LIVE", "LIVE"]
            placed = {m["name"] for s in fleet["servers"] for m in s["models"]}
            assert placed == {"batch_sleep", "text_stats"}
            status = httpx.get(f"{api}/v1/models/batch_sleep/status").json()
            assert status["footprint"]["source"] in ("process-tree-rss-delta", "declared")

            # Inference through the gateway `up` started, with an unmodified tritonclient.
            info = json.loads(ready.read_text())
            host = info["gateway_http_url"].removeprefix("http://")
            client = httpclient.InferenceServerClient(host)
            x = np.ones((1, 16), dtype=np.float32)
            inp = httpclient.InferInput("INPUT0", [1, 16], "FP32")
            inp.set_data_from_numpy(x)
            out = client.infer("batch_sleep", [inp]).as_numpy("OUTPUT0")
            np.testing.assert_array_equal(out, x * 2)
            client.close()
            assert "batch_sleep" in httpx.get(f"{api}/v1/replicas").json()["models"]

            # The chart's shape: a gateway process apart, asking the control API for replicas.
            gw = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "adapters.cli",
                    "gateway",
                    "--controlplane-url",
                    api,
                    "--http-port",
                    "0",
                    "--grpc-port",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "TRITONFLEET_ADMIN_KEY": "unused-for-infer"},
            )
            try:
                assert gw.stdout is not None
                line = gw.stdout.readline()
                assert line.startswith("gateway: KServe v2 HTTP http://"), line
                remote = line.split()[4].removeprefix("http://")
                client = httpclient.InferenceServerClient(remote)
                out = client.infer("batch_sleep", [inp]).as_numpy("OUTPUT0")
                np.testing.assert_array_equal(out, x * 2)
                with pytest.raises(Exception, match="not registered"):
                    client.infer("no_such_model", [inp])
                client.close()
            finally:
                gw.send_signal(signal.SIGTERM)
                assert gw.wait(timeout=30) == 0
                gw.stdout.close()
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            rc = proc.wait(timeout=60)
    assert rc == 0, (tmp_path / "up.log").read_text()
    text = (tmp_path / "up.log").read_text()
    assert "tritonfleet is up" in text and "control API" in text
    left = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout
    assert left.strip() == "", f"processes left running: {left}"
