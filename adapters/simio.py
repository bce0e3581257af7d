"""The simulator's outside: scenario YAML, trace files, the JSON report and PNG plots.

`controlplane.sim` reads and writes nothing; this module loads a scenario (YAML, validated by
`controlplane.sim.scenario.Scenario`, field errors named), opens a trace file lazily (relative
paths are relative to the scenario file), and draws the report with matplotlib (the `report`
extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controlplane.errors import FieldProblem, InvalidSpec
from controlplane.sim import Scenario, Simulation, workloads
from controlplane.sim.simulation import Progress
from controlplane.spec import field_errors

MAX_SCENARIO_BYTES = 4 << 20


def load_scenario(path: Path, seed: int | None = None) -> Scenario:
    subject = f"scenario {path}"
    try:
        if path.stat().st_size > MAX_SCENARIO_BYTES:
            raise InvalidSpec(
                [FieldProblem(str(path), f"larger than {MAX_SCENARIO_BYTES} bytes")],
                subject=subject,
            )
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidSpec(
            [FieldProblem(str(path), f"cannot read: {exc.strerror}")], subject=subject
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise InvalidSpec(
            [FieldProblem(where, f"malformed YAML: {getattr(exc, 'problem', None) or exc}")],
            subject=subject,
        ) from exc
    if not isinstance(data, dict):
        raise InvalidSpec(
            [FieldProblem(str(path), f"must hold one mapping, not {type(data).__name__}")],
            subject=subject,
        )
    if seed is not None:
        data["seed"] = seed
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [
            FieldProblem(f, m)
            for err in exc.errors()
            for f, m in field_errors(tuple(err["loc"]), str(err["msg"]))
        ]
        raise InvalidSpec(problems, subject=subject) from exc


def trace_arrivals(scn: Scenario, scenario_path: Path) -> Iterator[workloads.Arrival] | None:
    """The replayed trace of a `kind: trace` workload (read lazily), else None."""
    if scn.workload.kind != "trace" or scn.workload.trace is None:
        return None
    path = Path(scn.workload.trace)
    if not path.is_absolute():
        path = scenario_path.parent / path
    if not path.is_file():
        raise InvalidSpec(
            [FieldProblem("workload.trace", f"{path} is not a readable file")],
            subject=f"scenario {scenario_path}",
        )
    names = {n: i for i, n in enumerate(scn.model_names())}

    def lines() -> Iterator[str]:
        with path.open(encoding="utf-8", errors="replace") as f:
            yield from f

    return workloads.parse_trace(lines(), names, source=f"trace {path}")


def run(path: Path, seed: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
    scn = load_scenario(path, seed)
    return Simulation(scn, trace_arrivals(scn, path)).run(progress)


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.json plus PNG plots (when matplotlib is installed); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json"]
    written[0].write_text(json.dumps(report, indent=1))
    try:
        import matplotlib
    except ImportError:
        return written
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    ts = [s["t_s"] / 60 for s in series]
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True, constrained_layout=True)
    ax = axes[0]
    for key, color in (("p50_ms", "tab:green"), ("p95_ms", "tab:orange"), ("p99_ms", "tab:red")):
        ys = [s[key] if s[key] is not None else float("nan") for s in series]
        ax.plot(ts, ys, label=key[:-3], color=color, marker=".", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{report['scenario']}: latency per {_width(series)}")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    ax.bar(
        ts, [s["cold_holds"] for s in series], width=_bar(ts), color="tab:blue", label="cold holds"
    )
    ax.plot(ts, [s["loads"] for s in series], color="tab:purple", label="loads", linewidth=1)
    ax.plot(ts, [s["evictions"] for s in series], color="tab:brown", label="evictions", linewidth=1)
    ax.set_ylabel("per interval")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[2]
    ax.plot(ts, [s["mean_memory_gib"] for s in series], color="tab:blue", label="memory (GiB)")
    ax.set_ylabel("memory in use (GiB)")
    ax2 = ax.twinx()
    ax2.plot(ts, [s["mean_servers_in_use"] for s in series], color="tab:red", label="servers")
    ax2.set_ylabel("servers holding a replica", color="tab:red")
    ax.set_xlabel("simulated minutes")
    fig.savefig(out / "timeline.png", dpi=90)
    plt.close(fig)
    written.append(out / "timeline.png")
    return written


def _width(series: list[dict[str, Any]]) -> str:
    if len(series) < 2:
        return "interval"
    return f"{series[1]['t_s'] - series[0]['t_s']:g} s"


def _bar(ts: list[float]) -> float:
    return (ts[1] - ts[0]) * 0.8 if len(ts) > 1 else 0.8
