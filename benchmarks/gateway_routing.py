"""Replica choice under a slow replica: p99 and success within 1 s, per policy, open-loop.

    PYTHONPATH=. python -m benchmarks.gateway_routing [--rate 120] [--seconds 15] [--mode slow|stop]

Three Triton servers serve `sleepy` (10 ms per request, no batching, one instance); server 2
runs 4x slower (`SLOW_FACTOR=4`), or with `--mode stop` is frozen with SIGSTOP for 2 s every
5 s (Linkerd's classic experiment). An open-loop client sends Poisson arrivals at `--rate`
per second through a fresh gateway per policy; a request succeeds if it gets 200 within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from adapters.gateway.demofleet import DemoModel
from benchmarks.gateway_common import GatewayProcess, start_fleet

MODEL = DemoModel("sleepy", "TYPE_FP32", "double", service_ms=10.0, max_batch_size=0)
BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
).encode()
POLICIES = ("round-robin", "least-request", "hot-cold")


async def load(url: str, rate: float, seconds: float, rng: random.Random) -> list[float | None]:
    """Latencies in seconds (None: failed or over 1 s) of an open-loop Poisson run."""
    results: list[float | None] = []
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                async with session.post(
                    f"http://{url}/v2/models/{MODEL.name}/infer", data=BODY, timeout=timeout
                ) as r:
                    await r.read()
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            dt = time.perf_counter() - t0
            results.append(dt if ok and dt <= 1.0 else None)

        tasks = []
        start = time.perf_counter()
        t = 0.0
        while t < seconds:
            t += rng.expovariate(rate)
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return results


async def stopper(pid: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(1.5)
        os.killpg(pid, signal.SIGSTOP)
        await asyncio.sleep(2.0)
        os.killpg(pid, signal.SIGCONT)
        await asyncio.sleep(1.5)


async def main(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="gwroute-"))
    env = {2: {"SLOW_FACTOR": "4"}} if args.mode == "slow" else {}
    fleet, snap = await start_fleet(out / "fleet", 3, [MODEL], per_server_env=env)
    rows = []
    try:
        for policy in args.policies:
            async with GatewayProcess(snap, [MODEL.name], {"policy": policy}) as gw:
                await load(gw.http, 20, 1.0, random.Random(1))  # warm connections and EWMAs
                stop = None
                if args.mode == "stop":
                    assert snap.servers[2].pid is not None
                    stop = asyncio.create_task(stopper(snap.servers[2].pid, args.seconds))
                res = await load(gw.http, args.rate, args.seconds, random.Random(7))
                if stop is not None:
                    await stop
            ok = sorted(x for x in res if x is not None)
            # failures count as 1 s (the timeout) in the percentiles
            lat = sorted([*ok, *[1.0] * (len(res) - len(ok))])
            q = statistics.quantiles(lat, n=100)
            rows.append((policy, len(res), len(ok) / len(res), q[49], q[98]))
            print(f"{policy:14} sent {len(res):5}  success {len(ok) / len(res):7.2%}  "
                  f"p50 {q[49] * 1000:7.1f} ms  p99 {q[98] * 1000:7.1f} ms", flush=True)  # fmt: skip
    finally:
        await fleet.stop()
    by = {r[0]: r for r in rows}
    if "round-robin" in by and "hot-cold" in by:
        print(
            f"\nhot-cold p99 / round-robin p99 = {by['hot-cold'][4] / by['round-robin'][4]:.2f} (goal <= 0.5)"
        )
    if "least-request" in by and "hot-cold" in by:
        print(
            f"hot-cold p99 / least-request p99 = {by['hot-cold'][4] / by['least-request'][4]:.2f} (goal <= 1.0)"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=float, default=120.0, help="requests per second (open loop)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--mode", choices=["slow", "stop"], default="slow")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    asyncio.run(main(ap.parse_args()))
