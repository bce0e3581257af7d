"""The autopilot inside the reconciler loop, over fakes and fake time: scale out, grow the
fleet, drain and unload, shrink the fleet, hold on lost signals, explain every step."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace

import pytest
from pydantic import ValidationError

from adapters.memstore import MemoryStore
from controlplane.autopilot import Autopilot, FleetBounds, Measured
from controlplane.autoscale import ScalerConfig
from controlplane.loadstats import Window
from controlplane.reconciler import Reconciler, ReconcilerConfig
from controlplane.replicas import DirectoryWire
from controlplane.spec import ModelSpec
from controlplane.store import ModelRecord
from tests.fakes import (
    FakeFleet,
    FakeInflight,
    FakeLoadSignals,
    FakeTritonControl,
    InlineArtifacts,
)
from tests.support import eventually, python_spec
from tests.unit.test_reconciler import Clock

MiB = 1 << 20


def load(rate: float, capacity: float = 60.0, p99_s: float = 0.05) -> Measured:
    w = Window(
        at=0,
        span_s=5,
        completed=int(rate * 5),
        latency_sum_s=rate * 5 * 0.03,
        p95_s=0.03,
        p99_s=p99_s,
    )
    return Measured(stable=w, panic=w, capacity_rps=capacity, last_request_at=0.0)


async def _register(store: MemoryStore, **extra: object) -> None:
    raw = python_spec("m", min_replicas=1, max_replicas=2)
    raw["slo"] = {"p95_ms": 100, "p99_ms": 200}
    raw["autoscaling"] = {"scale_down_delay_s": 10}
    raw.update(extra)
    spec = ModelSpec.model_validate(raw)
    await store.create(ModelRecord("m", 1, spec, "", '{"name": "m"}', 0.0, 0.0))


def _rec(
    fleet: FakeFleet,
    control: FakeTritonControl,
    store: MemoryStore,
    clock: Clock,
    pilot: Autopilot,
    **kw: object,
) -> Reconciler:
    return Reconciler(
        fleet,
        control,
        store,
        InlineArtifacts(),
        clock=clock,
        rng=random.Random(1),
        autopilot=pilot,
        **kw,  # type: ignore[arg-type]
    )


async def _ticks(rec: Reconciler, clock: Clock, n: int) -> None:
    for _ in range(n):
        clock.now += 1
        await rec.tick()
        await rec.wait_idle()


def test_scale_out_grows_the_fleet_then_drains_and_shrinks() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB, max_servers=2), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        signals, inflight = FakeLoadSignals(), FakeInflight()
        await _register(store)
        pilot = Autopilot(signals, ScalerConfig(), FleetBounds(1, 2, idle_s=5))
        rec = _rec(
            fleet,
            control,
            store,
            clock,
            pilot,
            config=ReconcilerConfig(drain_grace_s=0.0, drain_timeout_s=5),
            inflight=inflight,
        )

        async def tick(n: int = 1, dt: float = 1.0) -> None:
            for _ in range(n):
                clock.now += dt
                await rec.tick()
                await rec.wait_idle()
                await asyncio.sleep(0)  # let a fleet-scale task run

        signals.readings["m"] = load(5)
        await tick(2)
        assert [r.server_id for r in rec.replicas("m")] == ["s0"]

        # 100 req/s over 60 req/s per replica at 70%: 3 wanted, clamped to 2; one per server,
        # so the fleet grows to two servers and the second replica lands on s1.
        signals.readings["m"] = load(100)
        await tick(3)
        assert fleet.scale_calls == [2]
        assert [r.server_id for r in rec.replicas("m")] == ["s0", "s1"]
        assert pilot.wanted("m") == 2

        # Quiet again: the burst opened a panic window (30 s, no scale-in), then the demand
        # must stay low for scale_down_delay_s (10 s); then the replica on s1 (the highest
        # ordinal) leaves routing at once and is unloaded only when its requests are done.
        signals.readings["m"] = load(5)
        inflight.counts[("m", "s1")] = 2
        waited = 0
        while pilot.wanted("m") == 2:
            assert len(rec.replicas("m")) == 2 and waited < 60
            clock.now += 1
            waited += 1
            await rec.tick()
        assert waited >= 30 + 10 - 3, waited
        # The drain has looked three times and found requests each time.
        asked = inflight.asked.get(("m", "s1"), 0)
        await eventually(lambda: inflight.asked.get(("m", "s1"), 0) >= asked + 3, 10, 0.01)
        assert [r.server_id for r in rec.replicas("m")] == ["s0"]  # out of routing ...
        assert ("m", "s1") not in control.unloads  # ... but still draining
        inflight.counts[("m", "s1")] = 0
        await rec.wait_idle()
        assert ("m", "s1") in control.unloads
        # s1 stays empty for idle_s: the fleet shrinks back to one server.
        await tick(7)
        assert fleet.scale_calls == [2, 1]
        assert [s.id for s in fleet.servers] == ["s0"]

        rows = rec.decisions("m")
        changes = [(d["previous"], d["desired"]) for d in rows if d["changed"]]
        assert changes == [(1, 2), (2, 1)]
        assert all(d["inputs"] and d["reason"] for d in rows)
        actions = rec.scaling_metrics()["actions"]
        assert actions[("m", "scale_up")] == 1 and actions[("m", "scale_down")] == 1
        assert actions[("(fleet)", "grow")] == 1 and actions[("(fleet)", "shrink")] == 1

    asyncio.run(scenario())


def test_lost_signals_hold_replicas_and_say_so() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(2, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        signals = FakeLoadSignals()
        await _register(store)
        rec = _rec(fleet, control, store, clock, Autopilot(signals, ScalerConfig()))
        signals.readings["m"] = load(100)
        await _ticks(rec, clock, 3)
        assert len(rec.replicas("m")) == 2
        signals.fail = True
        await _ticks(rec, clock, 60)
        assert len(rec.replicas("m")) == 2 and control.unloads == []
        status = rec.model_status("m")["autopilot"]
        assert status["mode"] == "hold" and status["signals"] == "stale: holding"
        assert rec.scaling_metrics()["actions"][("m", "hold")] == 1

    asyncio.run(scenario())


def test_admission_limit_reaches_the_gateway_routing() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB), MemoryStore(), Clock()
        signals = FakeLoadSignals()
        await _register(store, admission={"max_inflight": "auto"})
        rec = _rec(
            fleet, FakeTritonControl(fleet), store, clock, Autopilot(signals, ScalerConfig())
        )
        signals.readings["m"] = load(20, capacity=200)
        clock.now += 1
        await rec.tick()
        await rec.wait_idle()
        clock.now += 1
        await rec.tick()
        routing = rec.routing("m")
        assert routing is not None and routing.max_queue == 40  # 1 x 200 rps x 0.2 s
        assert rec.directory()["models"]["m"]["max_inflight"] == 40
        # What a gateway running apart parses from /v1/replicas: the same routing.
        wire = DirectoryWire.model_validate_json(json.dumps(rec.directory()))
        assert wire.routing()["m"] == routing

    asyncio.run(scenario())


def test_batching_tuned_by_the_autopilot_reloads_with_the_new_delay() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(2, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        signals = FakeLoadSignals()
        raw = python_spec("m", min_replicas=2, max_replicas=2)
        raw["dynamic_batching"] = {"max_queue_delay_us": 8000}
        raw["slo"] = {"p95_ms": 100, "p99_ms": 200}
        raw["autoscaling"] = {"batching": {"min_queue_delay_us": 500, "max_queue_delay_us": 8000}}
        spec = ModelSpec.model_validate(raw)
        config = '{"name": "m", "dynamic_batching": {"max_queue_delay_microseconds": "8000"}}'
        await store.create(ModelRecord("m", 1, spec, "", config, 0.0, 0.0))
        rec = _rec(fleet, control, store, clock, Autopilot(signals, ScalerConfig()))

        signals.readings["m"] = load(50, capacity=400, p99_s=0.1)  # neither pressure nor need
        await _ticks(rec, clock, 3)
        assert rec.autopilot.queue_delay("m") == (0, None)
        assert len(control.loads) == 2
        signals.readings["m"] = load(50, capacity=400, p99_s=0.19)  # x0.95 of the P99 target
        await _ticks(rec, clock, 3)
        assert rec.autopilot.queue_delay("m") == (1, 4000)
        served = {
            sid: cfg["dynamic_batching"]["max_queue_delay_microseconds"]
            for (sid, model), cfg in control.configs.items()
        }
        assert served == {"s0": "4000", "s1": "4000"}
        assert len(control.loads) == 4  # two first loads, two reloads; nothing unloaded
        assert control.unloads == []
        assert all(r.tuning == 1 for _, r in rec.state.replicas_of("m"))
        assert rec.model_status("m")["autopilot"]["queue_delay_us"] == 4000

    asyncio.run(scenario())


def test_a_policy_only_update_reloads_nothing_a_config_change_reloads() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        await _register(store)
        rec = _reconciler_without_autopilot(fleet, control, store, clock)
        await _ticks(rec, clock, 2)
        assert len(control.loads) == 1
        record = await store.get("m")
        raw = record.spec.model_dump(mode="json")
        raw["slo"] = {"p95_ms": 50, "p99_ms": 80}  # an SLO change: same config, same files
        await store.update(
            replace(record, generation=2, spec=ModelSpec.model_validate(raw)), expected_generation=1
        )
        await _ticks(rec, clock, 3)
        assert len(control.loads) == 1
        assert [r.generation for _, r in rec.state.replicas_of("m")] == [2]
        record = await store.get("m")
        await store.update(
            replace(record, generation=3, config_json='{"name": "m", "changed": true}'),
            expected_generation=2,
        )
        await _ticks(rec, clock, 3)
        assert len(control.loads) == 2  # the config changed: reloaded

    asyncio.run(scenario())


def _reconciler_without_autopilot(
    fleet: FakeFleet, control: FakeTritonControl, store: MemoryStore, clock: Clock
) -> Reconciler:
    return Reconciler(fleet, control, store, InlineArtifacts(), clock=clock, rng=random.Random(1))


def test_the_directory_wire_refuses_what_it_did_not_validate() -> None:
    with pytest.raises(ValidationError):
        DirectoryWire.model_validate_json('{"models": {"m": {"max_inflight": 0}}}')
    with pytest.raises(ValidationError):
        DirectoryWire.model_validate_json('{"models": {"m": {"replicas": [{"server_id": 1}]}}}')
    assert DirectoryWire.model_validate_json("{}").routing() == {}
