"""loadgen's own CPU cost per request, measured with getrusage (independent of contention).

    PYTHONPATH=. python benchmarks/loadgen_cpu.py [--clients fast,tritonclient] [--seconds 5]

Starts a local Triton with the `fast` model and, for each HTTP client, runs loadgen in this
process: closed loop at concurrency 4 and 16 (pure per-request cost, no idle time) and open loop
at a fixed rate (includes the dispatcher's spin before each due time). For each run it prints
the user+system CPU seconds this process spent inside the run divided by the requests it sent,
and how often per second the kernel preempted it (involuntary context switches).
Triton runs in child processes, which RUSAGE_SELF does not count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen_server import machine, triton

from loadgen.cli import _parser, config_from_args
from loadgen.session import prepare, run_once
from loadgen.transport import open_transport


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _measure(argv: list[str]) -> dict[str, float]:
    cfg = config_from_args(_parser().parse_args(argv))
    transport = open_transport(cfg.target)
    try:
        prepared = await prepare(cfg, transport)
        c0, w0 = _cpu(), time.perf_counter()
        n0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        doc, _ = await run_once(cfg, transport, prepared)
        cpu, wall = _cpu() - c0, time.perf_counter() - w0
        preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - n0
    finally:
        await transport.close()
    sent = doc["warmup"]["requests"] + doc["totals"]["requests"]
    return {
        "requests": sent,
        "cpu_us_per_req": cpu / max(sent, 1) * 1e6,
        "cpu_util": cpu / wall,
        "throughput_rps": doc["totals"]["throughput_rps"],
        "p50_us": doc["totals"]["latency"]["p50_us"] or 0,
        "lag_p99_us": doc["schedule_lag"]["p99_us"] or 0,
        "errors": doc["totals"]["errors"],
        "preempted_per_s": preempted / wall,
        "errors_by_kind": doc["totals"]["errors_by_kind"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="lean,tritonclient")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rates", default="1000", help="open-loop rates (req/s), comma-separated")
    ap.add_argument("--concurrency", default="4,16", help="closed-loop runs ('' for none)")
    ap.add_argument("--timers", default="spin", help="open-loop wake-up: spin and/or timerfd")
    ap.add_argument("--rounds", type=int, default=1, help="repeat everything (interleaved)")
    args = ap.parse_args()
    import uvloop

    runs: list[tuple[str, str, list[str]]] = []
    for client in args.clients.split(","):
        for c in filter(None, args.concurrency.split(",")):
            runs.append((client, "-", ["--concurrency", c]))
        for rate in filter(None, args.rates.split(",")):
            for timer in args.timers.split(","):
                runs.append((client, timer, ["--rate", rate]))
    print(f"machine: {machine()}")
    with triton() as server:
        print(f"{'client':13} {'timer':7} {'load':>16} {'requests':>9} {'CPU us/req':>11} "
              f"{'CPU util':>9} {'req/s':>8} {'p50 ms':>7} {'lag p99':>8} {'preempt/s':>9} {'errors':>6} load")  # fmt: skip
        for _ in range(args.rounds):
            for client, timer, load in runs:
                argv = [
                    "run", "--quiet", "--url", server.http, "-m", "fast",
                    "--duration", f"{args.seconds}s", "--warmup", "1s", *load,
                ]  # fmt: skip
                if timer != "-":
                    argv += ["--timer", timer]
                if client != "default":  # "default": whatever the loadgen on the path does
                    argv += ["--client", client]
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    r = runner.run(_measure(argv))
                print(
                    f"{client:13} {timer:7} {' '.join(load).lstrip('-'):>16} {r['requests']:9d} "
                    f"{r['cpu_us_per_req']:11.1f} {r['cpu_util']:9.2f} {r['throughput_rps']:8.1f} "
                    f"{r['p50_us'] / 1000:7.2f} {r['lag_p99_us'] / 1000:6.2f}ms {r['preempted_per_s']:9.1f} {r['errors']:6d} "
                    f"{os.getloadavg()[0]:.2f} {r['errors_by_kind'] or ''}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
