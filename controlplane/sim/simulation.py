"""One simulation run: build the fleet from a scenario, pump arrivals, run, report.

Random streams are split by purpose (workload, routing, service times, control, failures), each
seeded from the scenario's seed, so changing a policy never changes the requests it is given.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from controlplane.sim import workloads
from controlplane.sim.control import Control
from controlplane.sim.engine import Engine
from controlplane.sim.gateway import DataPlane
from controlplane.sim.metrics import Metrics
from controlplane.sim.scenario import MIB, Scenario
from controlplane.sim.serving import ModelRt, Request, Server

Progress = Callable[[float, float], None]  # (simulated now, simulated end)


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}:{name}")


class Simulation:
    def __init__(self, scn: Scenario, arrivals: Iterator[workloads.Arrival] | None = None) -> None:
        """`arrivals` replaces the scenario's generator (a replayed trace, from the adapter)."""
        self.scn = scn
        self.engine = Engine()
        self.metrics = Metrics(scn.report.interval_s, scn.duration_s)
        self.models: list[ModelRt] = []
        for g in scn.models:
            names = [g.name] if g.count == 1 else [f"{g.name}-{i}" for i in range(g.count)]
            for name in names:
                self.models.append(ModelRt(len(self.models), name, g))
        fleet = scn.fleet
        slow = set(fleet.slow_servers)
        if fleet.slow_fraction > 0:
            k = round(fleet.slow_fraction * fleet.servers)
            slow |= set(_stream(scn.seed, "slow").sample(range(fleet.servers), k))
        self.servers = [
            Server(i, fleet.memory_mib * MIB, fleet.slow_factor if i in slow else 1.0)
            for i in range(fleet.servers)
        ]
        self.control = Control(
            self.engine,
            scn,
            self.models,
            self.servers,
            self.metrics,
            _stream(scn.seed, "control"),
        )
        self.dp = DataPlane(
            self.engine,
            scn.gateway,
            self.metrics,
            _stream(scn.seed, "routing"),
            _stream(scn.seed, "service"),
            on_cold=self.control.on_cold,
            on_end=self.control.on_end,
            on_busy=self.control.on_busy,
            on_drained=self.control.on_drained,
        )
        self.control.dp = self.dp
        self.dp.gpu_slots = fleet.gpu_slots
        self.weights: list[float] | None = None
        if arrivals is None:
            rng = _stream(scn.seed, "workload")
            self.weights = workloads.weights_for(
                scn.workload, [m.group.weight for m in self.models], rng
            )
            arrivals = workloads.synthetic(scn.workload, self.weights, scn.duration_s, rng)
        self._arrivals = arrivals
        if scn.fleet.warm_start:
            self._warm_start()
        self.metrics.per_tenant = scn.workload.tenants > 1 or scn.workload.kind == "trace"

    def _warm_start(self) -> None:
        """Warm floors (`min_replicas`) and the models expected at least once per keep-alive
        start with their replicas, placed by the real planner and ready at time 0 (as if the
        fleet had been running). A replayed trace says nothing in advance: only floors."""
        if self.weights is None:
            self.control.preload(set())
            return
        total = sum(self.weights)
        rate = self.scn.workload.rate_rps
        want = {
            m.idx
            for m, w in zip(self.models, self.weights, strict=True)
            if total > 0 and rate * w / total * m.group.idle_to_zero_s >= 1.0
        }
        self.control.preload(want)

    # --- arrivals and failures ---------------------------------------------------------
    def _next_arrival(self) -> None:
        for t, m, tenant in self._arrivals:
            if t >= self.scn.duration_s:
                break
            self.engine.at(t, self._arrive, (m, tenant))
            return

    def _arrive(self, arg: tuple[int, int]) -> None:
        m = self.models[arg[0]]
        self.control.on_arrival(m)
        self.dp.arrive(Request(self.engine.now, m, arg[1]))
        self._next_arrival()

    def _schedule_failures(self) -> None:
        fleet = self.scn.fleet
        for f in fleet.failures:
            self.engine.at(f.at_s, self._fail, (self.servers[f.server], False))
        if fleet.mtbf_s:
            rng = _stream(self.scn.seed, "failures")
            for srv in self.servers:
                t = rng.expovariate(1 / fleet.mtbf_s)
                while t < self.scn.duration_s:
                    self.engine.at(t, self._fail, (srv, True))
                    t += fleet.restart_s + rng.expovariate(1 / fleet.mtbf_s)

    def _fail(self, arg: tuple[Server, bool]) -> None:
        self.control.fail(arg[0])

    def _sample(self, _: Any) -> None:
        self.metrics.sample(self.engine.now)
        nxt = self.engine.now + self.scn.report.interval_s
        if nxt <= self.end_s + 1e-9:
            self.engine.at(nxt, self._sample)

    # --- the run -----------------------------------------------------------------------
    @property
    def end_s(self) -> float:
        scn = self.scn
        drain = scn.drain_s if scn.drain_s is not None else scn.gateway.cold_hold_s + 60.0
        return scn.duration_s + drain

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        scn = self.scn
        self.control.start()
        self._next_arrival()
        self._schedule_failures()
        self.engine.at(scn.report.interval_s, self._sample)
        end = self.end_s
        cb = (lambda now: progress(now, end)) if progress is not None else None
        self.engine.run(end, cb, progress_every_s=end / 200)
        if progress is not None:
            progress(end, end)
        return self.report()

    def report(self) -> dict[str, Any]:
        scn = self.scn
        out: dict[str, Any] = {
            "scenario": scn.name,
            "seed": scn.seed,
            "duration_s": scn.duration_s,
            "servers": scn.fleet.servers,
            "models": len(self.models),
            "policies": {
                "routing": scn.gateway.routing,
                "autoscale": scn.policies.autoscale,
                "keep_warm": scn.policies.keep_warm,
                "placement": scn.policies.placement,
            },
            "events": self.engine.events,
        }
        out.update(self.metrics.report(self.engine.now))
        return out


def simulate(scn: Scenario, progress: Progress | None = None) -> dict[str, Any]:
    """Run `scn` with its own workload generator; the report as a JSON-ready dict."""
    return Simulation(scn).run(progress)
