"""loadgen vs perf_analyzer 2.51 at the same concurrency, same server and model, one run.

    PYTHONPATH=. python benchmarks/loadgen_accuracy.py [--concurrency 4] [--seconds 10]

Starts a local Triton, fetches perf_analyzer (benchmarks/fetch_perf_analyzer.sh), and for each
model runs perf_analyzer (closed loop, HTTP, concurrency N) and then loadgen (closed loop, HTTP,
concurrency N) back to back. Prints throughput and p50 side by side with their ratios (goals:
throughput within ±10 %, p50 within ±15 %).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen_server import machine, triton

from loadgen.cli import main as loadgen_main


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def perf_analyzer(binary: str, url: str, model: str, conc: int, seconds: float) -> dict[str, float]:
    out = Path(tempfile.mkdtemp()) / "pa.csv"
    cmd = [
        binary, "-m", model, "-u", url, "-i", "http", "-b", "1",
        f"--concurrency-range={conc}", f"--measurement-interval={int(seconds * 1000 / 3)}",
        # three windows is the fewest perf_analyzer judges; accept them whatever their spread
        "--stability-percentage=999", "--max-trials=3", "-f", str(out),
    ]  # fmt: skip
    print("  $", " ".join(cmd), flush=True)
    c0, w0 = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()  # Triton: counted once reaped
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 6 + 60)
    cpu, wall = _cpu(resource.RUSAGE_CHILDREN) - c0, time.perf_counter() - w0
    if proc.returncode != 0:
        raise SystemExit(f"perf_analyzer failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    row = next(csv.DictReader(out.read_text().splitlines()))
    rps = float(row["Inferences/Second"])
    # perf_analyzer keeps `conc` requests going from start to exit: its CPU over its wall time
    # at the reported rate estimates its cost per request (start-up included, so a bit high)
    return {
        "throughput_rps": rps,
        "p50_us": float(row["p50 latency"]),
        "cpu_us_per_req": cpu / max(rps * wall, 1) * 1e6,
    }


def loadgen(url: str, model: str, conc: int, seconds: float, client: str) -> dict[str, float]:
    out = Path(tempfile.mkdtemp()) / "lg.json"
    argv = [
        "run", "--quiet", "--url", url, "-m", model, "--concurrency", str(conc),
        "--duration", f"{seconds + 2}s", "--warmup", "2s", "--json", str(out), "--client", client,
    ]  # fmt: skip
    print("  $ python -m loadgen", " ".join(argv), flush=True)
    c0 = _cpu(resource.RUSAGE_SELF)
    if loadgen_main(argv) != 0:
        raise SystemExit("loadgen failed")
    cpu = _cpu(resource.RUSAGE_SELF) - c0
    doc = json.loads(out.read_text())
    n = doc["warmup"]["requests"] + doc["totals"]["requests"]
    return {
        "throughput_rps": doc["totals"]["throughput_rps"],
        "p50_us": doc["totals"]["latency"]["p50_us"],
        "cpu_us_per_req": cpu / max(n, 1) * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--models", default="svc2ms,fast")
    ap.add_argument("--client", default="lean", choices=["lean", "tritonclient"])
    args = ap.parse_args()
    fetch = Path(__file__).with_name("fetch_perf_analyzer.sh")
    binary = subprocess.run([str(fetch)], check=True, capture_output=True, text=True).stdout
    binary = binary.strip().splitlines()[-1]
    print(f"machine: {machine()}")
    rows = []
    with triton() as server:
        for model in args.models.split(","):
            print(f"model {model}, HTTP, concurrency {args.concurrency}, {args.seconds:g} s each")
            pa = perf_analyzer(binary, server.http, model, args.concurrency, args.seconds)
            lg = loadgen(server.http, model, args.concurrency, args.seconds, args.client)
            rows.append((model, pa, lg))
    print()
    print(f"{'model':8} {'tool':14} {'req/s':>9} {'p50 ms':>8} {'CPU us/req':>11}")
    ok = True
    for model, pa, lg in rows:
        tr = lg["throughput_rps"] / pa["throughput_rps"]
        pr = lg["p50_us"] / pa["p50_us"]
        for name, r in (("perf_analyzer", pa), ("loadgen", lg)):
            print(
                f"{model:8} {name:14} {r['throughput_rps']:9.1f} {r['p50_us'] / 1000:8.3f} "
                f"{r['cpu_us_per_req']:11.1f}"
            )
        good = abs(tr - 1) <= 0.10 and abs(pr - 1) <= 0.15
        ok &= good
        print(
            f"{model:8} {'ratio lg/pa':14} {tr:9.3f} {pr:8.3f}   "
            f"(goal ±10% / ±15%: {'met' if good else 'NOT met'})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
