"""A local Triton (CPU build from the nvidia-pytriton wheel) with two Python models for the
loadgen benchmarks: `fast` (FP32[4] doubled, dynamic batching) and `svc2ms` (the same, sleeping
2 ms per execution)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MODEL_PY = """
import json, time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(params.get("delay_ms", {}).get("string_value", "0")) / 1000.0

    def execute(self, requests):
        if self.delay_s:
            time.sleep(self.delay_s)
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() * 2)]
            )
            for r in requests
        ]
"""


def _config(name: str, delay_ms: str) -> dict[str, object]:
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 64,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "dynamic_batching": {},
        "parameters": {"delay_ms": {"string_value": delay_ms}},
    }


@dataclass(frozen=True)
class Server:
    http: str
    grpc: str
    metrics_url: str


@contextlib.contextmanager
def triton() -> Iterator[Server]:
    import tritonclient.http as httpclient

    from adapters.localfleet import LocalFleet, LocalFleetConfig
    from adapters.tritonbin import check_python_stub, locate

    install = locate(None, Path.home() / ".cache/tritonfleet")
    check_python_stub()
    loop = asyncio.new_event_loop()
    fleet = LocalFleet(
        LocalFleetConfig(
            servers=1,
            run_dir=Path(tempfile.mkdtemp(prefix="loadgen-bench-")),
            capacity_bytes=2 << 30,
        ),
        install,
    )
    try:
        s = loop.run_until_complete(fleet.start()).servers[0]
        http = s.http_url.removeprefix("http://")
        c = httpclient.InferenceServerClient(http)
        for name, delay in (("fast", "0"), ("svc2ms", "2")):
            c.load_model(
                name,
                config=json.dumps(_config(name, delay)),
                files={"file:1/model.py": MODEL_PY.encode()},
            )
        c.close()
        yield Server(http=http, grpc=s.grpc_url, metrics_url=s.metrics_url)
    finally:
        loop.run_until_complete(fleet.stop())
        loop.close()


def machine() -> str:
    import os

    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs (nproc), {model}, load average {os.getloadavg()[0]:.2f}"
