"""Does control traffic stall inference? (Triton server issue #8958.)

One real Triton server serves model `a` under steady closed-loop HTTP inference while model `b`
is loaded and unloaded back to back, first with no control traffic (baseline), then through
Triton's HTTP repository API, then through the gRPC repository API that tritonfleet uses. Reports
the inference latency p50/p99/max of `a` in each phase, side by side.

    .venv/bin/python -m benchmarks.control_stall [--seconds 20] [--concurrency 2]

`--scenario dashboard`: does reading the dashboard stall the gateway? An in-process
`tritonfleet up` (control API, reconciler and gateway on one event loop, one Triton server)
serves model `a` through its gateway to a closed-loop client in another process, with
`--models` registered in all (the rest scale-to-zero, never loaded). Every model's latency
history is filled to the ring's size (`ui_series_points`, what ten minutes of 1 s ticks leave;
the benchmark writes those points into the autopilot's timeline, then the real autopilot keeps
adding its own each tick). Another process then reads `GET /v1/latency` back to back: the
default limit, `limit=10000`, and `since` polls. Per phase: the event loop's worst stall (a 5 ms
ticker on the server's loop), the gateway's inference p50/p99/max, and the fetches' times.

    .venv/bin/python -m benchmarks.control_stall --scenario dashboard [--seconds 10] [--models 100]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


# --- the dashboard scenario -----------------------------------------------------------------


START_S = 1.5  # a child's wait before its work (the phase's measurement starts after it)


def _run(main: Any) -> None:
    from adapters.cli import _run as run_like_up

    run_like_up(main)


async def child_infer(url: str, seconds: float, conc: int) -> None:
    """Closed-loop inference on the gateway from its own process; prints the latencies (ms)."""
    await asyncio.sleep(START_S)
    stop = asyncio.Event()
    lat: list[float] = []
    async with httpx.AsyncClient(
        timeout=60, limits=httpx.Limits(max_keepalive_connections=conc)
    ) as client:
        tasks = [asyncio.create_task(infer_loop(client, url, stop, lat)) for _ in range(conc)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
    print(json.dumps(lat))


async def child_fetch(url: str, seconds: float, query: str) -> None:
    """GET `url` back to back for `seconds`; prints each fetch's time (ms) and body size.

    `query` "since" polls for what is new after the newest point seen (the dashboard's poll)."""
    await asyncio.sleep(START_S)
    out: list[tuple[float, int]] = []
    since: float | None = None
    async with httpx.AsyncClient(timeout=120) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            params: dict[str, str] = {}
            if query == "since":
                params = {} if since is None else {"since": repr(since)}
            elif query:
                k, _, v = query.partition("=")
                params = {k: v}
            t = time.perf_counter()
            r = await client.get(url, params=params)
            r.raise_for_status()
            out.append(((time.perf_counter() - t) * 1e3, len(r.content)))
            if query == "since":
                newest = [m["points"][-1][0] for m in r.json()["models"].values() if m["points"]]
                since = max(newest, default=since)
                await asyncio.sleep(1.0)  # the dashboard polls about once a second
    print(json.dumps(out))


async def _child(*argv: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.control_stall",
        "--child",
        *argv,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv[0]} failed ({proc.returncode})")
    return json.loads(stdout)


class StallMeter:
    """A ticker on the loop under test: how late each 5 ms sleep wakes is how long the loop
    was busy with something else (the worst is what an inference request can wait)."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.worst_ms = 0.0
        self.late: list[float] = []
        self.gc_worst_ms = 0.0  # the longest garbage collection (any generation)
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            took_ms = (time.perf_counter() - self._gc_start) * 1e3
            self.gc_worst_ms = max(self.gc_worst_ms, took_ms)

    def reset(self) -> None:
        self.worst_ms, self.late, self.gc_worst_ms = 0.0, [], 0.0

    def over(self, ms: float) -> int:
        return sum(1 for x in self.late if x > ms)

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.period_s)
            late_ms = (time.perf_counter() - t - self.period_s) * 1e3
            self.late.append(late_ms)
            self.worst_ms = max(self.worst_ms, late_ms)


def _q(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[int(q * (len(xs) - 1))] if xs else float("nan")


async def dashboard(seconds: float, conc: int, models: int) -> int:
    from adapters.cli import _freeze_heap
    from adapters.runtime import Runtime
    from controlplane.timeline import Point, Targets
    from tests.support import up_settings

    logging.basicConfig(level=logging.ERROR)
    check_python_stub()
    with tempfile.TemporaryDirectory() as tmp:
        rt = await Runtime(up_settings(Path(tmp), servers=1, reconcile_interval_s=1.0)).start()
        _freeze_heap()  # as `tritonfleet up` does once started
        meter = StallMeter()
        ticker: asyncio.Task[None] | None = None
        try:
            assert rt.gateway is not None and rt.reconciler is not None
            async with httpx.AsyncClient(base_url=rt.api_url, timeout=60) as api:
                r = await api.post("/v1/models", json=python_spec("a", min_replicas=1))
                r.raise_for_status()
                for i in range(models - 1):
                    r = await api.post("/v1/models", json=python_spec(f"m{i:03d}"))
                    r.raise_for_status()
                r = await api.post("/v1/models/a/ensure", params={"timeout_s": 120})
                r.raise_for_status()
            timeline = rt.reconciler.autopilot.timeline
            now = time.time()
            names = ["a"] + [f"m{i:03d}" for i in range(models - 1)]
            for name in names:  # ten minutes of history, as the autopilot leaves it
                for k in range(timeline.max_points, 0, -1):
                    at = now - k
                    timeline.add(
                        name,
                        Point(at, 12.5 + k % 7, 0.004, 0.009, 0.012 + k % 3 * 1e-3, 0.0, 1, 1),
                        Targets(0.1, 0.2, 0.01),
                    )
            # The meter starts after the history is written (that is the benchmark's own work).
            ticker = asyncio.create_task(meter.run())
            infer_url = f"{rt.gateway.http_url}/v2/models/a/infer"
            latency_url = f"{rt.api_url}/v1/latency"
            print(
                f"{models} models, {timeline.max_points} points each; inference on `a` via the "
                f"gateway, concurrency {conc}, {seconds:.0f} s per phase"
            )
            phases: list[tuple[str, str | None]] = [
                ("baseline (no reader)", None),
                ("GET /v1/latency", ""),
                ("  ?limit=10000", "limit=10000"),
                ("  ?since= polls (1/s)", "since"),
            ]
            for name, query in phases:
                jobs = [_child("infer", infer_url, str(seconds), str(conc))]
                if query is not None:
                    jobs.append(_child("fetch", latency_url, str(seconds), query))
                running = asyncio.gather(*jobs)
                # Children wait START_S before their work: forking them is not measured.
                await asyncio.sleep(START_S)
                meter.reset()
                got = await running
                lat: list[float] = got[0]
                fetch = [f[0] for f in got[1]] if query is not None else []
                size = max((f[1] for f in got[1]), default=0) if query is not None else 0
                reads = (
                    f"  reads {len(fetch):4d} first {fetch[0]:6.0f} ms median "
                    f"{statistics.median(fetch):6.0f} ms max {max(fetch):6.0f} ms "
                    f"({size / 1e6:.2f} MB)"
                    if fetch
                    else ""
                )
                print(
                    f"{name:<24} loop stall worst {meter.worst_ms:6.1f} ms p99 "
                    f"{_q(meter.late, 0.99):5.1f} ms, {meter.over(50):3d} over 50 ms, GC worst "
                    f"{meter.gc_worst_ms:5.1f} ms | inference {len(lat):5d} req p50 "
                    f"{_q(lat, 0.5):6.2f} p99 {_q(lat, 0.99):7.2f} max {max(lat):7.2f} ms"
                    f"{reads}",
                    flush=True,
                )
        finally:
            if ticker is not None:
                ticker.cancel()
            await rt.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        role, url, secs = sys.argv[2], sys.argv[3], float(sys.argv[4])
        if role == "infer":
            asyncio.run(child_infer(url, secs, int(sys.argv[5])))
        else:
            asyncio.run(child_fetch(url, secs, sys.argv[5]))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scenario",
        choices=("repository", "dashboard"),
        default="repository",
        help="repository: load/unload traffic; dashboard: /v1/latency reads",
    )
    ap.add_argument("--seconds", type=float, default=20, help="seconds per phase")
    ap.add_argument("--concurrency", type=int, default=2, help="inference clients")
    ap.add_argument("--models", type=int, default=100, help="dashboard: models registered")
    args = ap.parse_args()
    if args.scenario == "dashboard":  # on the loop `tritonfleet up` runs on
        _run(dashboard(args.seconds, args.concurrency, args.models))
    else:
        asyncio.run(main(args.seconds, args.concurrency))
