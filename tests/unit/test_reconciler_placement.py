"""The placement strategy through the reconciler (in-memory fakes of the fleet and Triton, fake
time): which strategy `auto` resolves to, where floors land, and why an elastic fleet packs.
"""

from __future__ import annotations

import asyncio

import pytest

from adapters.memstore import MemoryStore
from controlplane.autopilot import Autopilot, FleetBounds
from controlplane.autoscale import ScalerConfig
from controlplane.placement import Placement, PlacementSetting
from controlplane.reconciler import Reconciler, ReconcilerConfig
from tests.fakes import FakeFleet, FakeInflight, FakeLoadSignals, FakeTritonControl
from tests.unit.test_autopilot_loop import _rec, load
from tests.unit.test_autopilot_loop import _register as _register_loaded
from tests.unit.test_reconciler import Clock, _reconciler, _register, _settle

MiB = 1 << 20


def _servers_of(rec: Reconciler, *models: str) -> list[str]:
    return [r["server"] for m in models for r in rec.model_status(m)["replicas"]]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, Placement.PACK),  # a bare ReconcilerConfig keeps the planner as it was
        (PlacementSetting.AUTO, Placement.SPREAD),  # default bounds: a fixed-size fleet
        (PlacementSetting.PACK, Placement.PACK),
        (PlacementSetting.SPREAD, Placement.SPREAD),
    ],
)
def test_floors_on_a_fixed_fleet_follow_the_strategy(setting, expected) -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(3, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        for name in ("a", "b", "c"):
            await _register(store, name, min_replicas=1)
        cfg = {} if setting is None else {"placement_strategy": setting}
        rec = _reconciler(fleet, control, store, clock, **cfg)
        assert rec.placement_strategy is expected
        assert rec.fleet_status()["placement"] == {
            "setting": (setting or PlacementSetting.PACK).value,
            "strategy": expected.value,
        }
        await _settle(rec)
        used = _servers_of(rec, "a", "b", "c")
        assert len(used) == 3
        # 3 x 64 MiB fit one 512 MiB server: pack fills one, spread uses all three.
        assert len(set(used)) == (3 if expected is Placement.SPREAD else 1), used

    asyncio.run(scenario())


def test_auto_packs_while_the_autopilot_may_resize_the_fleet() -> None:
    fleet, store, clock = FakeFleet(1, 512 * MiB, max_servers=2), MemoryStore(), Clock()
    control = FakeTritonControl(fleet)
    cfg = ReconcilerConfig(placement_strategy=PlacementSetting.AUTO)

    def strategy(signals: FakeLoadSignals | None, bounds: FleetBounds) -> Placement:
        pilot = Autopilot(signals, ScalerConfig(), bounds)
        return _rec(fleet, control, store, clock, pilot, config=cfg).placement_strategy

    assert strategy(FakeLoadSignals(), FleetBounds(1, 2)) is Placement.PACK
    assert strategy(FakeLoadSignals(), FleetBounds(2, 2)) is Placement.SPREAD
    # Bounds decide, not whether signals are attached yet (the runtime attaches them after
    # the reconciler's first ticks, which must already pack on an elastic fleet).
    assert strategy(None, FleetBounds(1, 2)) is Placement.PACK
    assert strategy(None, FleetBounds(1, 1)) is Placement.SPREAD


@pytest.mark.parametrize("setting", [PlacementSetting.AUTO, PlacementSetting.SPREAD])
def test_spreading_would_keep_an_elastic_fleet_from_shrinking(setting) -> None:
    """Why `auto` packs on an elastic fleet: load grows it to two servers; a model registered
    meanwhile goes where the strategy puts it; when the load is gone, the fleet shrinks back only
    if that model did not land on the second server (spread puts it there: most free memory)."""

    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB, max_servers=2), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        signals = FakeLoadSignals()
        await _register_loaded(store)
        pilot = Autopilot(signals, ScalerConfig(), FleetBounds(1, 2, idle_s=5))
        cfg = ReconcilerConfig(drain_grace_s=0.0, drain_timeout_s=5, placement_strategy=setting)
        rec = _rec(fleet, control, store, clock, pilot, config=cfg, inflight=FakeInflight())

        async def tick(n: int = 1) -> None:
            for _ in range(n):
                clock.now += 1
                await rec.tick()
                await rec.wait_idle()
                await asyncio.sleep(0)  # let a fleet-scale task run

        signals.readings["m"] = load(100)
        await tick(3)
        assert fleet.scale_calls == [2] and len(rec.replicas("m")) == 2
        await _register(store, "late", min_replicas=1)
        await tick(2)
        late = _servers_of(rec, "late")
        signals.readings["m"] = load(5)
        for _ in range(120):  # scale-in of m (panic window, delay), drain, then idle_s
            await tick()
            if len(fleet.servers) == 1:
                break
        if setting is PlacementSetting.AUTO:
            assert late == ["s0"]
            assert fleet.scale_calls == [2, 1]
        else:
            assert late == ["s1"]
            assert fleet.scale_calls == [2] and len(rec.replicas("m")) == 1  # m did scale in

    asyncio.run(scenario())
