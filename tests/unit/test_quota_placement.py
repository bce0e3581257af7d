"""Tenant quotas in the planner: the lowest-priority replicas are left unplaced, the reason
names the quota, other tenants are untouched, and a quota is never exceeded (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.placement import ActionKind, ModelView, QuotaView, ServerView, Snapshot, plan

GiB = 1 << 30
SERVERS = (ServerView("a", 16 * GiB), ServerView("b", 16 * GiB), ServerView("c", 16 * GiB))


def _snap(models, quotas, placement=None):
    return Snapshot(SERVERS, tuple(models), placement or {}, now=1.0, quotas=quotas)


def test_lowest_priority_replicas_are_left_unplaced_with_the_quota_in_the_reason() -> None:
    models = [
        ModelView("t.high", GiB, min_replicas=2, max_replicas=3, priority=50, tenant="t"),
        ModelView("t.mid", GiB, min_replicas=1, max_replicas=2, wanted=2, priority=10, tenant="t"),
        ModelView("t.low", GiB, min_replicas=1, priority=0, tenant="t"),
        ModelView("u.other", GiB, min_replicas=3, max_replicas=3, tenant="u"),
        ModelView("free", GiB, min_replicas=2, max_replicas=2),
    ]
    p = plan(_snap(models, {"t": QuotaView(replicas=4)}))
    placed = {m: len(s) for m, s in p.placement.items()}
    assert placed == {"t.high": 2, "t.mid": 2, "u.other": 3, "free": 2}
    assert "t.low" not in p.placement
    assert "tenant 't' quota" in p.unplaced["t.low"] and "replicas 4/4" in p.unplaced["t.low"]
    assert set(p.unplaced) == {"t.low"}
    assert p.quota_capped == {"t.low": 0}


def test_memory_quota_and_a_shrunken_quota_unloads_the_lowest_priority_first() -> None:
    models = [
        ModelView("t.big", 3 * GiB, min_replicas=1, priority=5, tenant="t"),
        ModelView("t.small", GiB, min_replicas=2, max_replicas=2, priority=1, tenant="t"),
    ]
    first = plan(_snap(models, {}))
    assert {m: len(s) for m, s in first.placement.items()} == {"t.big": 1, "t.small": 2}
    # 4 GiB now: the 3 GiB replica (higher priority) stays, one 1 GiB replica stays.
    p = plan(_snap(models, {"t": QuotaView(memory_bytes=4 * GiB)}, first.placement))
    unloads = [a for a in p.actions if a.kind is ActionKind.UNLOAD]
    assert [a.model for a in unloads] == ["t.small"] and unloads[0].drain
    assert "memory" in unloads[0].reason and "4/" not in unloads[0].reason
    assert len(p.placement["t.small"]) == 1 and len(p.placement["t.big"]) == 1
    assert not [a for a in p.actions if a.kind is ActionKind.LOAD]
    # Stable: the next plan changes nothing.
    again = plan(_snap(models, {"t": QuotaView(memory_bytes=4 * GiB)}, p.placement))
    assert again.empty


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["x", "y"]),
            st.integers(0, 3),  # min
            st.integers(0, 3),  # extra max
            st.integers(0, 4),  # wanted
            st.integers(0, 3),  # priority
            st.integers(1, 4),  # GiB
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 8),
    st.integers(1, 20),
)
def test_a_quota_is_never_exceeded_and_higher_priority_comes_first(
    specs, max_replicas, max_gib
) -> None:
    models = [
        ModelView(
            f"{t}.m{i}",
            gib * GiB,
            min_replicas=lo,
            max_replicas=max(1, lo + extra),
            wanted=wanted,
            priority=prio,
            tenant=t,
        )
        for i, (t, lo, extra, wanted, prio, gib) in enumerate(specs)
    ]
    quota = QuotaView(replicas=max_replicas, memory_bytes=max_gib * GiB)
    p = plan(_snap(models, {"x": quota}))
    mine = [m for m in models if m.tenant == "x"]
    held = {m.name: len(p.placement.get(m.name, ())) for m in mine}
    assert sum(held.values()) <= max_replicas
    assert sum(held[m.name] * m.memory_bytes for m in mine) <= max_gib * GiB
    # A lower-priority model holds replicas while a higher-priority one is cut short only when
    # it is smaller (it fits the memory left, the bigger one did not).
    for short in (m for m in mine if m.name in p.quota_capped):
        for other in mine:
            if held[other.name] and other.priority < short.priority:
                assert other.memory_bytes < short.memory_bytes, (short, other, held)


def test_reconciler_status_shows_the_quota_reason() -> None:
    """The reconciler over in-memory fakes: a tenant's quota keeps its lowest-priority model
    unloaded, and that model's status says why."""
    import asyncio
    import random

    from adapters.memstore import MemoryStore
    from controlplane.reconciler import Reconciler
    from controlplane.spec import ModelSpec
    from controlplane.store import ModelRecord
    from tests.fakes import FakeFleet, FakeTritonControl, InlineArtifacts
    from tests.support import python_spec

    async def scenario() -> None:
        fleet, store = FakeFleet(2, 1 << 30), MemoryStore()
        control = FakeTritonControl(fleet)
        for name, prio in (("t.keep", 9), ("t.drop", 1)):
            spec = ModelSpec.model_validate(python_spec(name, min_replicas=1, priority=prio))
            await store.create(ModelRecord(name, 1, spec, "", "{}", 0.0, 0.0, tenant="t"))
        quotas = {"t": QuotaView(replicas=1)}
        rec = Reconciler(
            fleet,
            control,
            store,
            InlineArtifacts(),
            clock=lambda: 1000.0,
            rng=random.Random(1),
            quotas=lambda: quotas,
        )
        for _ in range(3):
            await rec.tick()
            await rec.wait_idle()
        assert [m for m, _ in control.loads] == ["t.keep"]
        status = rec.model_status("t.drop")
        assert status["replicas"] == []
        assert "tenant 't' quota" in status["unplaced_reason"]
        quotas.clear()  # the quota is lifted: the model is placed on the next tick
        await rec.tick()
        await rec.wait_idle()
        assert sorted(m for m, _ in control.loads) == ["t.drop", "t.keep"]

    asyncio.run(scenario())
