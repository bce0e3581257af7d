"""Small Python-backend models and a local fleet that serves them, for tests and benchmarks.

The models are loaded over gRPC with their files inline (no model repository on disk), with
the admin key the fleet's servers restrict the repository API with. `sleepy` sleeps
`service_ms` (a config parameter) times the server's `SLOW_FACTOR` environment variable, so
one server of a fleet can be made slow with `LocalFleetConfig.per_server_env`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import tritonclient.grpc as grpcclient

from controlplane.fleet import FleetSnapshot, Server

_IDENTITY_SRC = """
import os, time, json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = cfg.get("parameters", {})
        self.op = params.get("op", {}).get("string_value", "double")
        ms = float(params.get("service_ms", {}).get("string_value", "0"))
        self.out_len = int(params.get("out_len", {}).get("string_value", "0"))
        self.sleep_s = ms * float(os.environ.get("SLOW_FACTOR", "1")) / 1000.0

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if self.sleep_s:
                time.sleep(self.sleep_s)
            if self.op == "double":
                y = x * 2
            elif self.op == "add1":
                y = x + 1
            elif self.op == "tile":
                y = np.resize(x, (x.shape[0], self.out_len))
            else:
                y = x
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y)]))
        return out
"""


@dataclass(frozen=True)
class DemoModel:
    name: str
    dtype: str  # Triton config data type, e.g. "TYPE_FP32"
    op: str  # "double", "add1", "echo" or "tile" (the input repeated to `out_dims`)
    dims: tuple[int, ...] = (4,)
    out_dims: tuple[int, ...] | None = None  # None: as `dims`
    service_ms: float = 0.0
    max_batch_size: int = 8
    sequence: bool = False

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "name": self.name,
            "backend": "python",
            "max_batch_size": self.max_batch_size,
            "input": [{"name": "INPUT0", "data_type": self.dtype, "dims": list(self.dims)}],
            "output": [
                {
                    "name": "OUTPUT0",
                    "data_type": self.dtype,
                    "dims": list(self.out_dims or self.dims),
                }
            ],
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
            "parameters": {
                "op": {"string_value": self.op},
                "service_ms": {"string_value": str(self.service_ms)},
                "out_len": {"string_value": str((self.out_dims or self.dims)[-1])},
            },
        }
        if self.max_batch_size and not self.sequence:
            cfg["dynamic_batching"] = {}
        return cfg


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel("double_fp32", "TYPE_FP32", "double"),
    DemoModel("add1_int64", "TYPE_INT64", "add1"),
    DemoModel("echo_bytes", "TYPE_STRING", "echo"),
)


def load_model(server: Server, model: DemoModel) -> None:
    """Load `model` on `server` (blocking, ~1.3 s); raises tritonclient's error on refusal."""
    headers = {"triton-grpc-protocol-admin-key": server.admin_key} if server.admin_key else None
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.load_model(
            model.name,
            config=json.dumps(model.config()),
            files={"file:1/model.py": _IDENTITY_SRC.encode()},
            headers=headers,
        )
    finally:
        client.close()


async def load_everywhere(
    snapshot: FleetSnapshot, models: Iterable[DemoModel], servers: Iterable[int] | None = None
) -> None:
    """Load each model on each chosen server (by index), servers in parallel."""
    chosen = list(servers) if servers is not None else list(range(len(snapshot.servers)))
    models = list(models)

    def one_server(s: Server) -> None:
        for m in models:
            load_model(s, m)

    await asyncio.gather(*(asyncio.to_thread(one_server, snapshot.servers[i]) for i in chosen))
