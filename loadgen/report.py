"""The machine-readable report: one JSON document with a stable, versioned schema.

`schema_version` changes only when a field is renamed, removed or changes meaning; new fields
may appear without a bump. Times are in seconds, latencies in microseconds (`*_us`), rates in
requests per second (`*_rps`). docs/loadgen.md describes every field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from loadgen import slo as slo_mod
from loadgen.histogram import Histogram, bucket_bounds
from loadgen.recorder import DROPPED, ModelStats, Recorder
from loadgen.runner import Mode, RunResult
from loadgen.servermetrics import ServerWindow

SCHEMA_VERSION = 1

CO_NOTE = {
    Mode.OPEN: "latency measured from each request's intended send time (no coordinated omission)",
    Mode.CLOSED: (
        "closed loop: latency measured from the actual send; while the server stalls no request "
        "is sent, so stalls are under-represented (coordinated omission)"
    ),
}


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 3)


def latency_block(h: Histogram) -> dict[str, Any]:
    s = h.summary()
    return {
        "count": s.count,
        "min_us": s.min if s.count else None,
        "mean_us": _num(s.mean),
        "p50_us": _num(s.p50),
        "p90_us": _num(s.p90),
        "p95_us": _num(s.p95),
        "p99_us": _num(s.p99),
        "p999_us": _num(s.p999),
        "max_us": s.max if s.count else None,
    }


# Admission control said no: errors like any other (the client saw a failure), also counted apart.
REJECTED_KINDS = frozenset({"http_429", "grpc_RESOURCE_EXHAUSTED"})


def rejected(m: ModelStats) -> int:
    return sum(n for kind, n in m.errors.items() if kind in REJECTED_KINDS)


def _stats_block(m: ModelStats, window_s: float) -> dict[str, Any]:
    errors = sum(m.errors.values())
    return {
        "requests": m.requests,
        "successes": m.ok,
        "errors": errors,
        "rejected": rejected(m),
        "error_rate": round(errors / m.requests, 6) if m.requests else 0.0,
        "errors_by_kind": dict(sorted(m.errors.items())),
        "goodput_rps": round(m.ok / window_s, 3),
        "latency": latency_block(m.latency),
        "service_time": latency_block(m.service),
    }


def slo_window(m: ModelStats, objectives: Sequence[slo_mod.Objective]) -> slo_mod.Window:
    qs = slo_mod.quantiles_needed(objectives)
    values = m.latency.quantiles(qs)
    if 1.0 in qs and m.latency.count:
        values[qs.index(1.0)] = float(m.latency.max)
    return slo_mod.Window(
        quantile_us=dict(zip(qs, values, strict=True)),
        mean_us=m.latency.mean,
        requests=m.requests,
        errors=sum(m.errors.values()),
    )


def build(
    result: RunResult,
    *,
    config: Mapping[str, Any],
    verdicts: Sequence[slo_mod.Verdict] | None,
    windows: Mapping[str, Any] | None = None,
    server: Mapping[str, ServerWindow | None] | None,
    offered_rps: float | None,
) -> dict[str, Any]:
    rec: Recorder = result.recorder
    plan = result.plan
    window_s = result.window_s
    total = rec.measured_total()
    warm_req = sum(m.requests for m in rec.warmup)
    warm_err = sum(sum(m.errors.values()) for m in rec.warmup)
    lag = rec.lag.summary()
    dropped = total.errors.get(DROPPED, 0)
    totals = _stats_block(total, window_s)
    totals["throughput_rps"] = round(rec.completed_in_window / window_s, 3)
    totals["offered_rps"] = _num(offered_rps)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": "tritonfleet-loadgen",
        "started_at_unix_s": round(result.started_wall, 3),
        "mode": plan.mode.value,
        "latency_origin": "intended" if plan.mode is Mode.OPEN else "sent",
        "note": CO_NOTE[plan.mode],
        "config": dict(config),
        "window": {
            "start_s": plan.warmup_s,
            "end_s": plan.duration_s,
            "duration_s": round(window_s, 6),
            "drained_at_s": round(result.finished_s, 3),
        },
        "warmup": {"duration_s": plan.warmup_s, "requests": warm_req, "errors": warm_err},
        "totals": totals,
        "schedule_lag": {
            "applies": plan.mode is Mode.OPEN,
            "count": lag.count,
            "p50_us": _num(lag.p50),
            "p99_us": _num(lag.p99),
            "p999_us": _num(lag.p999),
            "max_us": lag.max if lag.count else None,
            "dropped": dropped,
            "late_over_1ms_fraction": _late_fraction(rec.lag, 1000),
        },
        "models": {
            name: _stats_block(m, window_s)
            for name, m in zip(rec.models, rec.measured, strict=True)
        },
        "per_second": _per_second(rec),
        "server_metrics": None
        if server is None
        else {
            name: None if w is None else {**w.__dict__, "avg_batch": _num(w.avg_batch)}
            for name, w in server.items()
        },
        "slo": None
        if verdicts is None
        else {
            "passed": all(v.held for v in verdicts),
            "objectives": [
                {
                    "objective": v.objective.text,
                    "stat": v.objective.stat,
                    "limit": v.objective.limit,
                    "measured": _num(v.measured),
                    "unit": "fraction" if v.objective.kind is slo_mod.Kind.ERRORS else "us",
                    "held": v.held,
                }
                for v in verdicts
            ],
        },
        "slo_windows": None if windows is None else dict(windows),
        "histograms": {"latency_us": total.latency.to_dict(), "lag_us": rec.lag.to_dict()},
    }
    return doc


def _late_fraction(h: Histogram, limit_us: int) -> float | None:
    if not h.count:
        return None
    late = sum(n for idx, n in h.counts.items() if bucket_bounds(idx, h.bits)[0] > limit_us)
    return round(late / h.count, 6)


def _per_second(rec: Recorder) -> list[dict[str, Any]]:
    out = []
    for i, s in enumerate(rec.seconds):
        lat = s.latency
        p50, p95, p99 = lat.quantiles([0.5, 0.95, 0.99])
        out.append(
            {
                "t_s": i,
                "warmup": i < rec.warmup_s,
                "sent": s.sent,
                "ok": s.ok,
                "errors": s.errors,
                "completed_ok": s.completed_ok,
                "p50_us": _num(p50),
                "p95_us": _num(p95),
                "p99_us": _num(p99),
                "max_us": lat.max if lat.count else None,
                "lag_p99_us": _num(s.lag.quantile(0.99)) if s.lag.count else None,
                "by_model": {
                    rec.models[m]: {"ok": ms.ok, "errors": sum(ms.errors.values())}
                    for m, ms in sorted(s.by_model.items())
                },
            }
        )
    return out


def summary_text(doc: Mapping[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    t = doc["totals"]
    lat = t["latency"]
    svc = t["service_time"]
    lag = doc["schedule_lag"]

    f = _us_text
    lines = [
        f"mode        {doc['mode']}  ({doc['note']})",
        f"window      {doc['window']['duration_s']:.1f} s after {doc['warmup']['duration_s']:g} s "
        f"warm-up ({doc['warmup']['requests']} warm-up requests excluded)",
        f"requests    {t['requests']}  ok {t['successes']}  errors {t['errors']} "
        f"({t['error_rate'] * 100:.3g}%)"
        + (f"  {t['errors_by_kind']}" if t["errors_by_kind"] else ""),
        f"throughput  {t['throughput_rps']:.1f} req/s"
        + (f" (offered {t['offered_rps']:.1f})" if t.get("offered_rps") else ""),
        f"latency     p50 {f(lat['p50_us'])}  p95 {f(lat['p95_us'])}  p99 {f(lat['p99_us'])}  "
        f"p99.9 {f(lat['p999_us'])}  max {f(lat['max_us'])}",
    ]
    if doc["mode"] == Mode.OPEN.value:
        lines.append(
            f"service     p50 {f(svc['p50_us'])}  p99 {f(svc['p99_us'])}  (from actual send, "
            "what a closed-loop tool would show)"
        )
        lines.append(
            f"sched. lag  p50 {f(lag['p50_us'])}  p99 {f(lag['p99_us'])}  max {f(lag['max_us'])}"
            f"  dropped {lag['dropped']}"
            + ("  ** generator fell behind its schedule **" if _behind(lag) else "")
        )
    if doc.get("server_metrics"):
        for name, w in doc["server_metrics"].items():
            if w:
                lines.append(
                    f"server      {name}: queue {f(w['avg_queue_us'])}  compute "
                    f"{f(w['avg_compute_infer_us'])}  (avg per request, Triton metrics)"
                )
    return "\n".join(lines)


def _behind(lag: Mapping[str, Any]) -> bool:
    return bool(lag["dropped"]) or (lag["p99_us"] is not None and lag["p99_us"] > 1000)


def slo_table(doc: Mapping[str, Any]) -> str:
    """The SLO table of a report: objective, limit, measured value, PASS/FAIL."""
    rows = [("objective", "limit", "measured", "result")]
    for o in doc["slo"]["objectives"]:
        if o["unit"] == "fraction":
            limit = f"{'<=' if '<=' in o['objective'] else '<'} {o['limit'] * 100:g}%"
            measured = f"{o['measured'] * 100:.3g}%" if o["measured"] is not None else "n/a"
        else:
            limit = f"<= {slo_mod.format_us(o['limit'])}"
            measured = slo_mod.format_us(o["measured"]) if o["measured"] is not None else "n/a"
        rows.append((o["stat"], limit, measured, "PASS" if o["held"] else "FAIL"))
    return _text_table(rows)


def windows_table(doc: Mapping[str, Any]) -> str:
    """Per-window SLO attainment of a report (`slo_windows`): a headline and one row a window."""
    block = doc["slo_windows"]
    rows: list[tuple[str, ...]] = [
        ("window", "requests", "errors", "rejected", "p50", "p95", "p99", "goodput", "SLO")
    ]
    for w in block["windows"]:
        missed = [stat for stat, held in w["held"].items() if not held]
        rows.append(
            (
                f"{w['start_s']:g}-{w['end_s']:g} s",
                str(w["requests"]),
                f"{w['errors']} ({w['error_rate'] * 100:.3g}%)",
                str(w["rejected"]),
                *(_us_text(w[f"{q}_us"]) for q in ("p50", "p95", "p99")),
                f"{w['goodput_rps']:.1f}/s",
                "met" if w["met"] else "MISSED " + ",".join(missed),
            )
        )
    lines = [
        f"SLO per {block['window_s']:g} s window: {block['met']} of {block['count']} met "
        f"(attainment {block['attainment'] * 100:.1f}%)",
        _text_table(rows),
    ]
    for name, m in block["models"].items():
        lines.append(
            f"  model {name}: {m['met']} of {m['count']} windows met ({m['attainment'] * 100:.1f}%)"
        )
    return "\n".join(lines)


def _us_text(us: float | None) -> str:
    return slo_mod.format_us(us) if us is not None else "n/a"


def _text_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, a rule under the header row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
