"""`tritonfleet loadgen` / `python -m loadgen`: flags → one `LoadConfig` → run → report → exit code.

Exit codes: 0 every SLO held (or none was given), 1 an SLO did not hold, 2 a flag was wrong
(the message names it), 3 the server or model could not be used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from loadgen import slo as slo_mod
from loadgen.attainment import window_problem
from loadgen.errors import LoadgenError, UsageError
from loadgen.inputs import parse_shapes
from loadgen.progress import Progress
from loadgen.report import slo_table, summary_text, windows_table
from loadgen.runner import Mode
from loadgen.schedule import Arrival, Profile, load_trace, parse_duration, parse_profile
from loadgen.session import InputConfig, LoadConfig, prepare, run_once, sweep
from loadgen.sweep import SweepSearch
from loadgen.transport import ClientLibrary, Protocol_, Target, open_transport

EXIT_OK, EXIT_SLO, EXIT_USAGE, EXIT_TARGET = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="loadgen",
        description="Open-loop load generator and SLO gate for Triton (KServe v2) endpoints.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="one run: open loop (--rate/--profile/--trace) or closed")
    sw = sub.add_parser("sweep", help="find the highest rate at which --slo holds")
    for sp in (run, sw):
        _common(sp)
    load = run.add_argument_group("load shape (pick one)")
    load.add_argument("--rate", type=float, help="open loop: requests per second")
    load.add_argument("--profile", help="open loop: stages like 100@10s,0-500@30s")
    load.add_argument("--trace", type=Path, help="open loop: CSV of timestamp[,model] to replay")
    load.add_argument("--trace-speed", type=float, default=1.0, help="replay speed factor")
    load.add_argument(
        "--concurrency", type=int, help="CLOSED loop: this many requests always outstanding"
    )
    run.add_argument(
        "--slo-window",
        help="with --slo: also judge it per window of this many whole seconds (e.g. 10s) and "
        "report attainment, the share of windows that met it",
    )
    g = sw.add_argument_group("sweep")
    g.add_argument("--start-rate", type=float, default=100.0, help="first rate (req/s)")
    g.add_argument("--max-rate", type=float, default=100_000.0, help="highest rate to try")
    g.add_argument("--step-duration", default="10s", help="length of each step (with warm-up)")
    g.add_argument("--precision", type=float, default=0.05, help="stop at this relative gap")
    g.add_argument("--max-steps", type=int, default=16)
    g.add_argument(
        "--max-lag", default="1ms", help="a step whose schedule lag p99 exceeds this fails"
    )
    return p


def _common(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--url", default="localhost:8000", help="host:port of Triton or the gateway")
    t.add_argument("--protocol", choices=[x.value for x in Protocol_], default="http")
    t.add_argument(
        "--client",
        choices=[c.value for c in ClientLibrary],
        default=ClientLibrary.LEAN.value,
        help="HTTP client: lean (raw asyncio, default) or tritonclient (aiohttp); gRPC always "
        "uses tritonclient's grpc.aio stub",
    )
    t.add_argument(
        "-m",
        "--model",
        action="append",
        required=False,
        help="model[:version]; repeat or comma-separate for a mix",
    )
    t.add_argument("--zipf", type=float, default=0.0, help="popularity skew of the model mix")
    t.add_argument("--timeout", default="30s", help="per-request timeout")
    t.add_argument("--max-inflight", type=int, default=10_000, help="beyond it requests drop")
    t.add_argument(
        "--timer",
        choices=["spin", "timerfd"],
        default="spin",
        help="open-loop wake-ups: spin (lowest lag, a busy core) or timerfd (Linux, less CPU)",
    )
    t.add_argument(
        "--server-metrics",
        nargs="?",
        const="auto",
        help="pull Triton queue/compute times from URL (default host:8002/metrics)",
    )
    r = p.add_argument_group("timing")
    r.add_argument("--duration", default="30s", help="measured run length, warm-up included")
    r.add_argument("--warmup", default="5s", help="excluded from every statistic")
    r.add_argument("--arrival", choices=[a.value for a in Arrival], default="constant")
    r.add_argument("--seed", type=int, default=0)
    i = p.add_argument_group("inputs")
    i.add_argument("--batch-size", type=int, default=1)
    i.add_argument("--shape", action="append", default=[], help="NAME:d1,d2 for -1 dimensions")
    i.add_argument("--input-data", type=Path, help="JSON file in perf_analyzer's format")
    i.add_argument("--unique-inputs", type=int, default=8, help="distinct random input sets")
    i.add_argument("--string-length", type=int, default=16, help="BYTES element length")
    i.add_argument("--json-data", action="store_true", help="send tensors as JSON, not binary")
    o = p.add_argument_group("gate and reports")
    o.add_argument("--slo", help="e.g. p95=100ms,p99=200ms,errors<0.1%%")
    o.add_argument("--json", type=Path, dest="json_path", help="write the JSON report here")
    o.add_argument("--html", type=Path, help="write an HTML report (charts embedded) here")
    o.add_argument("--png", type=Path, help="write the charts as one PNG here")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    o.add_argument("--no-uvloop", action="store_true", help="use asyncio's default event loop")


def _positive(value: float | int | None, flag: str) -> None:
    if value is not None and value <= 0:
        raise UsageError(flag, f"must be above zero, got {value}")


def config_from_args(ns: argparse.Namespace) -> LoadConfig:
    """Every check of the flags happens here, so a run never starts with a bad one."""
    duration = parse_duration(ns.duration, "--duration")
    warmup = parse_duration(ns.warmup, "--warmup")
    timeout = parse_duration(ns.timeout, "--timeout")
    _positive(duration, "--duration")
    _positive(timeout, "--timeout")
    _positive(ns.max_inflight, "--max-inflight")
    _positive(ns.batch_size, "--batch-size")
    _positive(ns.unique_inputs, "--unique-inputs")
    if warmup >= duration and ns.command == "run" and not getattr(ns, "trace", None):
        raise UsageError("--warmup", f"{ns.warmup} leaves nothing of --duration {ns.duration}")
    models: list[tuple[str, str]] = []
    for m in ns.model or []:
        for part in m.split(","):
            name, _, version = part.strip().partition(":")
            if not name:
                raise UsageError("--model", f"empty model name in {m!r}")
            models.append((name, version))
    objectives = slo_mod.parse(ns.slo) if ns.slo else ()
    mode, profile, trace, conc = Mode.OPEN, None, None, 0
    if ns.command == "run":
        chosen = [
            f for f in ("rate", "profile", "trace", "concurrency") if getattr(ns, f) is not None
        ]
        if len(chosen) != 1:
            raise UsageError(
                "--rate",
                "choose exactly one load shape: --rate, --profile, --trace or --concurrency"
                + (f" (got {', '.join('--' + c for c in chosen)})" if chosen else ""),
            )
        if ns.rate is not None:
            _positive(ns.rate, "--rate")
            profile = Profile.constant(ns.rate, duration)
        elif ns.profile is not None:
            profile = parse_profile(ns.profile, duration)
        elif ns.trace is not None:
            _positive(ns.trace_speed, "--trace-speed")
            trace = load_trace(ns.trace, models[0][0] if models else None)
        else:
            _positive(ns.concurrency, "--concurrency")
            mode, conc = Mode.CLOSED, ns.concurrency
    else:
        if not objectives:
            raise UsageError("--slo", "a sweep needs objectives, e.g. --slo p99=200ms")
        _positive(ns.start_rate, "--start-rate")
        if ns.max_rate < ns.start_rate:
            raise UsageError("--max-rate", "must be at least --start-rate")
    if not models and trace is None:
        raise UsageError("--model", "name at least one model to load")
    hostport = ns.url.split("://", 1)[-1].rstrip("/")
    if ":" not in hostport:
        raise UsageError("--url", f"{ns.url!r} has no port; write host:port, e.g. localhost:8000")
    metrics_url = ns.server_metrics
    if metrics_url == "auto":
        metrics_url = f"http://{hostport.rsplit(':', 1)[0]}:8002/metrics"
    cfg = LoadConfig(
        target=Target(
            url=hostport,
            protocol=Protocol_(ns.protocol),
            timeout_s=timeout,
            max_connections=min(ns.max_inflight, 4096),
            binary_data=not ns.json_data,
            client=ClientLibrary(ns.client),
        ),
        models=tuple(models),
        mode=mode,
        duration_s=duration,
        warmup_s=warmup,
        arrival=Arrival(ns.arrival),
        profile=profile,
        trace=trace,
        trace_speed=getattr(ns, "trace_speed", 1.0),
        concurrency=conc,
        zipf_s=ns.zipf,
        seed=ns.seed,
        max_inflight=ns.max_inflight,
        timer=ns.timer,
        inputs=InputConfig(
            batch_size=ns.batch_size,
            shapes=parse_shapes(ns.shape),
            data_file=ns.input_data,
            unique=ns.unique_inputs,
            string_length=ns.string_length,
        ),
        objectives=objectives,
        server_metrics_url=metrics_url,
        progress=Progress.wanted(ns.quiet),
        max_lag_us=parse_duration(ns.max_lag, "--max-lag") * 1e6
        if ns.command == "sweep"
        else 1000.0,
    )
    if getattr(ns, "slo_window", None) is not None:
        cfg = replace(cfg, slo_window_s=_slo_window(ns.slo_window, cfg))
    return cfg


def _slo_window(text: str, cfg: LoadConfig) -> float:
    window_s = parse_duration(text, "--slo-window")
    if not cfg.objectives:
        raise UsageError("--slo-window", "needs --slo: windows are judged against its objectives")
    if (problem := window_problem(window_s, *cfg.timing_s)) is not None:
        raise UsageError("--slo-window", problem)
    return window_s


async def _execute(ns: argparse.Namespace, cfg: LoadConfig) -> dict[str, Any]:
    transport = open_transport(cfg.target)
    try:
        prepared = await prepare(cfg, transport)
        if ns.command == "run":
            doc, _ = await run_once(cfg, transport, prepared)
            return doc
        step_s = parse_duration(ns.step_duration, "--step-duration")
        search = SweepSearch(
            start_rps=ns.start_rate,
            max_rps=ns.max_rate,
            precision=ns.precision,
            max_steps=ns.max_steps,
        )
        print(f"sweep: {cfg.objectives and ','.join(o.text for o in cfg.objectives)}")
        return await sweep(cfg, transport, prepared, search, step_s, log=print)
    finally:
        await transport.close()


def _run_loop(ns: argparse.Namespace, cfg: LoadConfig) -> dict[str, Any]:
    if not ns.no_uvloop:
        try:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(_execute(ns, cfg))
        except ImportError:
            pass
    return asyncio.run(_execute(ns, cfg))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = _parser().parse_args(argv)
        cfg = config_from_args(ns)
        if ns.command == "sweep":
            parse_duration(ns.step_duration, "--step-duration")
    except UsageError as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        doc = _run_loop(ns, cfg)
    except UsageError as exc:  # found only once the model is known (shapes, batch size)
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LoadgenError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return EXIT_TARGET
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130
    print(summary_text(doc))
    if doc.get("sweep"):
        best = doc["sweep"]["best_rps"]
        print(
            "sweep       "
            + (f"highest rate holding the SLO: {best:.1f} req/s" if best else "no rate held")
        )
    if doc["slo"] is not None:
        print()
        print(slo_table(doc))
        if doc.get("slo_windows") is not None:
            print()
            print(windows_table(doc))
        print(f"\nSLO {'PASSED' if doc['slo']['passed'] else 'FAILED'}")
    if ns.json_path:
        ns.json_path.write_text(json.dumps(doc, indent=2) + "\n")
    if ns.html or ns.png:
        from loadgen import charts

        if ns.png:
            charts.write_png(doc, ns.png)
        if ns.html:
            charts.write_html(doc, ns.html)
    if doc["slo"] is not None and not doc["slo"]["passed"]:
        return EXIT_SLO
    return EXIT_OK
