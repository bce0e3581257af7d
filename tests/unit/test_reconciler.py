"""The reconciler over in-memory fakes of the fleet, Triton and the store (fake time)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from adapters.memstore import MemoryStore
from adapters.sqlitestore import SqliteStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.errors import ServerUnavailable
from controlplane.fleet import ServerHealth
from controlplane.reconciler import ModelState, Reconciler, ReconcilerConfig
from controlplane.registry import Registry
from controlplane.spec import ModelSpec
from controlplane.store import ModelRecord
from tests.fakes import FakeFleet, FakeTritonControl, InlineArtifacts
from tests.support import python_spec

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def _register(store: MemoryStore, name: str, generation: int = 1, **policy) -> None:
    spec = ModelSpec.model_validate(python_spec(name, **policy))
    config = f'{{"name": "{name}", "max_batch_size": 8, "generation_tag": {generation}}}'
    record = ModelRecord(name, generation, spec, "", config, 0.0, 0.0)
    if generation == 1:
        await store.create(record)
    else:
        await store.update(record, expected_generation=generation - 1)


def _reconciler(fleet, control, store, clock, **cfg) -> Reconciler:
    return Reconciler(
        fleet,
        control,
        store,
        InlineArtifacts(),
        clock=clock,
        rng=random.Random(7),
        config=ReconcilerConfig(**cfg),
    )


async def _settle(rec: Reconciler, ticks: int = 3) -> None:
    for _ in range(ticks):
        await rec.tick()
        await rec.wait_idle()


def test_floors_loaded_then_quiet_then_restart_adopts_without_loads() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(3, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        await _register(store, "a", min_replicas=2, max_replicas=2)
        await _register(store, "b", min_replicas=1)
        rec = _reconciler(fleet, control, store, clock)
        await _settle(rec)
        assert sorted(control.loads) == sorted(
            [
                (m, s)
                for m, servers in {"a": rec.model_status("a"), "b": rec.model_status("b")}.items()
                for s in [r["server"] for r in servers["replicas"]]
            ]
        )
        assert len(control.loads) == 3
        assert rec.model_state("a") is ModelState.READY
        assert len({r["server"] for r in rec.model_status("a")["replicas"]}) == 2
        report = await rec.tick()
        assert report.actions == () and report.reloads == ()  # nothing changed: nothing to do

        # A new control plane (state lost) adopts what is loaded: zero redundant loads.
        rec2 = _reconciler(fleet, control, store, clock)
        report = await rec2.tick()
        await rec2.wait_idle()
        assert len(report.adopted) == 3 and report.actions == ()
        assert rec2.load_calls == 0 and rec2.model_state("a") is ModelState.READY

    asyncio.run(scenario())


def test_broken_model_fails_with_reason_and_backs_off_without_a_storm() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(2, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        control.broken["bad"] = "ModuleNotFoundError: No module named 'nope'"
        await _register(store, "bad", min_replicas=1)
        rec = _reconciler(fleet, control, store, clock, backoff_base_s=5, max_attempts=3)
        for _ in range(50):  # 50 ticks at the same instant: one attempt only
            await rec.tick()
            await rec.wait_idle()
        assert len(control.loads) == 1
        status = rec.model_status("bad")
        assert status["state"] == "FAILED" and "No module named 'nope'" in status["last_error"]
        for _ in range(10):  # advancing time allows the bounded retries, then it stops
            clock.now += 700
            await _settle(rec, 2)
        assert len(control.loads) == 3
        assert control.unloads.count(("bad", control.loads[0][1])) >= 1  # cleaned up on Triton
        # A new generation (the user fixed it) resets the attempts.
        del control.broken["bad"]
        await _register(store, "bad", generation=2, min_replicas=1)
        await _settle(rec)
        assert rec.model_state("bad") is ModelState.READY

    asyncio.run(scenario())


def test_dead_server_models_replaced_and_generation_change_reloads() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(3, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        await _register(store, "m", min_replicas=1)
        rec = _reconciler(fleet, control, store, clock)
        await _settle(rec)
        first = rec.model_status("m")["replicas"][0]["server"]
        fleet.set_health(first, ServerHealth.DOWN)
        await _settle(rec)
        replicas = rec.model_status("m")["replicas"]
        assert [r["state"] for r in replicas] == ["READY"] and replicas[0]["server"] != first
        assert rec.replicas("m")[0].server_id == replicas[0]["server"]

        loads = len(control.loads)
        await _register(store, "m", generation=2, min_replicas=1)
        await _settle(rec)
        assert len(control.loads) == loads + 1  # reloaded in place with the new config
        assert rec.model_status("m")["replicas"][0]["generation"] == 2

    asyncio.run(scenario())


def test_concurrent_ensures_cause_one_load_and_hot_model_evicts_idle_one() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 100 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet, load_delay_s=0.05)
        await _register(store, "idle")  # min 0: loaded on demand
        await _register(store, "hot")
        rec = _reconciler(fleet, control, store, clock, interval_s=0.01)
        loop_task = asyncio.create_task(rec.run())
        try:
            replicas = await rec.ensure("idle", timeout_s=5)
            assert replicas and control.loads == [("idle", "s0")]
            clock.now += 10_000  # idle's demand expires; it stays warm until room is needed
            await rec.wait_ticks(3)
            assert rec.model_state("idle") is ModelState.READY
            results = await asyncio.gather(*(rec.ensure("hot", timeout_s=5) for _ in range(20)))
            assert all(results)
            assert control.loads.count(("hot", "s0")) == 1  # twenty ensures, one load
            assert ("idle", "s0") in control.unloads  # 64 + 64 MiB > 100 MiB: evicted for room
            assert rec.model_state("idle") is ModelState.EVICTED
        finally:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
            await rec.close()

    asyncio.run(scenario())


def test_ensure_times_out_for_a_model_that_cannot_fit() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 32 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        await _register(store, "big")  # 64 MiB declared, 32 MiB servers
        rec = _reconciler(fleet, control, store, clock, interval_s=0.01)
        loop_task = asyncio.create_task(rec.run())
        try:
            assert await rec.ensure("big", timeout_s=0.3) == ()
            assert "largest eligible server" in rec.model_status("big")["unplaced_reason"]
        finally:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)

    asyncio.run(scenario())


def test_failed_reload_keeps_the_old_generation_serving() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        await _register(store, "m", min_replicas=1)
        rec = _reconciler(fleet, control, store, clock)
        await _settle(rec)
        assert rec.replicas("m")
        control.broken["m"] = "the new version does not import"
        await _register(store, "m", generation=2, min_replicas=1)
        await _settle(rec, 5)
        status = rec.model_status("m")
        # Still served (generation 1), the failure is reported, nothing was unloaded.
        assert rec.replicas("m") and status["replicas"][0]["generation"] == 1
        assert status["replicas"][0]["state"] == "READY"
        assert "does not import" in status["last_error"]
        assert control.unloads == []
        assert len(control.loads) == 2  # one reload attempt, then backoff

    asyncio.run(scenario())


def test_adopted_model_with_a_different_config_is_reloaded() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        await _register(store, "m", min_replicas=1)
        server = fleet.servers[0]
        await control.load(server, "m", '{"name": "m", "max_batch_size": 2}', {})
        rec = _reconciler(fleet, control, store, clock)
        report = await rec.tick()
        await rec.wait_idle()
        assert report.adopted == (("m", "s0"),)
        await _settle(rec)
        assert control.loads.count(("m", "s0")) == 2  # the foreign config was replaced once
        assert rec.model_status("m")["replicas"][0]["generation"] == 1

    asyncio.run(scenario())


def test_unreachable_server_backs_off_instead_of_looping() -> None:
    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)

        async def unavailable(*_a: object) -> None:
            control.loads.append(("m", "s0"))
            raise ServerUnavailable("s0: connection refused")

        control.load = unavailable  # type: ignore[method-assign]
        await _register(store, "m", min_replicas=1)
        rec = _reconciler(fleet, control, store, clock, backoff_base_s=5)
        for _ in range(30):
            await rec.tick()
            await rec.wait_idle()
        assert len(control.loads) == 1
        assert rec.model_state("m") is ModelState.PENDING
        clock.now += 20
        await _settle(rec, 2)
        assert len(control.loads) == 2

    asyncio.run(scenario())


def test_delete_then_register_again_serves_the_new_spec() -> None:
    """Found while modelling the lifecycle (tests/unit/test_lifecycle_machine.py): a model deleted and registered again (different
    spec) between two ticks came back at generation 1, the generation its old replica served, so
    the old config kept serving. Generations of a name now never repeat, and a replica whose
    served config differs from the record's is reloaded whatever the generation says."""

    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet)
        registry = Registry(
            store, Renderer(ProtobufSchema(), TemplateFiles()), ArtifactPolicy(None), clock
        )
        await registry.register(ModelSpec.model_validate(python_spec("m", min_replicas=1)))
        rec = _reconciler(fleet, control, store, clock)
        await _settle(rec)
        assert control.configs[("s0", "m")]["max_batch_size"] == 8
        await registry.delete("m")
        again = {**python_spec("m", min_replicas=1), "max_batch_size": 4}
        record = await registry.register(ModelSpec.model_validate(again))
        assert record.generation == 2  # generations of one name never repeat
        await _settle(rec)
        assert control.configs[("s0", "m")]["max_batch_size"] == 4
        assert rec.model_status("m")["replicas"][0]["generation"] == 2

    asyncio.run(scenario())


