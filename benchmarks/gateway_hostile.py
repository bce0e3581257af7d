"""Hostile HTTP/1.1 clients, side by side: does a well-behaved client still get answered, and
how much memory does the gateway hold?

    PYTHONPATH=. python -m benchmarks.gateway_hostile [--seconds 5] [--slow-clients 100]

One Triton server (CPU, Python backend) serves `double_fp32` (the well-behaved client's
model) and `tile_big` (4 floats in, 1 MiB of FP32 out, binary). The gateway runs as its own process
(`python -m adapters.gateway`, uvloop, as deployed); the attackers and the well-behaved client
run in this process, on loopback. For each scenario, run for `--seconds`, one client sends a
`double_fp32` inference every 20 ms on a kept-alive connection and records its latency, and
the gateway's RSS is sampled every 50 ms:

- `baseline`: no attack.
- `malformed`: 8 connections cycling through every malformed head of `tests/gateway/hostile`
  (obs-fold, bare LF, smuggling CL/TE combinations, oversized heads, ...).
- `pipelined`: 4 connections each writing 64 MiB of pipelined requests and reading nothing.
- `slowloris`: 200 connections dribbling a head one byte every 50 ms.
- `slow-readers`: `--slow-clients` connections each keeping 8 requests for 1 MiB replies
  outstanding and reading 64 KiB/s (socket receive buffer 64 KiB): 800 MiB of replies asked
  for that the clients cannot take in time.

Prints one row per scenario: probe count, p50/p99/max latency, errors, peak RSS and its
growth over the RSS at start, and what the attack returned (heads sent for `malformed`,
reply bytes read for `slow-readers`).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from adapters.gateway.demofleet import DemoModel
from benchmarks.gateway_common import GatewayProcess, start_fleet
from tests.gateway import hostile

DOUBLE = DemoModel("double_fp32", "TYPE_FP32", "double")
BIG_FLOATS = 256 * 1024
# 4 floats in, 1 MiB out: the slow readers pull large replies with small requests
BIG = DemoModel(
    "tile_big", "TYPE_FP32", "tile", dims=(4,), out_dims=(BIG_FLOATS,), max_batch_size=1
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def sample_rss(pid: int, stop: asyncio.Event, out: list[int]) -> None:
    while not stop.is_set():
        out.append(rss_bytes(pid))
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="gwhostile-"))
    fleet, snap = await start_fleet(out / "fleet", 1, [DOUBLE, BIG])
    good = hostile.infer_request(DOUBLE.name, hostile.double_body())
    big = hostile.infer_request(
        BIG.name,
        b'{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],'
        b'"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}',
    )
    secs = args.seconds
    try:
        async with GatewayProcess(snap, [DOUBLE.name, BIG.name], {"header_timeout_s": 5.0}) as gw:
            assert gw.proc is not None
            pid = gw.proc.pid
            host, port_s = gw.http.split(":")
            port = int(port_s)

            async def idle() -> None:
                await asyncio.sleep(secs)

            async def pipelined() -> None:
                await asyncio.gather(
                    *(
                        hostile.pipeline_without_reading(host, port, good, 64 << 20, secs)
                        for _ in range(4)
                    )
                )

            scenarios: dict[str, Callable[[], Awaitable[object]]] = {
                "baseline": idle,
                "malformed": lambda: hostile.flood_malformed(host, port, secs, 8),
                "pipelined": pipelined,
                "slowloris": lambda: hostile.slowloris(host, port, secs, 200),
                "slow-readers": lambda: hostile.slow_readers(
                    host, port, big, args.slow_clients, secs, 64 * 1024
                ),
            }
            # warm up: connections, head caches, Triton's first requests
            await hostile.while_probing(host, port, good, lambda: asyncio.sleep(1.0))
            base_rss = rss_bytes(pid)
            print(
                f"machine: {platform.node()} {platform.machine()}, "
                f"{__import__('os').cpu_count()} CPUs; {secs:.0f} s per scenario; "
                f"gateway RSS at start {base_rss / 2**20:.1f} MiB"
            )
            print(
                f"{'scenario':13} {'probes':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
                f"{'errors':>6} {'peak RSS MiB':>12} {'+MiB':>6}"
            )
            for name in args.scenarios or scenarios:
                attack = scenarios[name]
                samples: list[int] = []
                stop = asyncio.Event()
                sampler = asyncio.ensure_future(sample_rss(pid, stop, samples))
                t0 = time.monotonic()
                prober = await hostile.while_probing(host, port, good, attack)
                stop.set()
                await sampler
                s = prober.summary()
                peak = max(samples)
                print(
                    f"{name:13} {s['n']:6.0f} {s['p50_ms']:7.2f} {s['p99_ms']:7.2f} "
                    f"{s['max_ms']:7.2f} {s['errors']:6.0f} {peak / 2**20:12.1f} "
                    f"{(peak - base_rss) / 2**20:+6.1f}   ({time.monotonic() - t0:.1f} s"
                    + (f", attack: {prober.attack_result}" if prober.attack_result else "")
                    + ")",
                    flush=True,
                )
                await asyncio.sleep(1.0)  # let closed connections go before the next one
    finally:
        await fleet.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each scenario")
    ap.add_argument("--slow-clients", type=int, default=100)
    ap.add_argument(
        "--scenarios",
        nargs="*",
        choices=["baseline", "malformed", "pipelined", "slowloris", "slow-readers"],
        help="run only these (default: all)",
    )
    asyncio.run(main(ap.parse_args()))
