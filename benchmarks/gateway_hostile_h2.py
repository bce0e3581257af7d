"""Hostile HTTP/2 and gRPC clients against the gateway's h2 door: is everyone else still served?

    PYTHONPATH=. python -m benchmarks.gateway_hostile_h2 [--seconds 5] [--attackers 4]

One Triton server (CPU, Python backend) with `double_fp32`, and the gateway as its own
process (grpc_door h2, default settings, as deployed). For each attack in turn, `--attackers`
connections attack for `--seconds` (each opening a new connection when the gateway closes
its last) while a well-behaved tritonclient gRPC client, in its own process, calls
`double_fp32` every 10 ms (`tests/gateway/hostile_h2.Probe`). Reported per attack: that client's calls, p50/p99/max latency and
errors; the gateway's RSS before and its peak during the attack (/proc, every 20 ms); how
many attack connections there were and the GOAWAY codes that ended them. Loopback only,
bounded in time (about attacks x (seconds + 2) s after the fleet is up).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import tempfile
from pathlib import Path
from typing import Any

from adapters.gateway.demofleet import DEMO_MODELS
from benchmarks.gateway_common import GatewayProcess, start_fleet
from tests.gateway import hostile_h2 as hostile

MODEL = DEMO_MODELS[0]
ATTACKS = {
    "none (baseline)": None,
    "protobuf varint bomb (400 KB)": hostile.varint_bomb,
    "CONTINUATION flood": hostile.continuation_flood,
    "PING flood": hostile.ping_flood,
    "SETTINGS flood": hostile.settings_flood,
    "rapid reset": hostile.rapid_reset,
}


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _attack(name: str, url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    attack = ATTACKS[name]
    probe = hostile.Probe(url)
    await asyncio.to_thread(probe.__enter__)  # connected, its first call answered
    before = peak = _rss_bytes(pid)
    stop = False

    async def sample() -> None:
        nonlocal peak
        while not stop:
            peak = max(peak, _rss_bytes(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    conns: list[hostile.RawH2] = []
    if attack is None:
        await asyncio.sleep(args.seconds)
    else:
        runs = await asyncio.gather(
            *(hostile.run_attack(attack, url, args.seconds) for _ in range(args.attackers))
        )
        conns = [c for run in runs for c in run]
    stop = True
    await sampler
    await asyncio.to_thread(probe.__exit__)
    latencies, errors = probe.latencies, probe.errors
    lat = sorted(latencies) or [float("nan")]
    codes = collections.Counter(c.goaway[0] if c.goaway else None for c in conns)
    return {
        "attack": name,
        "conns": len(conns),
        "goaway": ",".join(f"{'-' if k is None else hex(k)}x{v}" for k, v in codes.items()),
        "calls": len(latencies),
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
        "max_ms": lat[-1] * 1e3,
        "errors": len(errors),
        "rss_before_mib": before / 2**20,
        "rss_peak_mib": peak / 2**20,
    }


async def main(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="gwhostile-"))
    fleet, snap = await start_fleet(out / "fleet", 1, [MODEL])
    rows = []
    try:
        async with GatewayProcess(snap, [MODEL.name], {"grpc_door": "h2"}) as gw:
            assert gw.proc is not None
            for name in args.attacks or list(ATTACKS):
                row = await _attack(name, gw.grpc, gw.proc.pid, args)
                rows.append(row)
                print(
                    f"{row['attack']:30} conns {row['conns']:4} goaway {row['goaway'] or '-':14} "
                    f"calls {row['calls']:4} p50 {row['p50_ms']:6.2f} ms p99 {row['p99_ms']:6.2f} "
                    f"ms max {row['max_ms']:6.2f} ms errors {row['errors']} "
                    f"RSS {row['rss_before_mib']:.0f} -> {row['rss_peak_mib']:.0f} MiB",
                    flush=True,
                )
    finally:
        await fleet.stop()
    worst = max(r["max_ms"] for r in rows)
    peak = max(r["rss_peak_mib"] for r in rows)
    print(f"\nworst well-behaved call {worst:.1f} ms; gateway RSS peak {peak:.0f} MiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each attack")
    ap.add_argument("--attackers", type=int, default=4, help="attacking connections at once")
    ap.add_argument("--attacks", nargs="*", choices=list(ATTACKS), help="default: all")
    asyncio.run(main(ap.parse_args()))
