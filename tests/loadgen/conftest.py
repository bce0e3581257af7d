"""A real Triton server (CPU build from the nvidia-pytriton wheel) with three Python models.

* `fast`: FP32[4] → FP32[4] doubled, dynamic batching; the model for throughput runs.
* `sleepy`: the same, sleeping `delay_ms` (5 ms) per execution; a known service time.
* `text`: BYTES[1] → BYTES[1] upper-cased; checks BYTES inputs end to end.

One server for the whole session keeps the suite fast; it is always stopped in teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL_PY = """
import json, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(params.get("delay_ms", {}).get("string_value", "0")) / 1000.0
        self.kind = params.get("kind", {}).get("string_value", "double")

    def execute(self, requests):
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if self.kind == "upper":
                y = np.array([s.upper() for s in x.reshape(-1)], dtype=np.object_).reshape(x.shape)
            else:
                y = x * 2
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y)]))
        return out
"""


def model_config(name: str, dtype: str, dims: list[str], **params: str) -> dict[str, object]:
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": dtype, "dims": dims}],
        "output": [{"name": "OUTPUT0", "data_type": dtype, "dims": dims}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "dynamic_batching": {},
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }


MODELS = {
    "fast": model_config("fast", "TYPE_FP32", ["4"]),
    "sleepy": model_config("sleepy", "TYPE_FP32", ["4"], delay_ms="5"),
    "text": model_config("text", "TYPE_STRING", ["1"], kind="upper"),
}


@dataclass(frozen=True)
class TritonUnderTest:
    http: str  # host:port
    grpc: str
    metrics_url: str
    pid: int

    # Only the server process is frozen, not its process group: freezing the Python-backend
    # stubs too made Triton 2.51 abort afterwards (boost::interprocess::lock_exception in the
    # stub IPC) in about one run out of two. The HTTP/gRPC front ends live in the server
    # process, so clients see the same complete stall.
    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonUnderTest]:
    from adapters.localfleet import LocalFleet, LocalFleetConfig
    from adapters.tritonbin import check_python_stub, locate
    from controlplane.errors import FleetError

    try:
        install = locate(None, Path.home() / ".cache/tritonfleet")
        check_python_stub()
    except FleetError as exc:
        if os.environ.get("CI"):
            raise  # CI installs Triton: a missing one is a failure there, never a skip
        pytest.skip(f"no runnable tritonserver here: {exc}")
    import tritonclient.http as httpclient

    loop = asyncio.new_event_loop()
    fleet = LocalFleet(
        LocalFleetConfig(
            servers=1,
            run_dir=tmp_path_factory.mktemp("triton"),
            capacity_bytes=2 << 30,
            admin_key=None,
        ),
        install,
    )
    try:
        snap = loop.run_until_complete(fleet.start())
        server = snap.servers[0]
        assert server.pid is not None
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        for name, cfg in MODELS.items():
            client.load_model(
                name, config=json.dumps(cfg), files={"file:1/model.py": MODEL_PY.encode()}
            )
        client.close()
        yield TritonUnderTest(
            http=server.http_url.removeprefix("http://"),
            grpc=server.grpc_url,
            metrics_url=server.metrics_url,
            pid=server.pid,
        )
    finally:
        if (pid := fleet.pid("local-0")) is not None:
            import contextlib

            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a failed stall test must not leave it frozen
        loop.run_until_complete(fleet.stop())
        loop.close()
