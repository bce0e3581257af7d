"""How many replicas a model wants now: pure policies over measured load and the SLO.

`decide(knobs, obs, state, cfg, now)` returns a `Decision`: the replica count to aim for, why,
the inputs it used, and the policy's state for the next call (explicit, as in Ray Serve's
`calculate_desired_num_replicas`; no hidden clocks). Three policies:

- **slo** (the autopilot). Demand is the offered rate (admitted + refused) over a *stable*
  window and a short *panic* window (Knative's KPA). Capacity per replica is measured, not
  declared: Triton's busy time per completed inference at the batch sizes seen, remembered at
  its peak (a batching model serves more per second the busier it is, so the peak is the best
  lower bound). Wanted = demand / (capacity x target_utilization) (Little's law at a planned
  utilization), then corrected by SLO error: when P95/P99 over the panic window break the
  target, at least one more replica than are ready. Up is immediate; a panic window at twice
  the ready capacity jumps straight to what it needs and blocks scale-in for a stable window.
  Down waits `scale_down_delay_s` of lower demand, halves at most per step, never while
  latency is within 80% of the target, and never on stale or missing signals (hold).
- **target-inflight**: Ray Serve's `target_ongoing_requests` baseline: mean requests in flight
  (Little's law over the stable window) / target, with Ray's default up/down delays.
- **static**: the warm floor only (plus explicit demand through `ensure`).

Every policy clamps to [min_replicas, max_replicas]; with `min_replicas: 0` a model goes to
zero after `idle_to_zero_s` without a request (the gateway's cold hold brings it back).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controlplane import batching
from controlplane.keepalive import Windows
from controlplane.loadstats import Window
from controlplane.spec import BatchingBounds, ModelSpec, ScalingPolicy


@dataclass(frozen=True)
class ScalerConfig:
    """Fleet-wide autopilot settings (per-model knobs come from the spec)."""

    stable_window_s: float = 30.0
    panic_window_s: float = 5.0
    panic_threshold: float = 2.0  # panic when the panic window needs this many x the ready ones
    slo_min_requests: int = 20  # fewer requests in the panic window: no SLO verdict
    down_hysteresis: float = 0.8  # no scale-in while latency is above this share of the target
    max_scale_up_factor: float = 4.0  # at most this many x the ready replicas in one decision
    # target-inflight baseline: Ray Serve's defaults
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    default_p95_ms: float | None = None  # fleet-wide SLO for models that declare none
    default_p99_ms: float | None = None
    default_max_error_rate: float = 0.001


@dataclass(frozen=True)
class Knobs:
    """A model's autoscaling settings, read from its spec once per decision."""

    policy: ScalingPolicy
    min_replicas: int
    max_replicas: int
    target_inflight: float
    target_utilization: float
    scale_down_delay_s: float
    idle_to_zero_s: float
    p95_s: float | None
    p99_s: float | None
    max_error_rate: float
    max_batch_size: int
    instances: int  # model instances per replica (sum of instance_group counts, at least 1)
    keep: Windows | None = None  # min_replicas 0: when to hold a replica while idle

    @property
    def keep_windows(self) -> Windows:
        return self.keep or Windows(0.0, self.idle_to_zero_s, "fixed")

    @staticmethod
    def of(spec: ModelSpec, cfg: ScalerConfig, keep: Windows | None = None) -> Knobs:
        a, slo = spec.autoscaling, spec.slo
        p95 = slo.p95_ms if slo else cfg.default_p95_ms
        p99 = slo.p99_ms if slo else cfg.default_p99_ms
        return Knobs(
            policy=a.policy,
            min_replicas=spec.policy.min_replicas,
            max_replicas=spec.policy.max_replicas,
            target_inflight=a.target_inflight,
            target_utilization=a.target_utilization,
            scale_down_delay_s=a.scale_down_delay_s,
            idle_to_zero_s=a.idle_to_zero_s,
            p95_s=p95 / 1000 if p95 else None,
            p99_s=p99 / 1000 if p99 else None,
            max_error_rate=slo.max_error_rate if slo else cfg.default_max_error_rate,
            max_batch_size=spec.max_batch_size,
            instances=max(1, sum(g.count for g in spec.instance_groups)),
            keep=keep,
        )


