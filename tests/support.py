"""Helpers shared by the test layers: real Triton fleets on free loopback ports, spec builders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from adapters import specfile
from adapters.localfleet import LocalFleet, LocalFleetConfig
from adapters.settings import Settings
from adapters.tritonbin import TritonInstall

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "model_repo_templates" / "examples"

DOUBLE_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", (x * 2).astype(x.dtype))]))
        return out
"""

BROKEN_PY = "import this_module_does_not_exist_anywhere\n"


def python_spec(name: str, *, source: str = DOUBLE_PY, **policy: Any) -> dict[str, Any]:
    """A small Python-backend spec (OUTPUT0 = 2 * INPUT0, FP32[4]) with inline files."""
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 8,
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [4]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [4]}],
        "dynamic_batching": {"max_queue_delay_us": 100},
        "instance_groups": [{"count": 1, "kind": "KIND_CPU"}],
        "policy": {"memory_bytes": 64 << 20, **policy},
        "artifact": {"files": {"1/model.py": source}},
    }


def stepper_spec(name: str, **extra: Any) -> dict[str, Any]:
    """The batch_sleep example as a GPU-like model: 15 ms + 1 ms per request, max batch 4
    (one replica serves ~60 req/s unbatched, ~210 req/s at full batches), SLO 100/200 ms."""
    source = (EXAMPLES / "batch_sleep" / "1" / "model.py").read_text()
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 4,
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [16]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "dims": [16]}],
        "dynamic_batching": {"preferred_batch_sizes": [4], "max_queue_delay_us": 2000},
        "instance_groups": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {"base_ms": "15", "per_item_ms": "1"},
        "policy": {"min_replicas": 1, "max_replicas": 2, "memory_bytes": 64 << 20},
        "slo": {"p95_ms": 100, "p99_ms": 200},
        "artifact": {"files": {"1/model.py": source}},
        **extra,
    }


def up_settings(tmp_path: Path, **kw: Any) -> Settings:
    """Settings for an in-process `tritonfleet up` (Runtime) on free loopback ports."""
    base = free_port_block(3)
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "register_examples": False,
        "api_port": base,
        "gateway_http_port": base + 1,
        "gateway_grpc_port": base + 2,
        "reconcile_interval_s": 0.5,
        **kw,
    }
    return Settings(**values)


def example_spec(name: str) -> dict[str, Any]:
    return specfile.load(EXAMPLES / name / "spec.yaml")


async def start_fleet(
    install: TritonInstall,
    run_dir: Path,
    servers: int,
    *,
    admin_key: str | None = "test-key",
    capacity_bytes: int = 1 << 30,
    **kw: Any,
) -> LocalFleet:
    fleet = LocalFleet(
        LocalFleetConfig(
            servers=servers,
            run_dir=run_dir,
            capacity_bytes=capacity_bytes,
            admin_key=admin_key,
            **kw,
        ),
        install,
    )
    await fleet.start()
    return fleet


async def eventually(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.1) -> float:
    """Poll `predicate` (sync or async) until true; return the seconds it took."""
    start = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def free_port_block(count: int) -> int:
    """A base port with `count` consecutive free loopback ports (Triton's http/grpc/metrics layout)."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 40000 - count)
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> None:
    """Poll a synchronous `predicate` until true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


@contextlib.contextmanager
def prometheus_server(targets: list[str], workdir: Path) -> Iterator[str]:
    """A real Prometheus (Debian's) scraping `targets` (host:port) every second; yields its URL."""
    port = free_port_block(1)
    (workdir / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": f"t{i}", "static_configs": [{"targets": [t]}]}
                    for i, t in enumerate(targets)
                ],
            }
        )
    )
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "prometheus.log", "wb") as log:
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                try:
                    return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, 30)
            yield url
        finally:
            prom.terminate()
            prom.wait(timeout=30)
