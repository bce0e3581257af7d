"""Does control traffic stall inference? (Triton server issue #8958.)

One real Triton server serves model `a` under steady closed-loop HTTP inference while model `b`
is loaded and unloaded back to back, first with no control traffic (baseline), then through
Triton's HTTP repository API, then through the gRPC repository API that tritonfleet uses. Reports
the inference latency p50/p99/max of `a` in each phase, side by side.

    .venv/bin/python -m benchmarks.control_stall [--seconds 20] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import tritonclient.grpc.aio as grpcaio

from adapters.templatefiles import TemplateFiles
from adapters.tritonbin import check_python_stub, locate
from adapters.tritonschema import ProtobufSchema
from controlplane.configgen import Renderer
from controlplane.spec import ModelSpec
from tests.support import DOUBLE_PY, python_spec, start_fleet

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
).encode()


async def infer_loop(
    client: httpx.AsyncClient, url: str, stop: asyncio.Event, out: list[float]
) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        r = await client.post(url, content=BODY, headers={"content-type": "application/json"})
        r.raise_for_status()
        out.append((time.perf_counter() - t) * 1e3)


async def phase(name: str, server, seconds: float, conc: int, control) -> dict[str, float]:
    stop = asyncio.Event()
    lat: list[float] = []
    async with httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_keepalive_connections=conc)
    ) as client:
        url = f"{server.http_url}/v2/models/a/infer"
        tasks = [asyncio.create_task(infer_loop(client, url, stop, lat)) for _ in range(conc)]
        cycles = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if control is None:
                await asyncio.sleep(0.1)
            else:
                await control()
                cycles += 1
        stop.set()
        await asyncio.gather(*tasks)
    lat.sort()
    res = {
        "requests": len(lat),
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[int(0.99 * (len(lat) - 1))],
        "max_ms": lat[-1],
        "load_unload_cycles": cycles,
    }
    print(
        f"{name:<22} {res['requests']:6d} req  p50 {res['p50_ms']:7.2f} ms  p99 {res['p99_ms']:8.2f} ms  "
        f"max {res['max_ms']:8.2f} ms  cycles {cycles}",
        flush=True,
    )
    return res


async def main(seconds: float, conc: int) -> None:
    check_python_stub()
    install = locate(None, Path.home() / ".cache" / "tritonfleet")
    renderer = Renderer(ProtobufSchema(), TemplateFiles())
    cfg_a = renderer.render(ModelSpec.model_validate(python_spec("a"))).json()
    cfg_b = renderer.render(ModelSpec.model_validate(python_spec("b"))).json()
    files = {"file:1/model.py": DOUBLE_PY.encode()}
    with tempfile.TemporaryDirectory() as tmp:
        fleet = await start_fleet(install, Path(tmp), servers=1, admin_key="k")
        server = fleet.snapshot().servers[0]
        grpc = grpcaio.InferenceServerClient(server.grpc_url)
        gh = {"triton-grpc-protocol-admin-key": "k"}
        hh = {"admin-key": "k"}
        try:
            await grpc.load_model("a", headers=gh, config=cfg_a, files=files)
            http = httpx.AsyncClient(timeout=60)

            async def via_http() -> None:
                encoded = {k: base64.b64encode(v).decode() for k, v in files.items()}
                body = {"parameters": {"config": cfg_b, **encoded}}
                r = await http.post(
                    f"{server.http_url}/v2/repository/models/b/load", json=body, headers=hh
                )
                r.raise_for_status()
                r = await http.post(
                    f"{server.http_url}/v2/repository/models/b/unload", json={}, headers=hh
                )
                r.raise_for_status()

            async def via_grpc() -> None:
                await grpc.load_model("b", headers=gh, config=cfg_b, files=files)
                await grpc.unload_model("b", headers=gh)

            print(f"inference on `a` over HTTP, concurrency {conc}, {seconds:.0f} s per phase")
            await phase("baseline (no control)", server, seconds, conc, None)
            await phase("HTTP repository API", server, seconds, conc, via_http)
            await phase("gRPC repository API", server, seconds, conc, via_grpc)
            await http.aclose()
        finally:
            await grpc.close()
            await fleet.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    asyncio.run(main(args.seconds, args.concurrency))