@dataclass(frozen=True)
class Observation:
    """What was measured about one model at `at`."""

    at: float
    ready: int  # replicas READY now
    stable: Window
    panic: Window
    inflight: float = 0.0  # requests in flight through the gateway now
    capacity_rps: float | None = None  # per replica, measured over the stable window
    last_request_at: float | None = None
    fresh: bool = True  # False: the signals are stale or missing; hold


@dataclass(frozen=True)
class ScaleState:
    """What a policy remembers between decisions."""

    desired: int | None = None
    panic_until: float = 0.0
    low_since: float | None = None  # when demand first asked for fewer than `desired`
    high_since: float | None = None  # target-inflight: when it first asked for more
    capacity_peak_rps: float | None = None


@dataclass(frozen=True)
class Decision:
    model: str
    at: float
    policy: str
    ready: int
    previous: int | None
    desired: int
    mode: str  # stable | panic | hold | idle | floor
    reason: str
    inputs: Mapping[str, float | None] = field(default_factory=dict)
    state: ScaleState = field(default_factory=ScaleState)
    admission_limit: int | None = None
    queue_delay_us: int | None = None  # adaptive batching: the delay now served (None: spec's)
    batching: bool = False  # this decision changed the queue delay

    @property
    def changed(self) -> bool:
        return self.previous is not None and self.desired != self.previous


def decide(
    model: str, knobs: Knobs, obs: Observation, state: ScaleState, cfg: ScalerConfig, now: float
) -> Decision:
    """The replicas `model` should have now, with the reason and the next state."""
    peak = _peak(state.capacity_peak_rps, obs.capacity_rps)
    state = replace(state, capacity_peak_rps=peak)
    if knobs.policy is ScalingPolicy.TARGET_INFLIGHT:
        d = _target_inflight(model, knobs, obs, state, cfg, now)
    elif knobs.policy is ScalingPolicy.STATIC:
        d = _decision(model, knobs, obs, state, knobs.min_replicas, "floor", "static policy")
    else:
        d = _slo(model, knobs, obs, state, cfg, now)
    return replace(d, admission_limit=admission_limit(knobs, d.desired, obs.ready, peak))


def admission_limit(knobs: Knobs, desired: int, ready: int, peak_rps: float | None) -> int | None:
    """Requests in flight the gateway should allow: what the ready replicas finish within the
    P99 target (Little's law over the measured peak capacity), never below two full batches per
    replica; None while capacity or the SLO is unknown."""
    target_s = knobs.p99_s or knobs.p95_s
    if peak_rps is None or target_s is None:
        return None
    replicas = max(ready, 1)
    little = math.ceil(replicas * peak_rps * target_s)
    return max(little, replicas * max(1, knobs.max_batch_size) * 2)


def _peak(prev: float | None, cur: float | None) -> float | None:
    if cur is None or not math.isfinite(cur) or cur <= 0:
        return prev
    return cur if prev is None else max(prev, cur)


def _decision(
    model: str,
    knobs: Knobs,
    obs: Observation,
    state: ScaleState,
    want: int,
    mode: str,
    reason: str,
    inputs: Mapping[str, float | None] | None = None,
) -> Decision:
    desired = min(knobs.max_replicas, max(knobs.min_replicas, want))
    if desired != want:
        reason += f" (clamped to [{knobs.min_replicas}, {knobs.max_replicas}])"
    return Decision(
        model=model,
        at=obs.at,
        policy=knobs.policy.value,
        ready=obs.ready,
        previous=state.desired,
        desired=desired,
        mode=mode,
        reason=reason,
        inputs=dict(inputs or {}),
        state=replace(state, desired=desired),
    )


def _idle(knobs: Knobs, obs: Observation, now: float) -> bool:
    """No replica wanted: never used, or idle outside the keep-alive (or before pre-warm)."""
    if knobs.min_replicas > 0 or obs.panic.arrivals or obs.inflight > 0:
        return False
    last = obs.last_request_at
    return last is None or not knobs.keep_windows.wanted(now - last)


