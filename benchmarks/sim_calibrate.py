"""The simulator against the real local fleet: the same 3-server scenarios, side by side.

    PYTHONPATH=. python -m benchmarks.sim_calibrate [--seconds 20] [--seed 1]

Three scenarios, each run on real Triton 2.51 CPU processes through the gateway and measured
with `tritonfleet loadgen` (open loop, Poisson), then simulated with parameters fitted from the
same fleet (never from the result being compared):

1. slow-replica: three servers serve `sleepy` (10 ms, no batching), server 2 runs it 4x slower
   (`SLOW_FACTOR=4`, as benchmarks/gateway_routing.py), the standalone `tritonfleet gateway`
   with hot-cold routing, 100 req/s. Fitted: the per-request overhead (gateway, HTTP, Python
   backend) from a 10 req/s run before, added to the 10 ms (and to the 40 ms on server 2).
2. load-step: `tritonfleet up` with 3 servers, one replica of the `stepper` model (15 ms + 1 ms
   per request, max batch 4, preferred 4, 2 ms queue delay), static policy, 30 then 90 req/s.
   Fitted: the overhead as in 1, from a 10 req/s stage at the start of the same run.
3. cold-starts: the same fleet, four more stepper models with `min_replicas: 0`; one seeded
   trace (a Zipf mix at 8 req/s) replayed open-loop through the gateway and by the simulator:
   cold holds counted by the gateway (`tritonfleet_gateway_cold_holds_total`) against the
   simulator's. Fitted: the load time, from timing the first model's `models ensure`. (loadgen
   is not used for this one: it reads each model's metadata through the gateway before its
   run, which loads the models before the measured requests.)

Prints a table: p50 and p99 measured vs simulated with the error, cold holds measured vs
simulated. Real runs need tritonserver (the `local` extra) and take about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from adapters.gateway.demofleet import DemoModel
from benchmarks.autopilot_step import _tritonfleet
from benchmarks.gateway_common import GatewayProcess, start_fleet
from controlplane.sim import Scenario, Simulation, simulate, workloads
from controlplane.sim.scenario import WorkloadSpec
from tests.support import free_port_block, stepper_spec

SLEEPY = DemoModel("sleepy", "TYPE_FP32", "double", service_ms=10.0, max_batch_size=0)
STEPPER = "stepper"
COLD = [f"cold{i}" for i in range(4)]


def loadgen(url: str, models: list[str], args: list[str], out: Path) -> dict[str, Any]:
    """One `tritonfleet loadgen run`; its JSON report."""
    cmd = [*_tritonfleet(), "loadgen", "run", "--url", url, "--json", str(out), "-q"]
    for m in models:
        cmd += ["-m", m]
    subprocess.run([*cmd, *args], check=True, capture_output=True, text=True)
    return dict(json.loads(out.read_text()))


def _holds(metrics: str) -> float:
    """Requests the gateway held for the cold models (both outcomes)."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("tritonfleet_gateway_cold_holds_total{") and any(
            f'"{m}"' in line for m in COLD
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _lat(report: dict[str, Any], model: str | None = None) -> tuple[float, float]:
    block = report["models"][model] if model else report["totals"]
    lat = block["latency"]
    return lat["p50_us"] / 1000, lat["p99_us"] / 1000


# --- 1. slow replica (standalone gateway, stub control API) ----------------------------
async def slow_replica_real(rate: float, seconds: float, work: Path) -> dict[str, Any]:
    fleet, snap = await start_fleet(
        work / "fleet", 3, [SLEEPY], per_server_env={2: {"SLOW_FACTOR": "4"}}
    )
    try:
        async with GatewayProcess(snap, [SLEEPY.name], {"policy": "hot-cold"}) as gw:
            low = await asyncio.to_thread(
                loadgen, gw.http, [SLEEPY.name], ["--rate", "10", "--duration", "12s",
                "--warmup", "2s"], work / "low.json"
            )  # fmt: skip
            main = await asyncio.to_thread(
                loadgen, gw.http, [SLEEPY.name], ["--rate", str(rate), "--duration",
                f"{seconds + 2:g}s", "--warmup", "2s", "--timeout", "5s"], work / "main.json"
            )  # fmt: skip
    finally:
        await fleet.stop()
    low_p50, _ = _lat(low)
    p50, p99 = _lat(main)
    return {"low_p50_ms": low_p50, "p50_ms": p50, "p99_ms": p99}


def slow_replica_sim(
    real: dict[str, Any], rate: float, seconds: float, seed: int
) -> dict[str, Any]:
    # The low-rate p50 is mostly served by the fast servers: 10 ms + overhead.
    overhead_s = max(0.0, real["low_p50_ms"] / 1000 - 0.010)
    a = 0.010 + overhead_s
    report = simulate(
        Scenario.model_validate(
            {
                "name": "calibrate-slow-replica",
                "seed": seed,
                "duration_s": seconds,
                "fleet": {
                    "servers": 3,
                    "memory_mib": 2048,
                    "warm_start": True,
                    "slow_servers": [2],
                    "slow_factor": (0.040 + overhead_s) / a,
                },
                "models": [
                    {
                        "name": "sleepy",
                        "memory_mib": 64,
                        "service_a_s": a,
                        "service_b_s": 0.0,
                        "max_batch_size": 0,
                        "min_replicas": 3,
                        "max_replicas": 3,
                    }
                ],
                "workload": {"rate_rps": rate},
                "gateway": {"routing": "hot-cold"},
                "policies": {"autoscale": "static"},
            }
        )
    )
    lat = report["latency_ms"]
    return {"p50_ms": lat["p50"], "p99_ms": lat["p99"], "fitted_a_ms": round(a * 1000, 2)}


# --- 2 and 3. tritonfleet up: load step and cold starts -------------------------------
def cold_trace(seconds: float, seed: int) -> list[tuple[float, str]]:
    """The cold-start scenario's requests: a Zipf mix over four models at 8 req/s, as a trace
    both the real fleet and the simulator replay (loadgen is not used here: it reads each
    model's metadata through the gateway before its run, which warms the models first)."""
    spec = WorkloadSpec.model_validate({"rate_rps": 8.0})
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) for k in range(len(COLD))]
    return [(t, COLD[m]) for t, m, _ in workloads.synthetic(spec, weights, seconds, rng)]


