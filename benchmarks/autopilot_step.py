"""Does the fleet follow its load? Four replica policies side by side on one load step.

    PYTHONPATH=. python -m benchmarks.autopilot_step [--base-rate 80] [--policies ...] [--quick]

Each policy gets a fresh `tritonfleet up` (the shipped entry point and its defaults, real
Triton processes, the in-process gateway), one synthetic model whose service time is
a + b x batch (15 ms + 1 ms per request, max batch 4: one replica serves ~210 req/s at full
batches, like a small GPU model), and the same open-loop load through the gateway from
`tritonfleet loadgen`: 1x for 20 s, 4x for 40 s, a 10x burst for 5 s, then 1x for 90 s.

- static-floor: the default before the autopilot: one warm replica, no admission limit
  (`autoscaling.policy: static`, `admission.max_inflight: null`, 2 servers);
- static-peak: four replicas on four servers all the time (sized for the burst);
- target-inflight: Ray Serve's target_ongoing_requests=2 with its default delays;
- slo: the autopilot (`slo: p95 100 ms, p99 200 ms`), 2 servers growing up to 4.

Per policy it prints the share of 10 s windows meeting P95 < 100 ms, P99 < 200 ms and errors
< 0.1% (429s are throttling, reported apart, and also shown counted as errors), the share of
requests answered 200 (goodput), 429s,
server-seconds and replica-seconds (sampled every second from the control API), seconds from
the step to the SLO restored, loads/unloads, and failed requests after the burst (scale-in).
Results go to bench-out/autopilot_step/ (JSON per policy, summary.json, timeline.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port_block, stepper_spec

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out" / "autopilot_step"
MODEL = "stepper"
SLO = "p95=100ms,p99=200ms,errors<0.1%"


@dataclass(frozen=True)
class Policy:
    name: str
    servers: int
    max_servers: int
    spec: dict[str, Any]
    up_args: tuple[str, ...] = ()  # extra `tritonfleet up` flags


def spec(policy: str, min_replicas: int, admission: int | str | None = "auto") -> dict[str, Any]:
    return stepper_spec(
        MODEL,
        policy={"min_replicas": min_replicas, "max_replicas": 4, "memory_bytes": 64 << 20},
        slo={"p95_ms": 100, "p99_ms": 200, "max_error_rate": 0.001},
        autoscaling={"policy": policy},
        admission={"max_inflight": admission},
    )


POLICIES = {
    # Today's default before the autopilot: one warm replica and no admission limit.
    "static-floor": Policy("static-floor", 2, 2, spec("static", 1, admission=None)),
    "static-peak": Policy("static-peak", 4, 4, spec("static", 4)),
    "target-inflight": Policy("target-inflight", 2, 4, spec("target-inflight", 1)),
    "slo": Policy("slo", 2, 4, spec("slo", 1)),
}


@dataclass
class Sampler:
    """Polls the control API once a second: live servers and READY replicas of the model."""

    api: str
    rows: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as c:
            while not self._stop.wait(1.0):
                try:
                    fleet = c.get(f"{self.api}/v1/fleet").json()
                except (httpx.HTTPError, ValueError):
                    continue
                live = sum(1 for s in fleet["servers"] if s["health"] == "LIVE")
                ready = sum(
                    1
                    for s in fleet["servers"]
                    for m in s["models"]
                    if m["name"] == MODEL and m["state"] == "READY"
                )
                self.rows.append((time.time(), live, ready))

    def stop(self) -> None:
        self._stop.set()


def _tritonfleet() -> list[str]:
    exe = Path(sys.executable).parent / "tritonfleet"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "adapters.cli"]


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_policy(p: Policy, profile: str, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(p.spec))
    api_port, http_port, grpc_port = free_port_block(3), None, None
    http_port, grpc_port = api_port + 1, api_port + 2
    ready = work / "ready.json"
    cmd = [
        *_tritonfleet(),
        "up",
        "--no-examples",
        "--servers",
        str(p.servers),
        "--max-servers",
        str(p.max_servers),
        "--data-dir",
        str(work / "data"),
        "--api-port",
        str(api_port),
        "--gateway-http-port",
        str(http_port),
        "--gateway-grpc-port",
        str(grpc_port),
        "--ready-file",
        str(ready),
        *p.up_args,
    ]
    with open(work / "up.log", "wb") as up_log:
        proc = subprocess.Popen(cmd, stdout=up_log, stderr=subprocess.STDOUT)
        sampler: Sampler | None = None
        try:
            deadline = time.time() + 120
            while not ready.exists():
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"tritonfleet up failed: see {work / 'up.log'}")
                time.sleep(0.2)
            api = json.loads(ready.read_text())["api_url"]
            tf = _tritonfleet()
            subprocess.run(
                [*tf, "models", "register", str(work / "spec.json"), "--api", api],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            subprocess.run(
                [*tf, "models", "ensure", MODEL, "--api", api, "--timeout", "60"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            time.sleep(3)  # the floor settles (static-peak: all four replicas)
            sampler = Sampler(api)
            thread = threading.Thread(target=sampler.run, daemon=True)
            thread.start()
            before = httpx.get(f"{api}/metrics").text
            t0 = time.time()
            report = work / "loadgen.json"
            lg = subprocess.run(
                [
                    *tf,
                    "loadgen",
                    "run",
                    "--url",
                    f"127.0.0.1:{http_port}",
                    "-m",
                    MODEL,
                    "--profile",
                    profile,
                    "--warmup",
                    "0s",
                    "--timeout",
                    "5s",
                    "--slo",
                    SLO,
                    "--slo-window",
                    "10s",
                    "--json",
                    str(report),
                    "-q",
                ],
                capture_output=True,
                text=True,
            )
            t1 = time.time()
            after = httpx.get(f"{api}/metrics").text
            sampler.stop()
            thread.join()
            decisions = httpx.get(f"{api}/v1/models/{MODEL}/decisions").json()["decisions"]
        finally:
            if sampler is not None:
                sampler.stop()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    (work / "loadgen.txt").write_text(lg.stdout + lg.stderr)
    data = json.loads(report.read_text())
    return {
        "policy": p.name,
        "t0": t0,
        "t1": t1,
        "report": data,
        "samples": sampler.rows,
        "loads": _counter(after, "tritonfleet_reconciler_loads_total")
        - _counter(before, "tritonfleet_reconciler_loads_total"),
        "unloads": _counter(after, "tritonfleet_reconciler_unloads_total")
        - _counter(before, "tritonfleet_reconciler_unloads_total"),
        "decisions": [d for d in decisions if d.get("changed")],
    }


def score(result: dict[str, Any], stages: list[tuple[float, float]]) -> dict[str, Any]:
    """Windows, costs and recovery from one policy's loadgen report and samples."""
    windows = result["report"]["slo_windows"]["windows"]
    met = [w for w in windows if _met_throttling_apart(w)]
    met_strict = [w for w in windows if w["met"]]
    samples = result["samples"]
    t0 = result["t0"]
    step_at = stages[0][1]
    burst_end = step_at + stages[1][1] + stages[2][1]
    seconds = result["report"]["per_second"]  # rows from the start of measurement
    restored = None
    for row in seconds:
        t = row["t_s"]
        if t < step_at or t >= step_at + stages[1][1]:
            continue
        ok = row["p99_us"] is not None and row["p99_us"] < 200_000 and row["errors"] == 0
        if ok and restored is None:
            restored = t - step_at
        elif not ok:
            restored = None
    after_burst_failures = sum(
        w["errors"] - w["rejected"] for w in windows if w["start_s"] >= burst_end
    )
    return {
        "policy": result["policy"],
        "windows": len(windows),
        "windows_met": len(met),
        "attainment": len(met) / len(windows) if windows else 0.0,
        "attainment_429_as_errors": len(met_strict) / len(windows) if windows else 0.0,
        "requests": sum(w["requests"] for w in windows),
        "ok": sum(w["successes"] for w in windows),
        "errors": sum(w["errors"] - w["rejected"] for w in windows),
        "rejected_429": sum(w["rejected"] for w in windows),
        "server_seconds": sum(live for t, live, _ in samples if t >= t0),
        "replica_seconds": sum(ready for t, _, ready in samples if t >= t0),
        "step_to_slo_s": restored,
        "loads": result["loads"],
        "unloads": result["unloads"],
        "failed_after_burst": after_burst_failures,
        "max_servers_seen": max((live for _, live, _ in samples), default=0),
        "max_replicas_seen": max((r for _, _, r in samples), default=0),
        "worst_window_p99_ms": max((w["p99_us"] or 0) for w in windows) / 1000 if windows else None,
    }


