"""The SLO autopilot: measured load in, wanted replicas, admission limits and fleet size out.

Once per reconciler tick `step()` reads each model's signals through the `LoadSignals` port,
runs the pure policy (`autoscale.decide`) and keeps the result: `wanted(model)` feeds the
planner's target, `admission(model)` the gateway's in-flight limit, and `servers_wanted()` the
fleet driver. It does no I/O of its own beyond the port, so the same object runs against fakes
in tests and in a simulator.

Every decision is kept with its inputs and reason (`decisions(model)`, newest last); a change
of target is logged once as `old → new`, quiet ticks are not, and is published to the
control plane's `EventFeed`. What each step measured is kept per model in a bounded
`Timeline` (the dashboard's latency charts).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from controlplane import autoscale, batching, keepalive
from controlplane.autoscale import Decision, Knobs, Observation, ScalerConfig, ScaleState
from controlplane.events import EventFeed, EventKind
from controlplane.fleet import Server
from controlplane.loadstats import Window
from controlplane.spec import ModelSpec, ScalingPolicy
from controlplane.timeline import Point, Targets, Timeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    """One model's signals as a `LoadSignals` source read them."""

    stable: Window
    panic: Window
    inflight: float = 0.0
    last_request_at: float | None = None
    capacity_rps: float | None = None  # per replica
    fresh: bool = True


class LoadSignals(Protocol):
    """Where per-model load comes from: the in-process gateway, or Prometheus."""

    async def read(
        self,
        models: Mapping[str, tuple[ModelSpec, Sequence[Server]]],
        stable_s: float,
        panic_s: float,
        now: float,
    ) -> Mapping[str, Measured]:
        """Signals for each model (spec, servers holding a ready replica); missing = stale."""
        ...


@dataclass(frozen=True)
class FleetBounds:
    """How far the autopilot may grow or shrink the fleet of servers."""

    min_servers: int = 1
    max_servers: int = 1
    idle_s: float = 30.0  # an empty highest-ordinal server is stopped after this long

    @property
    def elastic(self) -> bool:
        return self.max_servers > self.min_servers


@dataclass
class _ModelPilot:
    state: ScaleState = field(default_factory=ScaleState)
    last: Decision | None = None
    history: deque[Decision] = field(default_factory=lambda: deque(maxlen=100))
    idle: keepalive.IdleHistogram = field(default_factory=keepalive.IdleHistogram)
    last_request_at: float | None = None
    # adaptive batching: the tuned queue delay, its version, and what it was tuned from
    delay_us: int | None = None
    tuning: int = 0
    delay_changed_at: float = float("-inf")
    delay_basis: tuple[int, int, int] | None = None  # (spec delay, min, max)

    def saw(self, last_request_at: float | None, min_gap_s: float) -> None:
        """Feed the idle-time histogram with the gap before a request that ended a quiet spell."""
        prev, self.last_request_at = self.last_request_at, last_request_at
        if prev is not None and last_request_at is not None and last_request_at - prev >= min_gap_s:
            self.idle.add(last_request_at - prev)


