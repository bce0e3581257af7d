"""The highest open-loop rate one loadgen process sustains with schedule lag p99 under 1 ms.

    PYTHONPATH=. python benchmarks/loadgen_capacity.py [--rates 250,500,1000,2000,3000,5000]

Starts a local Triton with the `fast` model (no sleep, dynamic batching) and runs loadgen
open-loop over HTTP at each rate in turn (6 s, 1 s warm-up), until a rate fails: schedule lag
p99 >= 1 ms, or any request dropped. Goal: at least 5,000 req/s. The server shares the
machine's cores with loadgen, so on a small machine the server's own CPU use limits the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen_server import machine, triton

from loadgen.cli import main as loadgen_main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="250,500,1000,1500,2000,3000,4000,5000,6000")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--protocol", default="http", choices=["http", "grpc"])
    args = ap.parse_args()
    print(f"machine: {machine()}")
    best = None
    with triton() as server:
        url = server.http if args.protocol == "http" else server.grpc
        print(f"{'rate':>7} {'achieved':>9} {'lag p50':>9} {'lag p99':>9} {'dropped':>8} "
              f"{'p50':>9} {'p99':>9} result")  # fmt: skip
        for rate in (float(r) for r in args.rates.split(",")):
            out = Path(tempfile.mkdtemp()) / "cap.json"
            argv = [
                "run", "--quiet", "--url", url, "--protocol", args.protocol, "-m", "fast",
                "--rate", str(rate), "--duration", f"{args.seconds}s", "--warmup", "1s",
                "--timeout", "10s", "--json", str(out),
            ]  # fmt: skip
            loadgen_main(argv)
            doc = json.loads(out.read_text())
            lag, t = doc["schedule_lag"], doc["totals"]
            ok = lag["p99_us"] is not None and lag["p99_us"] < 1000 and lag["dropped"] == 0
            print(
                f"{rate:7.0f} {t['throughput_rps']:9.1f} {lag['p50_us'] / 1000:7.3f}ms "
                f"{lag['p99_us'] / 1000:7.3f}ms {lag['dropped']:8d} "
                f"{t['latency']['p50_us'] / 1000:7.2f}ms {t['latency']['p99_us'] / 1000:7.2f}ms "
                f"{'ok' if ok else 'FAIL'}",
                flush=True,
            )
            if not ok:
                break
            best = rate
    print(f"\nhighest rate with schedule lag p99 < 1 ms: {best or 0:.0f} req/s (goal 5000)")
    return 0 if best and best >= 5000 else 1


if __name__ == "__main__":
    sys.exit(main())
