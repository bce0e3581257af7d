"""SLO attainment per window: was the SLO met in each stretch of the run, not just overall?

A run's aggregate p99 can hide a minute in which every request was slow. Here the measured
period (warm-up excluded) is cut into consecutive windows of `window_s` seconds, aligned to the
end of the warm-up, by each request's *intended* send time, and every window is judged on its
own with `slo.evaluate`. Attainment is the fraction of windows that met every objective.

Windows are built from the recorder's per-second statistics (seconds counted from the run's
start), so `window_s` and the warm-up must be whole numbers of seconds. A trailing remainder shorter than half a window is merged into the last window (which
then runs to the end of the measured period; no request is left out, so the windows' counts add
up to the run's totals); a remainder of at least half a window is a window of its own, marked
`partial`. A window with no requests fails, as a whole run with none would (`slo.evaluate`).

Rejections (HTTP 429, gRPC RESOURCE_EXHAUSTED: admission control said no) are errors like any
other for the `errors<` objective, since the client saw a failure; they are also counted apart
as `rejected`, so a caller can tell shed load from broken requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen import report
from loadgen import slo as slo_mod
from loadgen.recorder import ModelStats, Recorder
from loadgen.runner import RunResult


@dataclass(frozen=True)
class SloWindow:
    """One window's requests and verdict. Times in seconds after the run's start (t0)."""

    index: int
    start_s: float
    end_s: float
    partial: bool  # a trailing window shorter than `window_s`
    requests: int
    successes: int
    errors: int  # every failure, rejections included
    rejected: int  # HTTP 429 / gRPC RESOURCE_EXHAUSTED, also counted in `errors`
    errors_by_kind: dict[str, int]
    p50_s: float | None  # latency of the successes; None when there were none
    p95_s: float | None
    p99_s: float | None
    goodput_rps: float  # successes per second of the window
    held: dict[str, bool]  # objective stat ("p95", "errors", ...) -> held in this window
    met: bool  # every objective held

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Attainment:
    """Windows of one series (the whole run or one model) and how many met the SLO."""

    window_s: float
    windows: tuple[SloWindow, ...]

    @property
    def met(self) -> int:
        return sum(w.met for w in self.windows)

    @property
    def fraction(self) -> float:
        return self.met / len(self.windows) if self.windows else 0.0


@dataclass(frozen=True)
class WindowReport:
    """Attainment of the whole run, and per model when the run had several."""

    objectives: tuple[slo_mod.Objective, ...]
    overall: Attainment
    models: dict[str, Attainment] = field(default_factory=dict)


def window_problem(window_s: float, duration_s: float, warmup_s: float) -> str | None:
    """Why windows of `window_s` cannot cut the measured part of a run of `duration_s` with
    `warmup_s` of warm-up; None if they can."""
    if not window_s > 0:
        return f"must be above zero, got {window_s:g} s"
    if not float(window_s).is_integer():
        return f"{window_s:g} s is not a whole number of seconds (statistics are kept per second)"
    if not float(warmup_s).is_integer():
        return (
            f"needs a warm-up of whole seconds, so that windows start on a second of the run "
            f"(the warm-up is {warmup_s:g} s; change --warmup)"
        )
    measured_s = duration_s - warmup_s
    if window_s > measured_s + 1e-9:
        return (
            f"{window_s:g} s is longer than the measured period ({measured_s:g} s: --duration "
            "less --warmup); choose a shorter window or a longer run"
        )
    return None


def bounds(measured_s: float, window_s: float) -> list[tuple[float, float, bool]]:
    """(start, end, partial) of each window, in seconds after the warm-up's end."""
    full = math.floor(measured_s / window_s + 1e-9)
    rest = measured_s - full * window_s
    out = [(k * window_s, (k + 1) * window_s, False) for k in range(full)]
    if rest > 1e-9:
        if out and rest < window_s / 2:
            start, _, _ = out.pop()
            out.append((start, measured_s, False))
        else:
            out.append((full * window_s, measured_s, True))
    return out