def test_a_model_deleted_while_no_control_plane_watched_is_unloaded(tmp_path: Path) -> None:
    """Found by the lifecycle state machine: a delete acknowledged after a control-plane
    restart but before its first tick left the model loaded for ever (the new reconciler adopts
    only registered models). The store remembers deleted names; their replicas are unloaded,
    while a model someone else loaded (never registered here) is left alone. Real SQLite."""

    async def scenario() -> None:
        store = await SqliteStore(tmp_path / "db.sqlite").open()
        try:
            fleet, clock = FakeFleet(1, 512 * MiB), Clock()
            control = FakeTritonControl(fleet)
            registry = Registry(
                store, Renderer(ProtobufSchema(), TemplateFiles()), ArtifactPolicy(None), clock
            )
            await registry.register(ModelSpec.model_validate(python_spec("m", min_replicas=1)))
            await _settle(_reconciler(fleet, control, store, clock))
            await control.load(fleet.servers[0], "theirs", '{"name": "theirs"}', {})
            assert set(control.models["s0"]) == {"m", "theirs"}
            restarted = _reconciler(fleet, control, store, clock)  # memory lost
            await registry.delete("m")
            await _settle(restarted, 2)
            assert set(control.models["s0"]) == {"theirs"}
            assert control.unloads == [("m", "s0")]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_load_that_waited_for_a_slot_is_dropped_once_its_model_is_gone() -> None:
    """Found by the storm test (tests/api/test_storm.py): under a storm of changes, loads
    queued behind the concurrency cap ran for models deleted (or changed) while they waited,
    42 of 250 loads in one run. A queued load now re-checks the latest registry the loop read."""

    async def scenario() -> None:
        fleet, store, clock = FakeFleet(1, 512 * MiB), MemoryStore(), Clock()
        control = FakeTritonControl(fleet, load_delay_s=0.05)
        await _register(store, "a", min_replicas=1)
        await _register(store, "b", min_replicas=1)
        rec = _reconciler(fleet, control, store, clock, max_concurrent_loads=1)
        await rec.tick()  # both loads start; one waits for the only slot
        await asyncio.sleep(0)
        first = control.loads[0][0]
        other = "b" if first == "a" else "a"
        await store.delete(other)
        await store.update(
            ModelRecord(first, 2, (await store.get(first)).spec, "", '{"v": 2}', 0.0, 0.0), 1
        )
        await rec.tick()  # the loop reads the registry: `other` deleted, `first` changed
        await rec.wait_idle()
        assert control.loads == [(first, "s0")]  # nothing loaded for the deleted model
        assert rec.model_status(other)["replicas"] == []
        await _settle(rec)
        assert control.configs[("s0", first)] == {"v": 2}

    asyncio.run(scenario())
