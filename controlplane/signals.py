"""Triton's /metrics text turned into the per-server signal the routing policy reads.

Pure: `totals` sums the few families that matter over a server's models, and `derive` turns
two consecutive totals into a `routing.ServerSignal` (means over the interval between them).
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.routing import ServerSignal

_FAMILIES = {
    "nv_inference_pending_request_count": "pending",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_request_success": "success",
    "nv_cpu_utilization": "cpu",
    "nv_gpu_utilization": "gpu",
}


@dataclass(frozen=True)
class Totals:
    pending: float = 0.0
    queue_us: float = 0.0
    request_us: float = 0.0
    success: float = 0.0
    cpu: float = 0.0
    gpu: float = 0.0


def _sample(line: str) -> tuple[str, str, float] | None:
    """(name, labels, value) of one exposition line `name{labels} value [timestamp]`."""
    if not line or line[0] == "#":
        return None
    brace = line.find("{")
    if brace != -1:
        close = line.find("}", brace)
        if close == -1:
            return None
        name, labels, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
    else:
        name, _, rest = line.partition(" ")
        labels = ""
    parts = rest.split()
    if not parts or len(parts) > 2:  # the value, and an optional timestamp
        return None
    try:
        return name, labels, float(parts[0])
    except ValueError:
        return None


def totals(text: str) -> Totals:
    """Sum each family of interest over its label sets (models, GPUs) in Prometheus text."""
    acc = dict.fromkeys(_FAMILIES.values(), 0.0)
    for line in text.splitlines():
        sample = _sample(line)
        field = _FAMILIES.get(sample[0]) if sample else None
        if sample is not None and field is not None:
            acc[field] += sample[2]
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


@dataclass(frozen=True)
class ModelTotals:
    """One model's cumulative counters on one server (all versions summed)."""

    inferences: float = 0.0
    executions: float = 0.0
    compute_us: float = 0.0
    queue_us: float = 0.0
    requests: float = 0.0  # successful requests (chargeback)


def model_totals(text: str) -> dict[str, ModelTotals]:
    """Per-model sums of the counters that measure service capacity, from Triton's /metrics."""
    acc: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        sample = _sample(line)
        field = _MODEL_FAMILIES.get(sample[0]) if sample else None
        if sample is None or field is None:
            continue
        labels = sample[1]
        start = labels.find('model="')
        end = labels.find('"', start + 7) if start != -1 else -1
        if end == -1:
            continue
        per = acc.setdefault(labels[start + 7 : end], dict.fromkeys(_MODEL_FAMILIES.values(), 0.0))
        per[field] += sample[2]
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
