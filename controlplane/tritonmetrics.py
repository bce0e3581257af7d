"""Triton's /metrics samples turned into the per-server signal the routing policy reads, and
into the per-model counters that measure a replica's capacity.

Pure: the adapters parse the page (`adapters.promtext`) and hand over `MetricSample`s;
`totals` sums the few families that matter over a server's models, and `derive` turns two
consecutive totals into a `routing.ServerSignal` (means over the interval between them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from controlplane.routing import ServerSignal


class MetricSample(NamedTuple):
    """One sample of a server's Prometheus page, parsed by an adapter (`adapters.promtext`).
    A counter's sample carries its family's name (`nv_inference_count`, no `_total`)."""

    name: str
    labels: Mapping[str, str]
    value: float


_FAMILIES = {
    "nv_inference_pending_request_count": "pending",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_request_success": "success",
    "nv_cpu_utilization": "cpu",
    "nv_gpu_utilization": "gpu",
}


SERVER_FAMILIES = tuple(_FAMILIES)  # what `totals` reads: all a scraper need parse


@dataclass(frozen=True)
class Totals:
    pending: float = 0.0
    queue_us: float = 0.0
    request_us: float = 0.0
    success: float = 0.0
    cpu: float = 0.0
    gpu: float = 0.0


def totals(samples: Iterable[MetricSample]) -> Totals:
    """Sum each family of interest over its label sets (models, GPUs); NaN and ±Inf are
    skipped (a broken sample must not poison the sum)."""
    acc = dict.fromkeys(_FAMILIES.values(), 0.0)
    for name, _, value in samples:
        field = _FAMILIES.get(name)
        if field is not None and math.isfinite(value):
            acc[field] += value
    return Totals(**acc)


def derive(prev: Totals | None, cur: Totals, at: float) -> ServerSignal:
    """The signal at `at` from two scrapes; means are 0 when nothing completed in between."""
    queue_s = latency_s = 0.0
    if prev is not None:
        done = cur.success - prev.success
        if done > 0:
            queue_s = max(cur.queue_us - prev.queue_us, 0.0) / done / 1e6
            latency_s = max(cur.request_us - prev.request_us, 0.0) / done / 1e6
    return ServerSignal(
        at=at,
        pending=cur.pending,
        queue_s=queue_s,
        latency_s=latency_s,
        utilization=max(cur.cpu, cur.gpu),
    )


_MODEL_FAMILIES = {
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_compute_infer_duration_us": "compute_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_request_success": "requests",
}


MODEL_FAMILIES = tuple(_MODEL_FAMILIES)  # what `model_totals` reads


@dataclass(frozen=True)
class ModelTotals:
    """One model's cumulative counters on one server (all versions summed)."""

    inferences: float = 0.0
    executions: float = 0.0
    compute_us: float = 0.0
    queue_us: float = 0.0
    requests: float = 0.0  # successful requests (chargeback)


def model_totals(samples: Iterable[MetricSample]) -> dict[str, ModelTotals]:
    """Per-model sums of the counters that measure service capacity (all versions summed);
    samples without a `model` label, and NaN/±Inf values, are skipped."""
    acc: dict[str, dict[str, float]] = {}
    for name, labels, value in samples:
        field = _MODEL_FAMILIES.get(name)
        model = labels.get("model") if field is not None else None
        if field is None or model is None or not math.isfinite(value):
            continue
        per = acc.setdefault(model, dict.fromkeys(_MODEL_FAMILIES.values(), 0.0))
        per[field] += value
    return {m: ModelTotals(**v) for m, v in acc.items()}


def capacity_rps(
    prev: ModelTotals, cur: ModelTotals, instances: int, min_inferences: int = 10
) -> float | None:
    """Inferences one replica completes per second of busy time at the batch sizes seen.

    Triton adds each execution's compute time to `compute_infer_duration_us` (instances add
    up), so completed inferences over busy seconds, times the instances that can run at once,
    is what the replica serves when it never idles. None with too few inferences to tell.
    """
    done = cur.inferences - prev.inferences
    busy_s = (cur.compute_us - prev.compute_us) / 1e6
    if done < min_inferences or busy_s <= 0:
        return None
    return done / busy_s * max(1, instances)


@dataclass(frozen=True)
class ExecSample:
    """One scrape interval of a model on a server: mean batch size and time per execution."""

    batch: float
    exec_s: float
    weight: float  # executions in the interval


def exec_sample(prev: ModelTotals, cur: ModelTotals) -> ExecSample | None:
    execs = cur.executions - prev.executions
    if execs <= 0:
        return None
    batch = (cur.inferences - prev.inferences) / execs
    exec_s = (cur.compute_us - prev.compute_us) / 1e6 / execs
    if batch <= 0 or exec_s <= 0:
        return None
    return ExecSample(batch, exec_s, execs)


def fit_service_time(
    samples: list[ExecSample], min_spread: float = 0.3
) -> tuple[float, float] | None:
    """Weighted least squares of time per execution = a + b x batch (Clockwork's model).

    None unless the samples span at least `min_spread` in mean batch size (two points on the
    same batch size say nothing about b) and the fit is physical (a >= 0, b >= 0).
    """
    if len(samples) < 3:
        return None
    w = sum(x.weight for x in samples)
    mx = sum(x.weight * x.batch for x in samples) / w
    my = sum(x.weight * x.exec_s for x in samples) / w
    sxx = sum(x.weight * (x.batch - mx) ** 2 for x in samples)
    lo, hi = min(x.batch for x in samples), max(x.batch for x in samples)
    if hi - lo < min_spread or sxx <= 0:
        return None
    b = sum(x.weight * (x.batch - mx) * (x.exec_s - my) for x in samples) / sxx
    a = my - b * mx
    if a < 0 or b < 0:
        return None
    return a, b


def capacity_at(a: float, b: float, batch: int, instances: int) -> float:
    """Inferences per second a replica completes at full batches of `batch`."""
    return max(1, instances) * batch / (a + b * batch)