def slo_windows(
    result: RunResult,
    slo: str | Sequence[slo_mod.Objective],
    window_s: float,
    *,
    model: str | None = None,
) -> list[SloWindow]:
    """Judge `slo` (text like "p95=100ms,errors<1%" or parsed objectives) per window of a
    finished run; `model` limits it to one model's requests. Plain data, one entry per window."""
    objectives = slo_mod.parse(slo) if isinstance(slo, str) else tuple(slo)
    rec = result.recorder
    indices = range(len(rec.models)) if model is None else [_model_index(rec, model)]
    return list(_windows(result, objectives, window_s, indices))


def evaluate(
    result: RunResult, objectives: Sequence[slo_mod.Objective], window_s: float
) -> WindowReport:
    """Attainment of the whole run, and of each model when there are several."""
    rec = result.recorder
    overall = Attainment(
        window_s, tuple(_windows(result, objectives, window_s, range(len(rec.models))))
    )
    models = {}
    if len(rec.models) > 1:
        models = {
            name: Attainment(window_s, tuple(_windows(result, objectives, window_s, [i])))
            for i, name in enumerate(rec.models)
        }
    return WindowReport(tuple(objectives), overall, models)


def _model_index(rec: Recorder, model: str) -> int:
    try:
        return rec.models.index(model)
    except ValueError as exc:
        raise ValueError(f"model {model!r} was not part of this run {rec.models}") from exc


def _windows(
    result: RunResult,
    objectives: Sequence[slo_mod.Objective],
    window_s: float,
    models: Sequence[int],
) -> list[SloWindow]:
    plan = result.plan
    if (problem := window_problem(window_s, plan.duration_s, plan.warmup_s)) is not None:
        raise ValueError(f"window_s: {problem}")
    rec = result.recorder
    spans = bounds(result.window_s, window_s)
    first, width = int(plan.warmup_s), int(window_s)
    parts: list[list[ModelStats]] = [[] for _ in spans]
    for i in range(first, len(rec.seconds)):
        # a second past the last window's end (a request intended at the very end) joins it
        k = min((i - first) // width, len(spans) - 1)
        sec = rec.seconds[i]
        parts[k].extend(sec.by_model[m] for m in models if m in sec.by_model)
    out = []
    for k, ((start, end, partial), stats) in enumerate(zip(spans, parts, strict=True)):
        m = ModelStats.merged(stats, rec.bits)
        verdicts = slo_mod.evaluate(objectives, report.slo_window(m, objectives))
        p50, p95, p99 = m.latency.quantiles([0.5, 0.95, 0.99])
        out.append(
            SloWindow(
                index=k,
                start_s=round(plan.warmup_s + start, 6),
                end_s=round(plan.warmup_s + end, 6),
                partial=partial,
                requests=m.requests,
                successes=m.ok,
                errors=sum(m.errors.values()),
                rejected=report.rejected(m),
                errors_by_kind=dict(sorted(m.errors.items())),
                p50_s=_seconds(p50),
                p95_s=_seconds(p95),
                p99_s=_seconds(p99),
                goodput_rps=round(m.ok / (end - start), 3),
                held={v.objective.stat: v.held for v in verdicts},
                met=all(v.held for v in verdicts),
            )
        )
    return out


def _seconds(us: float) -> float | None:
    return None if math.isnan(us) else us / 1e6


def to_json(rep: WindowReport) -> dict[str, Any]:
    """The `slo_windows` block of the JSON report (latencies in µs, as everywhere there)."""

    def series(a: Attainment) -> dict[str, Any]:
        return {
            "count": len(a.windows),
            "met": a.met,
            "attainment": round(a.fraction, 6),
            "windows": [_window_json(w) for w in a.windows],
        }

    return {
        "window_s": rep.overall.window_s,
        **series(rep.overall),
        "models": {name: series(a) for name, a in rep.models.items()},
    }


def _window_json(w: SloWindow) -> dict[str, Any]:
    def us(s: float | None) -> float | None:
        return None if s is None else round(s * 1e6, 3)

    return {
        "index": w.index,
        "start_s": w.start_s,
        "end_s": w.end_s,
        "partial": w.partial,
        "requests": w.requests,
        "successes": w.successes,
        "errors": w.errors,
        "rejected": w.rejected,
        "error_rate": round(w.error_rate, 6),
        "errors_by_kind": w.errors_by_kind,
        "p50_us": us(w.p50_s),
        "p95_us": us(w.p95_s),
        "p99_us": us(w.p99_s),
        "goodput_rps": w.goodput_rps,
        "held": w.held,
        "met": w.met,
    }