def _idle_reason(knobs: Knobs, obs: Observation, now: float) -> str:
    k = knobs.keep_windows
    if obs.last_request_at is None:
        return "never used: no replica"
    idle = now - obs.last_request_at
    if idle < k.prewarm_s:
        return f"idle {idle:.0f}s, next request expected after {k.prewarm_s:.0f}s ({k.source})"
    return f"no request for {idle:.0f}s (keep-alive {k.prewarm_s + k.keepalive_s:.0f}s, {k.source})"


def _slo(
    model: str, knobs: Knobs, obs: Observation, state: ScaleState, cfg: ScalerConfig, now: float
) -> Decision:
    current = state.desired if state.desired is not None else max(obs.ready, knobs.min_replicas)
    inputs: dict[str, float | None] = {
        "rate_stable_rps": round(obs.stable.rate_rps, 2),
        "rate_panic_rps": round(obs.panic.rate_rps, 2),
        "p95_ms": _ms(obs.panic.p95_s),
        "p99_ms": _ms(obs.panic.p99_s),
        "inflight": obs.inflight,
        "capacity_rps": _round(obs.capacity_rps),
        "capacity_peak_rps": _round(state.capacity_peak_rps),
        "ready": obs.ready,
    }
    if not obs.fresh:
        return _decision(
            model, knobs, obs, state, current, "hold", "signals stale or missing: hold", inputs
        )
    if _idle(knobs, obs, now):
        return _decision(
            model,
            knobs,
            obs,
            replace(state, low_since=None, panic_until=0.0),
            0,
            "idle",
            _idle_reason(knobs, obs, now),
            inputs,
        )
    per_replica = (
        state.capacity_peak_rps * knobs.target_utilization if state.capacity_peak_rps else None
    )
    need_stable = need_panic = 0
    if per_replica:
        need_stable = math.ceil(obs.stable.rate_rps / per_replica - 1e-9)
        need_panic = math.ceil(obs.panic.rate_rps / per_replica - 1e-9)
    elif knobs.max_batch_size:  # capacity not measured yet: a full batch in flight per replica
        need_stable = math.ceil(obs.stable.mean_inflight / (knobs.max_batch_size * knobs.instances))
        need_panic = math.ceil(obs.inflight / (knobs.max_batch_size * knobs.instances))
    floor = 1  # not idle: in use, or inside its keep-alive (or pre-warm) window
    ratio = slo_ratio(knobs, obs.panic, cfg)
    inputs["slo_ratio"] = _round(ratio)
    reasons = []
    want = max(need_stable, floor)
    reasons.append(f"stable demand {obs.stable.rate_rps:.1f} rps needs {need_stable}")
    if ratio is not None and ratio > 1.0 and obs.ready > 0:
        slo_need = min(
            math.ceil(obs.ready * min(ratio, 2.0)), math.ceil(obs.ready * cfg.max_scale_up_factor)
        )
        slo_need = max(slo_need, obs.ready + 1)
        if slo_need > want:
            want = slo_need
            reasons.append(f"SLO broken (x{ratio:.2f} of target) → {slo_need}")
    mode = "stable"
    panic_until = state.panic_until
    ready_or_one = max(obs.ready, 1)
    if need_panic >= cfg.panic_threshold * ready_or_one and need_panic > current:
        panic_until = now + cfg.stable_window_s
        mode = "panic"
        reasons.append(f"panic: burst {obs.panic.rate_rps:.1f} rps needs {need_panic}")
        want = max(want, need_panic)
    elif now < panic_until:
        mode = "panic"
        want = max(want, need_panic)
    want = min(want, math.ceil(ready_or_one * cfg.max_scale_up_factor))
    state = replace(state, panic_until=panic_until)
    if want >= current:
        return _decision(
            model,
            knobs,
            obs,
            replace(state, low_since=None),
            want,
            mode,
            "; ".join(reasons),
            inputs,
        )
    # Scale-in: gently, and only when it is safe.
    if mode == "panic":
        return _decision(
            model, knobs, obs, state, current, mode, "in a panic window: no scale-in", inputs
        )
    if ratio is not None and ratio > cfg.down_hysteresis:
        return _decision(
            model,
            knobs,
            obs,
            replace(state, low_since=None),
            current,
            mode,
            f"latency at x{ratio:.2f} of target: no scale-in",
            inputs,
        )
    low_since = state.low_since if state.low_since is not None else now
    if now - low_since < knobs.scale_down_delay_s:
        return _decision(
            model,
            knobs,
            obs,
            replace(state, low_since=low_since),
            current,
            mode,
            f"demand needs {want}; waiting {knobs.scale_down_delay_s - (now - low_since):.0f}s "
            "more before scale-in",
            inputs,
        )
    step = max(want, math.ceil(current / 2))
    return _decision(
        model,
        knobs,
        obs,
        replace(state, low_since=now if step > want else None),
        step,
        mode,
        f"demand needs {want} for {knobs.scale_down_delay_s:g}s: scale in to {step}",
        inputs,
    )


