"""The simulator at fleet scale: 1,000 servers x 10,000 models x 1 hour of the skewed trace.

    PYTHONPATH=. python -m benchmarks.sim_scale [--servers 1000] [--models 10000] [--hours 1]
        [--rate-rps 600] [--seed 1] [--json FILE]

The workload is the Azure-Functions-2019-like skew (`controlplane.sim.workloads.azure_rates`:
45% of models at most once an hour, the top 19% carrying ~99.6% of requests) at `--rate-rps`
over the fleet; models come in four size classes (1, 2, 4 and 8 GiB, 40/30/20/10%) on 80 GiB
servers; policies are the shipped defaults (hot-cold routing, slo autopilot, histogram keep-warm,
`auto` placement, which spreads on this fixed-size fleet). Prints a summary and ends with exactly one line:

    sim_scale: servers=1000 models=10000 sim_hours=1 wall_s=W events=N peak_rss_mib=M
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

from controlplane.sim import Scenario, Simulation


def scenario(servers: int, models: int, hours: float, rate_rps: float, seed: int) -> Scenario:
    classes = [(1024, 0.4, 1.0), (2048, 0.3, 2.0), (4096, 0.2, 4.0), (8192, 0.1, 8.0)]
    groups: list[dict[str, Any]] = []
    left = models
    for i, (mib, share, load_s) in enumerate(classes):
        n = left if i == len(classes) - 1 else round(models * share)
        left -= n
        if n:
            groups.append(
                {
                    "name": f"m{mib // 1024}g",
                    "count": n,
                    "memory_mib": mib,
                    "load_s": load_s,
                    "service_a_s": 0.004,
                    "service_b_s": 0.001,
                    "max_batch_size": 8,
                    "max_queue_delay_us": 1000,
                    "max_replicas": 8,
                }
            )
    return Scenario.model_validate(
        {
            "name": "sim_scale",
            "seed": seed,
            "duration_s": hours * 3600,
            "fleet": {"servers": servers, "memory_mib": 80 * 1024, "warm_start": True},
            "models": groups,
            "workload": {"kind": "poisson", "popularity": "azure", "rate_rps": rate_rps},
            "reconciler": {"max_concurrent_loads": 64, "tick_cost_s": 0.15},
            "report": {"interval_s": 60.0},
            "policies": {"autopilot_interval_s": 5.0},
        }
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=1000, help="Triton servers")
    ap.add_argument("--models", type=int, default=10_000, help="models")
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours")
    ap.add_argument("--rate-rps", type=float, default=600.0, help="mean requests per second")
    ap.add_argument("--seed", type=int, default=1, help="seed")
    ap.add_argument("--json", default=None, help="also write the full report here")
    args = ap.parse_args(argv)
    scn = scenario(args.servers, args.models, args.hours, args.rate_rps, args.seed)
    sim = Simulation(scn)
    started = time.perf_counter()
    last = [0.0]

    def progress(now: float, end: float) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            print(
                f"  {now / end:5.1%} simulated {now:7.0f}s  wall {last[0] - started:6.1f}s  "
                f"events {sim.engine.events}",
                file=sys.stderr,
                flush=True,
            )

    report = sim.run(progress)
    wall = time.perf_counter() - started
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    req, lat = report["requests"], report["latency_ms"]
    print(
        f"requests {req['arrived']} (completed {req['completed']}, timed out "
        f"{req['timed_out']}, refused {req['refused']}, failed {req['failed']}); "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms; cold holds {report['cold_holds']} "
        f"({report['cold_holds_per_10k']}/10k); loads {report['loads']}, evictions "
        f"{report['evictions']}; mean servers in use {report['mean_servers_in_use']}; "
        f"reconciler ticks {report['reconciler']['ticks']}, plans {report['reconciler']['plans']}"
    )
    print(
        f"sim_scale: servers={args.servers} models={args.models} sim_hours={args.hours:g} "
        f"wall_s={wall:.1f} events={report['events']} peak_rss_mib={rss_mib:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