async def replay(url: str, trace: list[tuple[float, str]]) -> list[float | None]:
    """Send each request at its time (open loop); latencies in seconds, None for failures."""
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
    ).encode()
    results: list[float | None] = []
    timeout = aiohttp.ClientTimeout(total=40.0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(model: str, due: float) -> None:
            try:
                async with session.post(
                    f"http://{url}/v2/models/{model}/infer", data=body, timeout=timeout
                ) as r:
                    await r.read()
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            dt = time.perf_counter() - due  # from the intended send time
            results.append(dt if ok else None)

        start = time.perf_counter()
        tasks = []
        for t, model in trace:
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(model, start + t)))
        await asyncio.gather(*tasks)
    return results


def _q(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def fleet_real(seconds: float, work: Path, seed: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    api_port = free_port_block(3)
    http_port = api_port + 1
    ready = work / "ready.json"
    tf = _tritonfleet()
    cmd = [*tf, "up", "--no-examples", "--servers", "3", "--data-dir", str(work / "data"),
           "--api-port", str(api_port), "--gateway-http-port", str(http_port),
           "--gateway-grpc-port", str(api_port + 2), "--ready-file", str(ready)]  # fmt: skip
    step = stepper_spec(
        STEPPER,
        policy={"min_replicas": 1, "max_replicas": 1, "memory_bytes": 64 << 20},
        autoscaling={"policy": "static"},
        slo=None,
    )
    out: dict[str, Any] = {}
    with open(work / "up.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            while not ready.exists():
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"tritonfleet up failed: see {work / 'up.log'}")
                time.sleep(0.2)
            api = json.loads(ready.read_text())["api_url"]
            url = f"127.0.0.1:{http_port}"

            def register(spec: dict[str, Any]) -> None:
                path = work / f"{spec['name']}.json"
                path.write_text(json.dumps(spec))
                subprocess.run([*tf, "models", "register", str(path), "--api", api],
                               check=True, stdout=subprocess.DEVNULL)  # fmt: skip

            register(step)
            t0 = time.perf_counter()
            subprocess.run([*tf, "models", "ensure", STEPPER, "--api", api, "--timeout", "60"],
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            out["load_s"] = time.perf_counter() - t0
            low = loadgen(url, [STEPPER], ["--rate", "10", "--duration", "12s", "--warmup", "2s"],
                          work / "low.json")  # fmt: skip
            out["low_p50_ms"] = _lat(low)[0]
            half = seconds / 2
            stepped = loadgen(url, [STEPPER], ["--profile", f"30@{half:g}s,90@{half:g}s",
                              "--warmup", "0s", "--timeout", "10s"], work / "step.json")  # fmt: skip
            out["step_p50_ms"], out["step_p99_ms"] = _lat(stepped)
            for name in COLD:
                register(
                    stepper_spec(
                        name,
                        policy={"min_replicas": 0, "max_replicas": 1, "memory_bytes": 64 << 20},
                        autoscaling={"policy": "static"},
                        slo=None,
                    )
                )
            gw_metrics = f"http://{url}/metrics"
            before = httpx.get(gw_metrics).text
            trace = cold_trace(seconds, seed)
            lat = asyncio.run(replay(url, trace))
            after = httpx.get(gw_metrics).text
            ok = sorted(x for x in lat if x is not None)
            out["cold_failed"] = len(lat) - len(ok)
            out["cold_p50_ms"], out["cold_p99_ms"] = _q(ok, 0.5) * 1000, _q(ok, 0.99) * 1000
            out["cold_requests"] = len(lat)
            out["cold_holds"] = _holds(after) - _holds(before)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


def step_sim(real: dict[str, Any], seconds: float, seed: int) -> dict[str, Any]:
    # At 10 req/s requests mostly run alone: p50 = 15 ms + 1 ms + overhead.
    overhead_s = max(0.0, real["low_p50_ms"] / 1000 - 0.016)
    half = seconds / 2
    report = simulate(
        Scenario.model_validate(
            {
                "name": "calibrate-load-step",
                "seed": seed,
                "duration_s": seconds,
                "fleet": {"servers": 3, "memory_mib": 2048, "warm_start": True},
                "models": [
                    {
                        "name": STEPPER,
                        "memory_mib": 64,
                        "service_a_s": 0.015 + overhead_s,
                        "service_b_s": 0.001,
                        "max_batch_size": 4,
                        "preferred_batch_sizes": [4],
                        "max_queue_delay_us": 2000,
                        "min_replicas": 1,
                        "max_replicas": 1,
                    }
                ],
                "workload": {"rate_rps": 30, "steps": [{"at_s": half, "factor": 3.0}]},
                "policies": {"autoscale": "static"},
            }
        )
    )
    lat = report["latency_ms"]
    return {"p50_ms": lat["p50"], "p99_ms": lat["p99"]}


def cold_sim(real: dict[str, Any], seconds: float, seed: int) -> dict[str, Any]:
    overhead_s = max(0.0, real["low_p50_ms"] / 1000 - 0.016)
    models = [
        {
            "name": m,
            "memory_mib": 64,
            "load_s": real["load_s"],
            "service_a_s": 0.015 + overhead_s,
            "service_b_s": 0.001,
            "max_batch_size": 4,
            "preferred_batch_sizes": [4],
            "max_queue_delay_us": 2000,
        }
        for m in COLD
    ]
    scn = Scenario.model_validate(
        {
            "name": "calibrate-cold-starts",
            "seed": seed,
            "duration_s": seconds,
            "fleet": {"servers": 3, "memory_mib": 2048},
            "models": models,
            "workload": {"kind": "trace", "trace": "(the replayed requests)"},
            "gateway": {"cold_hold_s": 30},
            "policies": {"autoscale": "static"},
            "reconciler": {"interval_s": 1.0},
        }
    )
    lines = [f"{t},{m}" for t, m in cold_trace(seconds, seed)]
    names = {m: i for i, m in enumerate(COLD)}
    report = Simulation(scn, workloads.parse_trace(lines, names)).run()
    lat = report["latency_ms"]
    return {"p50_ms": lat["p50"], "p99_ms": lat["p99"], "cold_holds": report["cold_holds"]}


def _err(sim: float, real: float) -> str:
    return f"{(sim - real) / real:+.0%}" if real else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per scenario")
    ap.add_argument("--rate", type=float, default=100.0, help="slow-replica: requests per second")
    ap.add_argument("--seed", type=int, default=1, help="simulator seed")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="simcal-"))
    real1 = asyncio.run(slow_replica_real(args.rate, args.seconds, work / "slow"))
    sim1 = slow_replica_sim(real1, args.rate, args.seconds, args.seed)
    real23 = fleet_real(args.seconds, work / "up", args.seed)
    sim2 = step_sim(real23, args.seconds, args.seed)
    sim3 = cold_sim(real23, args.seconds, args.seed)
    rows = [
        ("slow-replica", real1["p50_ms"], sim1["p50_ms"], real1["p99_ms"], sim1["p99_ms"], "-", "-"),
        ("load-step", real23["step_p50_ms"], sim2["p50_ms"], real23["step_p99_ms"], sim2["p99_ms"], "-", "-"),
        ("cold-starts", real23["cold_p50_ms"], sim3["p50_ms"], real23["cold_p99_ms"], sim3["p99_ms"],
         int(real23["cold_holds"]), sim3["cold_holds"]),
    ]  # fmt: skip
    print(json.dumps({"real": [real1, real23], "sim": [sim1, sim2, sim3]}, default=str))
    print(f"fitted: per-request overhead {real1['low_p50_ms'] - 10:.1f} ms (sleepy), "
          f"{real23['low_p50_ms'] - 16:.1f} ms (stepper); load time {real23['load_s']:.2f} s")  # fmt: skip
    print("| scenario | p50 real ms | p50 sim ms | err | p99 real ms | p99 sim ms | err | "
          "cold holds real | cold holds sim |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, p50r, p50s, p99r, p99s, cr, cs in rows:
        print(f"| {name} | {p50r:.1f} | {p50s:.1f} | {_err(p50s, p50r)} | {p99r:.1f} | "
              f"{p99s:.1f} | {_err(p99s, p99r)} | {cr} | {cs} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