def _met_throttling_apart(w: dict[str, Any]) -> bool:
    """The window's SLO with 429s as throttling, not errors: latency of the successes, and
    failures other than admission refusals under 0.1% of what was admitted."""
    admitted = w["requests"] - w["rejected"]
    failed = w["errors"] - w["rejected"]
    return (
        admitted > 0
        and w["p95_us"] is not None
        and w["p95_us"] < 100_000
        and w["p99_us"] is not None
        and w["p99_us"] < 200_000
        and failed / admitted < 0.001
    )


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(11, 3 * len(results)), sharex=True)
    axes = axes if len(results) > 1 else [axes]
    for ax, r in zip(axes, results, strict=True):
        rows = r["report"]["per_second"]
        ts = [row["t_s"] for row in rows]
        ax.plot(ts, [(row["p99_us"] or 0) / 1000 for row in rows], label="p99 ms", color="tab:red")
        ax.plot(
            ts, [(row["p95_us"] or 0) / 1000 for row in rows], label="p95 ms", color="tab:orange"
        )
        ax.axhline(200, color="tab:red", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title(r["policy"])
        ax2 = ax.twinx()
        t0 = r["t0"]
        ax2.step(
            [t - t0 for t, _, _ in r["samples"]],
            [x for _, _, x in r["samples"]],
            label="replicas",
            color="tab:blue",
            where="post",
        )
        ax2.step(
            [t - t0 for t, _, _ in r["samples"]],
            [s for _, s, _ in r["samples"]],
            label="servers",
            color="tab:green",
            ls="--",
            where="post",
        )
        ax2.plot(
            ts,
            [row["sent"] / 100 for row in rows],
            label="offered (x100 rps)",
            color="gray",
            lw=0.8,
        )
        ax2.set_ylim(0, 10)
        ax2.set_ylabel("replicas / servers")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=7)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-rate", type=float, default=80.0, help="the 1x rate (req/s)")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    ap.add_argument("--quick", action="store_true", help="shorter stages (a smoke run)")
    ap.add_argument(
        "--windows",
        default="",
        metavar="STABLE/PANIC,...",
        help="also run the slo policy with these autopilot windows, e.g. 60/6,10/2",
    )
    args = ap.parse_args(argv)
    r = args.base_rate
    durations = (10, 20, 5, 30) if args.quick else (20, 40, 5, 90)
    stages = [(r, durations[0]), (4 * r, durations[1]), (10 * r, durations[2]), (r, durations[3])]
    profile = ",".join(f"{rate:g}@{d}s" for rate, d in stages)
    OUT.mkdir(parents=True, exist_ok=True)
    results, scores = [], []
    todo = [POLICIES[n.strip()] for n in args.policies.split(",") if n.strip()]
    for pair in filter(None, args.windows.split(",")):
        stable, panic = pair.split("/")
        todo.append(
            replace(
                POLICIES["slo"],
                name=f"slo-{stable}s-{panic}s",
                up_args=(
                    "--autopilot-stable-window-s",
                    stable,
                    "--autopilot-panic-window-s",
                    panic,
                ),
            )
        )
    for p in todo:
        with tempfile.TemporaryDirectory(prefix=f"autopilot-{p.name}-") as tmp:
            res = run_policy(p, profile, Path(tmp))
            shutil.copy(Path(tmp) / "up.log", OUT / f"{p.name}.up.log")
        (OUT / f"{p.name}.json").write_text(json.dumps(res, indent=1, default=str))
        s = score(res, stages)
        results.append(res)
        scores.append(s)
        print(json.dumps(s), flush=True)
    peak = next((s for s in scores if s["policy"] == "static-peak"), None)
    print(f"\nprofile {profile}; SLO {SLO}; 10 s windows")
    hdr = (
        f"{'policy':<16}{'SLO windows':>12}{'(429=err)':>10}{'ok %':>6}{'429s':>7}{'errors':>7}"
        f"{'server-s':>9}{'replica-s':>10}{'vs peak':>8}{'step→SLO':>9}{'loads':>6}"
        f"{'unloads':>8}{'fail>burst':>11}"
    )
    print(hdr)
    for s in scores:
        ratio = s["replica_seconds"] / peak["replica_seconds"] if peak else float("nan")
        rec = "-" if s["step_to_slo_s"] is None else f"{s['step_to_slo_s']:.0f}s"
        print(
            f"{s['policy']:<16}{s['windows_met']:>5}/{s['windows']:<2} {s['attainment']:>5.0%}"
            f"{s['attainment_429_as_errors']:>10.0%}{s['ok'] / max(s['requests'], 1):>6.0%}"
            f"{s['rejected_429']:>7}{s['errors']:>7}"
            f"{s['server_seconds']:>9}{s['replica_seconds']:>10}{ratio:>8.2f}{rec:>9}"
            f"{s['loads']:>6.0f}{s['unloads']:>8.0f}{s['failed_after_burst']:>11}"
        )
    (OUT / "summary.json").write_text(json.dumps({"profile": profile, "scores": scores}, indent=1))
    chart(results, OUT / "timeline.png")
    print(f"\nchart: {OUT / 'timeline.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
