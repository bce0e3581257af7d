"""Placement strategies: SPREAD (worst-fit) and PACK (best-fit), by example and by property.

Every load of a plan is replayed against the free memory it saw: under SPREAD no other allowed
server that fits had more free memory; under PACK none that fits had less; a load that needed
evictions came only when nothing fitted. Capacity and anti-affinity are checked for every strategy in test_placement; stable replans
under SPREAD here.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.placement import (
    ActionKind,
    ModelView,
    Placement,
    PlacementSetting,
    ServerView,
    Snapshot,
    plan,
)
from tests.unit.test_placement import fleets

GiB = 1 << 30


def _snap(servers, models, placement=None, strategy=Placement.SPREAD):
    return Snapshot(tuple(servers), tuple(models), placement or {}, 1000.0, strategy=strategy)


# --- examples ---------------------------------------------------------------------------------
def test_spread_puts_one_model_per_server_where_pack_fills_one() -> None:
    servers = [ServerView(f"s{i}", 24 * GiB) for i in range(3)]
    models = [ModelView(f"m{i}", 4 * GiB, min_replicas=1) for i in range(3)]
    spread = plan(_snap(servers, models))
    assert sorted(h[0] for h in spread.placement.values()) == ["s0", "s1", "s2"]
    packed = plan(_snap(servers, models, strategy=Placement.PACK))
    assert len({h[0] for h in packed.placement.values()}) == 1
    assert packed == plan(Snapshot(tuple(servers), tuple(models), {}, 1000.0))  # PACK is default


def test_spread_goes_to_the_most_free_memory_not_the_emptiest_count() -> None:
    # b holds a model but has more bytes free than the small empty server c.
    servers = [ServerView("a", 8 * GiB), ServerView("b", 16 * GiB), ServerView("c", 4 * GiB)]
    held = ModelView("held", 2 * GiB, min_replicas=1)
    new = ModelView("new", GiB, min_replicas=1)
    p = plan(_snap(servers, [held, new], {"held": ("b",)}))
    assert p.placement["new"] == ("b",)


def test_spread_honours_labels_and_anti_affinity() -> None:
    servers = [
        ServerView("big", 32 * GiB, labels={"device": "cpu"}),
        ServerView("g1", 8 * GiB, labels={"device": "gpu"}),
        ServerView("g2", 16 * GiB, labels={"device": "gpu"}),
    ]
    gpu = ModelView("g", GiB, min_replicas=2, max_replicas=2, server_labels={"device": "gpu"})
    p = plan(_snap(servers, [gpu]))
    assert sorted(p.placement["g"]) == ["g1", "g2"]


def test_spread_evicts_only_when_nothing_fits() -> None:
    servers = [ServerView("a", 4 * GiB), ServerView("b", 4 * GiB)]
    idle = ModelView("idle", 3 * GiB, wanted=0, last_used=1.0)
    # 1 GiB fits on a (1 free) and on b (4 free): no eviction, and spread takes b.
    small = ModelView("small", GiB, wanted=1)
    p = plan(_snap(servers, [idle, small], {"idle": ("a",)}))
    assert [(a.kind, a.model, a.server) for a in p.actions] == [(ActionKind.LOAD, "small", "b")]
    # 4 GiB fits nowhere once b holds a 1 GiB model: the idle replica on a makes room.
    big = ModelView("big", 4 * GiB, wanted=1)
    now = {"idle": ("a",), "small": ("b",)}
    p = plan(_snap(servers, [idle, small, big], now))
    assert [(a.kind, a.model, a.server, a.evicts) for a in p.actions] == [
        (ActionKind.UNLOAD, "idle", "a", True),
        (ActionKind.LOAD, "big", "a", False),
    ]


def test_fragmentation_is_explained_under_spread() -> None:
    # Two 4 GiB floors spread over two 10 GiB servers leave 6 + 6 free: an 8 GiB floor that
    # packing would have fitted does not, and the reason says what to change.
    servers = [ServerView("a", 10 * GiB), ServerView("b", 10 * GiB)]
    floors = {"x": ("a",), "y": ("b",)}
    models = [ModelView(n, 4 * GiB, min_replicas=1) for n in ("x", "y")]
    big = ModelView("big", 8 * GiB, min_replicas=1)
    p = plan(_snap(servers, [*models, big], floors))
    assert "placement is spread" in p.unplaced["big"] and "pack" in p.unplaced["big"]
    packed = plan(_snap(servers, [*models, big], {"x": ("a",), "y": ("a",)}, Placement.PACK))
    assert not packed.unplaced and "placement is spread" not in str(packed.unplaced)


def test_setting_resolves_auto_by_whether_the_fleet_can_change_size() -> None:
    assert PlacementSetting.AUTO.resolve(elastic=True) is Placement.PACK
    assert PlacementSetting.AUTO.resolve(elastic=False) is Placement.SPREAD
    for elastic in (True, False):
        assert PlacementSetting.PACK.resolve(elastic) is Placement.PACK
        assert PlacementSetting.SPREAD.resolve(elastic) is Placement.SPREAD


# --- properties -------------------------------------------------------------------------------
def _replay(servers, models, snap_placement, p, strategy) -> None:
    """Walk the plan's actions in order, checking each load's choice against the free memory at
    that point (what the planner saw)."""
    caps = {s.id: s.capacity_bytes for s in servers}
    mem = {m.name: m.memory_bytes for m in models}
    free = dict(caps)
    holders: dict[str, set[str]] = {}
    for name, held in snap_placement.items():
        for s in held:
            free[s] -= mem[name]
            holders.setdefault(name, set()).add(s)
    before_evictions: dict[str, int] | None = None
    for a in p.actions:
        if a.kind is ActionKind.UNLOAD:
            if a.evicts and "make room" in a.reason and before_evictions is None:
                before_evictions = dict(free)
            free[a.server] += mem[a.model]
            holders[a.model].discard(a.server)
            continue
        need = mem[a.model]
        allowed = [s for s in caps if s not in holders.get(a.model, set())]
        if before_evictions is not None:  # make-room: nothing allowed fitted beforehand
            assert all(before_evictions[s] < need for s in allowed), (a, p.describe())
            before_evictions = None
        else:
            fitting = [s for s in allowed if free[s] >= need]
            assert a.server in fitting
            if strategy is Placement.SPREAD:
                assert all(free[s] <= free[a.server] for s in fitting), (a, free)
            else:
                assert all(free[s] >= free[a.server] for s in fitting), (a, free)
        free[a.server] -= need
        holders.setdefault(a.model, set()).add(a.server)
        assert free[a.server] >= 0


@settings(max_examples=300, deadline=None)
@given(fleets(), st.sampled_from(list(Placement)))
def test_each_load_goes_where_its_strategy_says(fleet, strategy) -> None:
    servers, models = fleet
    _replay(servers, models, {}, plan(_snap(servers, models, strategy=strategy)), strategy)


@settings(max_examples=200, deadline=None)
@given(fleets(), st.sampled_from(list(Placement)), st.data())
def test_each_load_goes_where_its_strategy_says_after_demand_changes(fleet, strategy, data):
    servers, models = fleet
    first = plan(_snap(servers, models, strategy=strategy))
    models2 = [
        ModelView(
            m.name,
            m.memory_bytes,
            m.min_replicas,
            m.max_replicas,
            wanted=data.draw(st.integers(0, 3)),
            priority=m.priority,
            last_used=m.last_used,
        )
        for m in models
    ]
    second = plan(_snap(servers, models2, first.placement, strategy))
    _replay(servers, models2, first.placement, second, strategy)


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_spread_replans_to_nothing_and_places_what_pack_places_when_room_is_ample(fleet):
    servers, models = fleet
    first = plan(_snap(servers, models))
    again = plan(_snap(servers, models, first.placement))
    assert again.empty, again.describe()
    # With room for every replica everywhere, the strategy changes where, never how many.
    roomy = [ServerView(s.id, 1 << 50) for s in servers]
    counts = {
        strategy: {
            n: len(h) for n, h in plan(_snap(roomy, models, None, strategy)).placement.items()
        }
        for strategy in Placement
    }
    assert counts[Placement.SPREAD] == counts[Placement.PACK]