class Autopilot:
    def __init__(
        self,
        signals: LoadSignals | None,
        config: ScalerConfig | None = None,
        bounds: FleetBounds | None = None,
        events: EventFeed | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self._signals = signals
        self.config = config or ScalerConfig()
        self.bounds = bounds or FleetBounds()
        self.events = events or EventFeed()
        self.timeline = timeline or Timeline()
        self._models: dict[str, _ModelPilot] = {}
        self._specs: dict[str, ModelSpec] = {}
        self.actions: Counter[tuple[str, str]] = Counter()  # (model, scale_up|scale_down|...)
        self._empty_since: dict[str, float] = {}
        self.fleet_reason = ""
        self.idle_gap_s = 2.0  # a gap in requests at least this long is an idle spell

    @property
    def enabled(self) -> bool:
        return self._signals is not None

    def attach(self, signals: LoadSignals) -> None:
        """Start deciding from `signals` (the gateway is built after the reconciler)."""
        self._signals = signals

    # --- the step -----------------------------------------------------------------------
    async def step(
        self, specs: Mapping[str, ModelSpec], ready: Mapping[str, Sequence[Server]], now: float
    ) -> dict[str, Decision]:
        """Decide every registered model's replicas from fresh signals (stale: hold)."""
        self._specs = dict(specs)
        for name in [n for n in self._models if n not in specs]:
            del self._models[name]
        self.timeline.retain(specs)
        if self._signals is None or not specs:
            return {}
        cfg = self.config
        try:
            measured = await self._signals.read(
                {n: (s, ready.get(n, ())) for n, s in specs.items()},
                cfg.stable_window_s,
                cfg.panic_window_s,
                now,
            )
        except Exception as exc:  # no signals is a reason to hold, never to stop
            log.warning("autopilot: reading signals failed, holding every model: %s", exc)
            measured = {}
        out = {}
        for name, spec in specs.items():
            pilot = self._models.setdefault(name, _ModelPilot())
            m = measured.get(name)
            obs = Observation(
                at=now,
                ready=len(ready.get(name, ())),
                stable=m.stable if m else Window(at=now, span_s=cfg.stable_window_s),
                panic=m.panic if m else Window(at=now, span_s=cfg.panic_window_s),
                inflight=m.inflight if m else 0.0,
                capacity_rps=m.capacity_rps if m else None,
                last_request_at=m.last_request_at if m else None,
                fresh=m.fresh if m else False,
            )
            if m is not None:
                pilot.saw(m.last_request_at, self.idle_gap_s)
            keep = keepalive.windows(pilot.idle, spec.autoscaling.idle_to_zero_s)
            knobs = Knobs.of(spec, cfg, keep)
            d = autoscale.decide(name, knobs, obs, pilot.state, cfg, now)
            d = self._tune_batching(name, spec, knobs, obs, pilot, d, now)
            self._record(pilot, d)
            self._chart(name, knobs, obs, d)
            out[name] = d
        return out

    def _tune_batching(
        self,
        name: str,
        spec: ModelSpec,
        knobs: Knobs,
        obs: Observation,
        pilot: _ModelPilot,
        d: Decision,
        now: float,
    ) -> Decision:
        """AIMD on the dynamic batcher's queue delay, for specs that declare bounds."""
        bounds = spec.autoscaling.batching
        if bounds is None or spec.dynamic_batching is None:
            pilot.delay_us, pilot.delay_basis = None, None
            return d
        basis = (
            spec.dynamic_batching.max_queue_delay_us,
            bounds.min_queue_delay_us,
            bounds.max_queue_delay_us,
        )
        if pilot.delay_basis != basis:  # new spec: start again from what it declares
            pilot.delay_basis = basis
            pilot.delay_us = None
        current = (
            pilot.delay_us
            if pilot.delay_us is not None
            else batching.clamp(bounds, spec.dynamic_batching.max_queue_delay_us)
        )
        if pilot.delay_us is None and current != spec.dynamic_batching.max_queue_delay_us:
            pilot.delay_us, pilot.tuning = current, pilot.tuning + 1  # the spec is out of bounds
        step = autoscale.batching_step(
            knobs,
            obs,
            self.config,
            bounds,
            current,
            d.state.capacity_peak_rps,
            now - pilot.delay_changed_at,
        )
        if step is None:
            return replace(d, queue_delay_us=pilot.delay_us)
        log.info(
            "model %s: max_queue_delay_us %d → %d (%s)", name, current, step.delay_us, step.reason
        )
        pilot.delay_us, pilot.tuning, pilot.delay_changed_at = step.delay_us, pilot.tuning + 1, now
        self.actions[name, "batching"] += 1
        return replace(
            d, queue_delay_us=step.delay_us, reason=f"{d.reason}; {step.reason}", batching=True
        )

    def queue_delay(self, model: str) -> tuple[int, int | None]:
        """(tuning version, tuned max_queue_delay_us or None for the spec's own)."""
        pilot = self._models.get(model)
        return (pilot.tuning, pilot.delay_us) if pilot else (0, None)

    def _chart(self, name: str, knobs: Knobs, obs: Observation, d: Decision) -> None:
        w = obs.panic
        self.timeline.add(
            name,
            Point(
                at=obs.at,
                rate_rps=w.rate_rps,
                p50_s=w.p50_s,
                p95_s=w.p95_s,
                p99_s=w.p99_s,
                error_rate=w.error_rate,
                ready=obs.ready,
                desired=d.desired,
            ),
            Targets(knobs.p95_s, knobs.p99_s, knobs.max_error_rate),
        )

    def _record(self, pilot: _ModelPilot, d: Decision) -> None:
        prev = pilot.last
        pilot.state, pilot.last = d.state, d
        if d.changed or d.batching or prev is None or prev.mode != d.mode:
            pilot.history.append(d)
            self.events.publish(
                EventKind.AUTOPILOT, d.model, _summary(prev, d), d.at, decision_view(d)
            )
        if d.changed:
            assert d.previous is not None
            kind = "scale_up" if d.desired > d.previous else "scale_down"
            self.actions[d.model, kind] += 1
            log.info(
                "model %s: replicas %d → %d (%s; %s)",
                d.model,
                d.previous,
                d.desired,
                d.mode,
                d.reason,
            )
        elif prev is not None and prev.mode != d.mode and d.mode == "hold":
            self.actions[d.model, "hold"] += 1
            log.info("model %s: %s → hold (%s)", d.model, prev.mode, d.reason)

    # --- what the rest of the control plane reads ----------------------------------------
    def wanted(self, model: str) -> int | None:
        """Replicas the autopilot wants for `model`; None when it has no opinion (static)."""
        pilot = self._models.get(model)
        spec = self._specs.get(model)
        if pilot is None or pilot.last is None or spec is None:
            return None
        if spec.autoscaling.policy is ScalingPolicy.STATIC:
            return None
        return pilot.last.desired

    def admission(self, model: str) -> int | None:
        spec = self._specs.get(model)
        if spec is None:
            return None
        limit = spec.admission.max_inflight
        if isinstance(limit, int) or limit is None:
            return limit
        pilot = self._models.get(model)
        return pilot.last.admission_limit if pilot and pilot.last else None

    def decisions(self, model: str) -> list[dict[str, Any]]:
        pilot = self._models.get(model)
        if pilot is None:
            return []
        rows = list(pilot.history)
        if pilot.last is not None and (not rows or rows[-1] is not pilot.last):
            rows.append(pilot.last)
        return [decision_view(d) for d in rows]

    def status(self, model: str) -> dict[str, Any] | None:
        pilot = self._models.get(model)
        spec = self._specs.get(model)
        if pilot is None or pilot.last is None:
            return None
        d = pilot.last
        return {
            "policy": d.policy,
            "desired": d.desired,
            "mode": d.mode,
            "reason": d.reason,
            "admission_limit": self.admission(model),
            "queue_delay_us": pilot.delay_us,
            "signals": "stale: holding" if d.mode == "hold" else "fresh",
            "keep_alive": asdict(keepalive.windows(pilot.idle, spec.autoscaling.idle_to_zero_s))
            if spec is not None and spec.policy.min_replicas == 0
            else None,
        }

    def counters(self) -> dict[tuple[str, str], int]:
        return dict(self.actions)

    # --- fleet size ---------------------------------------------------------------------
    def servers_wanted(
        self,
        servers: Sequence[Server],
        replicas_per_server: Mapping[str, int],
        shortfall: int,
        now: float,
    ) -> int | None:
        """How many servers the fleet should have, or None to leave it as it is.

        Grow by the largest number of replicas some model could not place (one replica per
        server per model), up to `max_servers`, and not while a server is still starting.
        Shrink one at a time, only when nothing is short and the highest-ordinal server (the
        one a StatefulSet or the local fleet removes first) has held no replica for `idle_s`.
        """
        b = self.bounds
        n = len(servers)
        if not b.elastic or n == 0:
            return None
        if shortfall > 0:
            self._empty_since.clear()
            if n >= b.max_servers:
                self.fleet_reason = f"{shortfall} replica(s) unplaced; at max_servers={n}"
                return None
            if any(not s.live for s in servers):
                return None  # one is starting (or down): see what it brings first
            self.fleet_reason = f"{shortfall} replica(s) could not be placed"
            return min(b.max_servers, n + shortfall)
        if n <= b.min_servers:
            self._empty_since.clear()
            return None
        top = servers[-1]
        if replicas_per_server.get(top.id, 0) > 0:
            self._empty_since.pop(top.id, None)
            return None
        since = self._empty_since.setdefault(top.id, now)
        if now - since < b.idle_s:
            return None
        del self._empty_since[top.id]
        self.fleet_reason = f"{top.id} empty for {b.idle_s:g}s"
        return max(b.min_servers, n - 1)


def decision_view(d: Decision) -> dict[str, Any]:
    view = asdict(d)
    view.pop("state", None)
    view["changed"] = d.changed
    return view


def _summary(prev: Decision | None, d: Decision) -> str:
    if d.changed:
        return f"replicas {d.previous} → {d.desired} ({d.mode}: {d.reason})"
    if prev is not None and prev.mode != d.mode:
        return f"{prev.mode} → {d.mode}, {d.desired} replica(s) ({d.reason})"
    return f"{d.mode}, {d.desired} replica(s) ({d.reason})"


def shortfall(targets: Mapping[str, int], placed: Mapping[str, int]) -> int:
    """The most replicas any one model still misses (what one more server per replica fixes)."""
    return max((t - placed.get(m, 0) for m, t in targets.items()), default=0)


__all__ = [
    "Autopilot",
    "FleetBounds",
    "LoadSignals",
    "Measured",
    "decision_view",
    "shortfall",
]
