"""`tritonfleet sim run`: a scenario through the simulator (adapters/simio.py), a report and
plots out, progress on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.cli.core import CliError

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers


def cmd_sim_run(args: argparse.Namespace) -> int:
    from adapters import simio

    path = Path(args.scenario)
    if not path.is_file():
        raise CliError(f"sim run: scenario {path} is not a file; pass a YAML scenario")
    bar = ProgressBar(sys.stderr) if not args.quiet else None
    report = simio.run(path, args.seed, bar)
    if bar is not None:
        bar.close()
    out = Path(args.out) if args.out else path.with_suffix("").with_name(path.stem + "-sim")
    try:
        written = simio.write_report(report, out)
    except OSError as exc:
        raise CliError(
            f"sim run: cannot write the report into {out}: {exc.strerror}; pass --out DIR"
        ) from exc
    req, lat = report["requests"], report["latency_ms"]
    print(
        f"{report['scenario']}: {req['arrived']} requests: {req['completed']} completed, "
        f"{req['failed']} failed, {req['refused']} refused, {req['timed_out']} timed out; "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms; {report['cold_holds']} cold holds, "
        f"{report['loads']} loads, {report['evictions']} evictions; "
        f"{report['memory_gib_s']:.0f} GiB-s of memory, mean {report['mean_servers_in_use']} "
        "servers in use"
    )
    for p in written:
        print(f"wrote {p}")
    return 0


class ProgressBar:
    """A one-line progress bar of simulated time on a terminal (a line per 10% otherwise)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = -1

    def __call__(self, now: float, end: float) -> None:
        frac = min(1.0, now / end) if end > 0 else 1.0
        step = int(frac * (40 if self.tty else 10))
        if step == self.last:
            return
        self.last = step
        if self.tty:
            bar = "#" * int(frac * 40)
            self.stream.write(f"\rsimulating [{bar:<40}] {frac:4.0%} ({now:.0f}/{end:.0f} s)")
        else:
            self.stream.write(f"simulated {frac:4.0%} ({now:.0f}/{end:.0f} s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def add_sim(sub: Subparsers) -> None:
    sim = sub.add_parser(
        "sim", help="simulate a fleet with tritonfleet's own policies (docs/simulator.md)"
    ).add_subparsers(dest="sim_command", required=True)
    simrun = sim.add_parser(
        "run", help="run a scenario; write report.json and PNG plots, progress on stderr"
    )
    simrun.add_argument("scenario", help="scenario YAML (fleet, models, workload, policies)")
    simrun.add_argument(
        "--out", default=None, help="output directory (default: SCENARIO-sim beside the file)"
    )
    simrun.add_argument(
        "--seed", type=int, default=None, help="override the scenario's seed (same seed: same run)"
    )
    simrun.add_argument("--quiet", action="store_true", help="no progress bar")
    simrun.set_defaults(func=cmd_sim_run)
