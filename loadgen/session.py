"""One loadgen invocation end to end: describe the models, build requests, run, judge, report.

`LoadConfig` is the typed tree the CLI reads once; `run_once()` and `sweep()` carry it out
against a `Transport` and return report documents. Nothing here parses flags or prints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from loadgen import attainment, report, servermetrics
from loadgen import inputs as inputs_mod
from loadgen import slo as slo_mod
from loadgen.errors import TargetError
from loadgen.progress import Progress
from loadgen.runner import Mode, RunPlan, RunResult, run
from loadgen.schedule import Arrival, Chunk, ModelMix, Profile, Trace, arrivals
from loadgen.sweep import SweepSearch
from loadgen.transport import Target, Transport

_SETTLE_S = 0.05


@dataclass(frozen=True)
class InputConfig:
    batch_size: int = 1
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    data_file: Path | None = None
    unique: int = 8
    string_length: int = 16


@dataclass(frozen=True)
class LoadConfig:
    target: Target
    models: tuple[tuple[str, str], ...]  # (name, version or "")
    mode: Mode
    duration_s: float
    warmup_s: float
    arrival: Arrival = Arrival.CONSTANT
    profile: Profile | None = None  # open loop (rate or --profile)
    trace: Trace | None = None
    trace_speed: float = 1.0
    concurrency: int = 0
    zipf_s: float = 0.0
    seed: int = 0
    max_inflight: int = 10_000
    inputs: InputConfig = InputConfig()
    objectives: tuple[slo_mod.Objective, ...] = ()
    slo_window_s: float | None = None  # judge the objectives per window of this many seconds too
    server_metrics_url: str | None = None
    progress: bool = False
    max_lag_us: float = 1000.0  # sweep: a step whose lag p99 exceeds this is generator-limited
    timer: str = "spin"  # open-loop wake-ups: "spin" or "timerfd" (see runner.RunPlan)

    @property
    def timing_s(self) -> tuple[float, float]:
        """(duration, warm-up) of the run as it will be planned: an open-loop schedule sets the
        length, and its warm-up is at most half of it."""
        if self.mode is Mode.CLOSED:
            return self.duration_s, self.warmup_s
        if self.trace is not None:
            duration = self.trace.duration_s / self.trace_speed + 1e-6
        else:
            assert self.profile is not None
            duration = self.profile.duration_s
        return duration, min(self.warmup_s, duration * 0.5)

    @property
    def model_names(self) -> tuple[str, ...]:
        if self.trace is not None:
            return self.trace.models
        return tuple(n for n, _ in self.models)

    def describe(self) -> dict[str, Any]:
        """The config as it goes into the JSON report."""
        d: dict[str, Any] = {
            "url": self.target.hostport,
            "protocol": self.target.protocol.value,
            "client": self.target.client.value
            if self.target.protocol.value == "http"
            else "tritonclient",
            "binary_data": self.target.binary_data,
            "timeout_s": self.target.timeout_s,
            "models": list(self.model_names),
            "mode": self.mode.value,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "seed": self.seed,
            "max_inflight": self.max_inflight,
            "inputs": {
                **asdict(self.inputs),
                "data_file": str(self.inputs.data_file) if self.inputs.data_file else None,
            },
        }
        if self.mode is Mode.CLOSED:
            d["concurrency"] = self.concurrency
        elif self.trace is not None:
            d["trace"] = {"requests": len(self.trace.offsets_s), "speed": self.trace_speed}
        elif self.profile is not None:
            d["arrival"] = self.arrival.value
            d["profile"] = [asdict(s) for s in self.profile.segments]
        if len(self.model_names) > 1:
            d["zipf_s"] = self.zipf_s
        return d


@dataclass
class Prepared:
    names: tuple[str, ...]
    requests: tuple[Sequence[Any], ...]


async def prepare(cfg: LoadConfig, transport: Transport) -> Prepared:
    """Ask the server for each model's signature and build every request body once."""
    rng = np.random.default_rng(cfg.seed)
    versions = dict(cfg.models)
    out = []
    for name in cfg.model_names:
        sig = await transport.describe(name, versions.get(name, ""))
        sets = inputs_mod.build_sets(
            sig,
            batch_size=cfg.inputs.batch_size,
            shapes=cfg.inputs.shapes,
            count=cfg.inputs.unique,
            rng=rng,
            string_length=cfg.inputs.string_length,
            data_file=cfg.inputs.data_file,
        )
        requests = transport.prepare(sig, sets)
        problem = await transport.check(requests[0])
        if problem is not None:
            raise TargetError(
                f"model {name!r} rejected a test request ({problem}); check --shape, "
                "--batch-size and --input-data against the model's inputs"
            )
        out.append(requests)
    return Prepared(cfg.model_names, tuple(out))


