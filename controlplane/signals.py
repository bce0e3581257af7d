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


def totals(text: str) -> Totals:
    """Sum each family of interest over its label sets (models, GPUs) in Prometheus text."""
    acc = dict.fromkeys(_FAMILIES.values(), 0.0)
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.rfind(" ")
        name = line[:brace] if brace != -1 else line[:space]
        field = _FAMILIES.get(name)
        if field is None or space == -1:
            continue
        try:
            acc[field] += float(line[space + 1 :])
        except ValueError:
            continue
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
