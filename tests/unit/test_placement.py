"""The planner, exhaustively: examples for each rule and hypothesis properties over random fleets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.placement import ActionKind, ModelView, Placement, ServerView, Snapshot, plan

GiB = 1 << 30


def _snap(servers, models, placement=None, strategy=Placement.PACK):
    return Snapshot(tuple(servers), tuple(models), placement or {}, now=1000.0, strategy=strategy)


def test_best_fit_decreasing_with_anti_affinity() -> None:
    servers = [ServerView("a", 10 * GiB), ServerView("b", 10 * GiB), ServerView("c", 6 * GiB)]
    models = [
        ModelView("big", 7 * GiB, min_replicas=1),
        ModelView("pair", 5 * GiB, min_replicas=2, max_replicas=2),
        ModelView("small", 3 * GiB, min_replicas=1),
    ]
    p = plan(_snap(servers, models))
    assert not p.unplaced
    assert len(set(p.placement["pair"])) == 2  # never two replicas on one server
    for s in servers:
        assert p.used_bytes[s.id] <= s.capacity_bytes
    # Best fit: the 7 GiB model goes where it leaves the least room (a 10 GiB server), and the
    # 3 GiB one fills that server's remaining 3 GiB rather than opening space elsewhere.
    big_server = p.placement["big"][0]
    assert p.placement["small"] == (big_server,)


def test_no_action_when_nothing_changed_and_warm_models_are_not_moved() -> None:
    servers = [ServerView("a", 4 * GiB), ServerView("b", 4 * GiB)]
    models = [ModelView("m1", GiB, min_replicas=1), ModelView("m2", GiB, wanted=1)]
    first = plan(_snap(servers, models))
    again = plan(_snap(servers, models, first.placement))
    assert again.empty and again.placement == first.placement
    # An arbitrary (non-best-fit) but valid placement is kept as it is: stability over bytes.
    odd = {"m1": ("b",), "m2": ("a",)}
    assert plan(_snap(servers, models, odd)).empty


def test_idle_model_is_evicted_lru_only_when_room_is_needed() -> None:
    servers = [ServerView("a", 4 * GiB)]
    idle_old = ModelView("old", 2 * GiB, wanted=0, last_used=10.0)
    idle_new = ModelView("new", 2 * GiB, wanted=0, last_used=500.0)
    current = {"old": ("a",), "new": ("a",)}
    # Nobody needs room: idle models stay warm.
    assert plan(_snap(servers, [idle_old, idle_new], current)).empty
    hot = ModelView("hot", 2 * GiB, wanted=1)
    p = plan(_snap(servers, [idle_old, idle_new, hot], current))
    unloads = [a for a in p.actions if a.kind is ActionKind.UNLOAD]
    assert [(a.model, a.server) for a in unloads] == [("old", "a")]  # least recently used first
    assert "least recently used" in unloads[0].reason
    assert p.placement["hot"] == ("a",) and p.placement["new"] == ("a",)


def test_warm_floor_is_never_evicted_and_the_refusal_is_explained() -> None:
    servers = [ServerView("a", 4 * GiB)]
    floor = ModelView("floor", 3 * GiB, min_replicas=1, last_used=0.0)
    hot = ModelView("hot", 2 * GiB, wanted=1, priority=100)
    p = plan(_snap(servers, [floor, hot], {"floor": ("a",)}))
    assert p.placement == {"floor": ("a",)}
    assert "nothing there may be evicted" in p.unplaced["hot"]
    too_big = ModelView("huge", 8 * GiB, min_replicas=1)
    assert "largest eligible server has" in plan(_snap(servers, [too_big])).unplaced["huge"]


def test_dead_server_replicas_are_replaced_and_deleted_models_unloaded() -> None:
    servers = [ServerView("a", 4 * GiB, live=False), ServerView("b", 4 * GiB)]
    m = ModelView("m", GiB, min_replicas=1)
    p = plan(_snap(servers, [m], {"m": ("a",), "gone": ("b",)}))
    assert p.placement["m"] == ("b",)
    kinds = {(a.kind, a.model, a.server) for a in p.actions}
    assert (ActionKind.LOAD, "m", "b") in kinds
    assert (ActionKind.UNLOAD, "gone", "b") in kinds


def test_blocked_model_gets_no_new_replica_and_labels_are_honoured() -> None:
    servers = [
        ServerView("cpu", 4 * GiB, labels={"device": "cpu"}),
        ServerView("gpu", 4 * GiB, labels={"device": "gpu"}),
    ]
    blocked = ModelView("b", GiB, min_replicas=1, blocked=True)
    gpu_only = ModelView("g", GiB, min_replicas=1, server_labels={"device": "gpu"})
    p = plan(_snap(servers, [blocked, gpu_only]))
    assert "b" not in p.placement and p.placement["g"] == ("gpu",)


# --- properties ---------------------------------------------------------------------------
servers_st = st.lists(st.integers(1, 16), min_size=1, max_size=8).map(
    lambda caps: [ServerView(f"s{i}", c * GiB // 4) for i, c in enumerate(caps)]
)


@st.composite
def fleets(draw):
    servers = draw(servers_st)
    n = draw(st.integers(0, 25))
    models = []
    for i in range(n):
        lo = draw(st.integers(0, 2))
        hi = draw(st.integers(max(1, lo), 3))
        models.append(
            ModelView(
                f"m{i}",
                draw(st.integers(1, 12)) * GiB // 8,
                min_replicas=lo,
                max_replicas=hi,
                wanted=draw(st.integers(0, 3)),
                priority=draw(st.integers(0, 2)),
                last_used=float(draw(st.integers(0, 100))),
            )
        )
    return servers, models


@settings(max_examples=300, deadline=None)
@given(fleets(), st.sampled_from(list(Placement)))
def test_capacity_never_exceeded_and_anti_affinity_holds(fleet, strategy) -> None:
    """Under every strategy (test_placement_spread checks where SPREAD puts things)."""
    servers, models = fleet
    p = plan(_snap(servers, models, strategy=strategy))
    caps = {s.id: s.capacity_bytes for s in servers}
    mem = {m.name: m.memory_bytes for m in models}
    used = dict.fromkeys(caps, 0)
    for name, holders in p.placement.items():
        assert len(holders) == len(set(holders))
        for s in holders:
            used[s] += mem[name]
    assert used == dict(p.used_bytes)
    assert all(used[s] <= caps[s] for s in caps)
    for m in models:
        assert len(p.placement.get(m.name, ())) <= m.max_replicas


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_floors_kept_whenever_they_fit(fleet) -> None:
    servers, models = fleet
    # Floors alone, placed first: if the floors fit, every floor is met.
    floors_only = [
        ModelView(
            m.name,
            m.memory_bytes,
            min_replicas=m.min_replicas,
            max_replicas=m.max_replicas,
            priority=m.priority,
        )
        for m in models
    ]
    p_floor = plan(_snap(servers, floors_only))
    p = plan(_snap(servers, models))
    for m in models:
        if m.name not in p_floor.unplaced:  # floors fit on their own ...
            # ... so demand never pushes a floor out (floors outrank demand of equal priority)
            have = len(p.placement.get(m.name, ()))
            assert have >= m.min_replicas or any(o.priority > m.priority for o in models), (
                m,
                p.describe(),
            )


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_replanning_a_plan_changes_nothing(fleet) -> None:
    servers, models = fleet
    first = plan(_snap(servers, models))
    again = plan(_snap(servers, models, first.placement))
    assert again.empty, again.describe()
    assert again.placement == first.placement


@settings(max_examples=200, deadline=None)
@given(fleets(), st.data())
def test_small_change_causes_minimal_moves(fleet, data) -> None:
    servers, models = fleet
    if not models:
        return
    first = plan(_snap(servers, models))
    # Change one model's demand; only that model's replicas may be loaded, and only idle or
    # lower-priority replicas may be unloaded to make room for it.
    i = data.draw(st.integers(0, len(models) - 1))
    changed = models[i]
    models2 = list(models)
    models2[i] = ModelView(
        changed.name,
        changed.memory_bytes,
        changed.min_replicas,
        changed.max_replicas,
        wanted=data.draw(st.integers(0, 3)),
        priority=changed.priority,
        last_used=changed.last_used,
    )
    second = plan(_snap(servers, models2, first.placement))
    # Only the changed model, or models that were waiting for room, may be loaded; only to make
    # room for those (or the changed model itself) may anything be unloaded. Warm models that
    # had nothing to do with the change are never touched.
    allowed = {changed.name} | set(first.unplaced)
    for a in second.actions:
        if a.kind is ActionKind.LOAD:
            assert a.model in allowed, second.describe()
        else:
            assert a.model == changed.name or any(
                a.reason.endswith("make room for " + m) for m in allowed
            ), second.describe()