def _plan(cfg: LoadConfig, prepared: Prepared) -> RunPlan:
    mix = ModelMix.zipf(prepared.names, cfg.zipf_s)
    if cfg.mode is Mode.CLOSED:
        closed_mix = mix.assign(4096, np.random.default_rng(cfg.seed + 1))
        return RunPlan(
            mode=Mode.CLOSED,
            models=prepared.names,
            prepared=prepared.requests,
            duration_s=cfg.duration_s,
            warmup_s=cfg.warmup_s,
            concurrency=cfg.concurrency,
            closed_mix=closed_mix,
        )
    schedule: Callable[[], Iterable[Chunk]]
    if cfg.trace is not None:
        trace, speed = cfg.trace, cfg.trace_speed

        def schedule() -> Iterable[Chunk]:
            return trace.chunks(speed)

    else:
        assert cfg.profile is not None
        profile, arrival = cfg.profile, cfg.arrival

        def schedule() -> Iterable[Chunk]:
            return arrivals(profile, arrival, mix, np.random.default_rng(cfg.seed))

    duration, warmup = cfg.timing_s
    return RunPlan(
        mode=Mode.OPEN,
        models=prepared.names,
        prepared=prepared.requests,
        duration_s=duration,
        warmup_s=warmup,
        schedule=schedule,
        max_inflight=cfg.max_inflight,
        timer=cfg.timer,
    )


def offered_rps(cfg: LoadConfig, plan: RunPlan) -> float | None:
    if plan.mode is Mode.CLOSED:
        return None
    if cfg.trace is not None:
        offs = cfg.trace.offsets_s / cfg.trace_speed
        n = int(((offs >= plan.warmup_s) & (offs < plan.duration_s)).sum())
        return n / max(plan.duration_s - plan.warmup_s, 1e-9)
    assert cfg.profile is not None
    p = cfg.profile
    full = p.expected_requests()
    before = Profile(_cut(p, plan.warmup_s)).expected_requests() if plan.warmup_s > 0 else 0.0
    return (full - before) / max(plan.duration_s - plan.warmup_s, 1e-9)


def _cut(p: Profile, until_s: float) -> tuple[Any, ...]:
    segs = []
    left = until_s
    for s in p.segments:
        if left <= 0:
            break
        d = min(left, s.duration_s)
        end = s.start_rps + (s.end_rps - s.start_rps) * d / s.duration_s
        segs.append(type(s)(s.start_rps, end, d))
        left -= d
    return tuple(segs)


