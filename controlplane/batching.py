"""Adaptive batching: the dynamic batcher's queue delay, moved AIMD-style within spec bounds.

Clipper's rule, applied to Triton's `max_queue_delay_microseconds`: under latency pressure
(measured P95/P99 at 90% of the SLO target or more) the delay is halved towards its minimum,
so requests stop waiting for batch-mates they cannot afford; with slack (latency under half the
target) while the replicas are busy (offered load above 60% of their measured capacity) it
grows by one step, so bigger batches buy throughput. Otherwise it holds.

A new delay is a new Triton config, and on Triton 2.51 a changed `dynamic_batching` is applied
by a reload (the old model keeps serving until the new one is ready; only instance-group counts
are updated in place), so changes are rate-limited (`min_interval_s`) and small ones skipped.
Pure: the autopilot calls `next_delay`; `apply` rewrites a rendered config (Triton's protobuf
as JSON) with the tuned delay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from controlplane.spec import BatchingBounds


@dataclass(frozen=True)
class BatchingConfig:
    pressure: float = 0.9  # SLO ratio at or above which the delay is cut
    slack: float = 0.5  # SLO ratio under which the delay may grow ...
    busy: float = 0.6  # ... when offered load is at least this share of capacity
    min_interval_s: float = 60.0  # at most one change (one reload) per model this often
    min_change: float = 0.2  # skip changes smaller than this share of the current delay


@dataclass(frozen=True)
class Step:
    delay_us: int
    reason: str


def next_delay(
    bounds: BatchingBounds,
    current_us: int,
    slo_ratio: float | None,
    utilization: float | None,
    since_change_s: float,
    cfg: BatchingConfig | None = None,
) -> Step | None:
    """The new delay, or None to keep `current_us`."""
    cfg = cfg or BatchingConfig()
    if slo_ratio is None or since_change_s < cfg.min_interval_s:
        return None
    lo, hi = bounds.min_queue_delay_us, bounds.max_queue_delay_us
    step = max(500, (hi - lo) // 8)
    if slo_ratio >= cfg.pressure:
        want = max(lo, current_us // 2)
        reason = f"latency at x{slo_ratio:.2f} of target: halve the queue delay"
    elif slo_ratio < cfg.slack and utilization is not None and utilization >= cfg.busy:
        want = min(hi, current_us + step)
        reason = (
            f"latency at x{slo_ratio:.2f} of target with {utilization:.0%} of capacity in use: "
            "grow the queue delay"
        )
    else:
        return None
    if want == current_us or abs(want - current_us) < cfg.min_change * max(current_us, 1):
        return None
    return Step(want, reason)


def clamp(bounds: BatchingBounds, delay_us: int) -> int:
    return min(bounds.max_queue_delay_us, max(bounds.min_queue_delay_us, delay_us))


def apply(config_json: str, delay_us: int | None) -> str:
    """`config_json` (Triton's ModelConfig as JSON) with the tuned queue delay, if any."""
    if delay_us is None:
        return config_json
    cfg = json.loads(config_json)
    cfg.setdefault("dynamic_batching", {})["max_queue_delay_microseconds"] = str(delay_us)
    return json.dumps(cfg)