def _target_inflight(
    model: str, knobs: Knobs, obs: Observation, state: ScaleState, cfg: ScalerConfig, now: float
) -> Decision:
    current = state.desired if state.desired is not None else max(obs.ready, knobs.min_replicas)
    mean_inflight = obs.stable.mean_inflight
    want = math.ceil(mean_inflight / knobs.target_inflight - 1e-9)
    inputs: dict[str, float | None] = {
        "mean_inflight": round(mean_inflight, 2),
        "target_inflight": knobs.target_inflight,
        "ready": obs.ready,
    }
    if not obs.fresh:
        return _decision(model, knobs, obs, state, current, "hold", "signals stale: hold", inputs)
    if _idle(knobs, obs, now):
        return _decision(model, knobs, obs, state, 0, "idle", _idle_reason(knobs, obs, now), inputs)
    want = max(want, 1)
    reason = f"mean in flight {mean_inflight:.1f} / target {knobs.target_inflight:g} → {want}"
    # Ray Serve's delays: a change must be asked for continuously this long to happen.
    if want == current:
        state, delay, since = replace(state, low_since=None, high_since=None), 0.0, now
    elif want > current:
        since = state.high_since if state.high_since is not None else now
        state, delay = replace(state, high_since=since, low_since=None), cfg.upscale_delay_s
    else:
        since = state.low_since if state.low_since is not None else now
        state, delay = replace(state, low_since=since, high_since=None), cfg.downscale_delay_s
    if now - since < delay:
        reason += f"; {'up' if want > current else 'down'}scale delay {delay:g}s"
        return _decision(model, knobs, obs, state, current, "stable", reason, inputs)
    state = replace(state, low_since=None, high_since=None)
    return _decision(model, knobs, obs, state, want, "stable", reason, inputs)


def batching_step(
    knobs: Knobs,
    obs: Observation,
    cfg: ScalerConfig,
    bounds: BatchingBounds,
    current_us: int,
    peak_rps: float | None,
    since_change_s: float,
) -> batching.Step | None:
    """The next move of a model's queue delay (AIMD on the panic window's SLO ratio and the
    stable window's utilization of measured capacity), or None to keep `current_us`. The live
    autopilot and the simulator both call this."""
    utilization = obs.stable.rate_rps / (obs.ready * peak_rps) if peak_rps and obs.ready else None
    return batching.next_delay(
        bounds, current_us, slo_ratio(knobs, obs.panic, cfg), utilization, since_change_s
    )


def slo_ratio(knobs: Knobs, w: Window, cfg: ScalerConfig) -> float | None:
    """Measured latency over target (the worse of P95 and P99); None without a verdict."""
    if w.completed < cfg.slo_min_requests:
        return None
    ratios = []
    if knobs.p95_s and w.p95_s is not None:
        ratios.append(w.p95_s / knobs.p95_s)
    if knobs.p99_s and w.p99_s is not None:
        ratios.append(w.p99_s / knobs.p99_s)
    return max(ratios) if ratios else None


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