async def run_once(
    cfg: LoadConfig, transport: Transport, prepared: Prepared, *, label: str | None = None
) -> tuple[dict[str, Any], RunResult]:
    """One run of `cfg`: report document (SLO verdicts included when objectives are set)."""
    plan = _plan(cfg, prepared)
    scraper = servermetrics.Scraper(cfg.server_metrics_url) if cfg.server_metrics_url else None
    before: list[servermetrics.Sample] = []
    server = None

    async def scrape_start() -> None:
        assert scraper is not None
        before.append(await scraper.sample())

    progress = Progress(label or plan.mode.value, plan.duration_s) if cfg.progress else None
    try:
        lead = 0.0
        if scraper is not None:
            t = time.perf_counter()
            await scraper.sample()  # fail early on a wrong URL, and warm the connection
            lead = min(time.perf_counter() - t, 0.05)  # start the window's sample this early
        result = await run(
            plan,
            transport,
            on_start=progress.attach if progress else None,
            at_warmup_end=scrape_start if scraper else None,
            warmup_end_lead_s=lead,
        )
        if scraper is not None and before:
            # Triton counts a request after its response has gone out; give the last ones a
            # moment to be counted
            await asyncio.sleep(_SETTLE_S)
            after = await scraper.sample()
            server = {m: servermetrics.delta(before[0], after, m) for m in plan.models}
    finally:
        if progress is not None:
            progress.close()
        if scraper is not None:
            await scraper.close()
    verdicts = None
    windows = None
    if cfg.objectives:
        verdicts = slo_mod.evaluate(
            cfg.objectives, report.slo_window(result.recorder.measured_total(), cfg.objectives)
        )
        if cfg.slo_window_s is not None:
            windows = attainment.to_json(
                attainment.evaluate(result, cfg.objectives, cfg.slo_window_s)
            )
    doc = report.build(
        result,
        config=cfg.describe(),
        verdicts=verdicts,
        windows=windows,
        server=server,
        offered_rps=offered_rps(cfg, plan),
    )
    return doc, result


def step_passed(doc: dict[str, Any], max_lag_us: float) -> tuple[bool, str]:
    """Did a sweep step hold its SLO with the generator on schedule? (and why not)."""
    lag = doc["schedule_lag"]
    if lag["dropped"]:
        return False, f"generator dropped {lag['dropped']} requests (--max-inflight)"
    if lag["p99_us"] is not None and lag["p99_us"] > max_lag_us:
        return False, f"generator behind schedule (lag p99 {lag['p99_us'] / 1000:.2f} ms)"
    if doc["slo"] is not None and not doc["slo"]["passed"]:
        failed = [o["objective"] for o in doc["slo"]["objectives"] if not o["held"]]
        return False, "SLO missed: " + ", ".join(failed)
    return True, "SLO held"


async def sweep(
    cfg: LoadConfig,
    transport: Transport,
    prepared: Prepared,
    search: SweepSearch,
    step_s: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Find the highest constant/Poisson rate whose step holds every SLO."""
    steps: list[dict[str, Any]] = []
    best_doc: dict[str, Any] | None = None
    last_doc: dict[str, Any] | None = None
    while (rate := search.next_rate()) is not None:
        step_cfg = replace(cfg, profile=Profile.constant(rate, step_s), duration_s=step_s)
        doc, _ = await run_once(step_cfg, transport, prepared, label=f"sweep {rate:.0f} req/s")
        passed, why = step_passed(doc, cfg.max_lag_us)
        search.observe(rate, passed)
        lat = doc["totals"]["latency"]
        steps.append(
            {
                "rate_rps": round(rate, 3),
                "passed": passed,
                "reason": why,
                "throughput_rps": doc["totals"]["throughput_rps"],
                "p50_us": lat["p50_us"],
                "p95_us": lat["p95_us"],
                "p99_us": lat["p99_us"],
                "error_rate": doc["totals"]["error_rate"],
                "lag_p99_us": doc["schedule_lag"]["p99_us"],
            }
        )
        log(
            f"  {rate:10.1f} req/s  {'PASS' if passed else 'FAIL'}  "
            f"p99 {slo_mod.format_us(lat['p99_us'] or float('nan'))}  ({why})"
        )
        last_doc = doc
        if passed and rate == search.best_rps:
            best_doc = doc
        await asyncio.sleep(min(1.0, step_s * 0.1))  # let the server's queues drain
    base = best_doc or last_doc
    assert base is not None
    out = dict(base)
    out["sweep"] = {
        "best_rps": search.best_rps,
        "step_duration_s": step_s,
        "precision": search.precision,
        "steps": steps,
        "report_of": "best passing step" if best_doc else "last step (none passed)",
    }
    out["slo"] = None if base["slo"] is None else {**base["slo"], "passed": best_doc is not None}
    return out
