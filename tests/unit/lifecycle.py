"""A model of the model lifecycle, and a hypothesis state machine that holds the control plane
to it after every step.

Operations: register, update (a new generation: a new served config, or a policy-only change),
ensure (demand), delete; server kill and restart (the server comes back empty); control-plane
restart (a new reconciler over the same store and fleet, its memory lost); ticks and time.

The model is deliberately simple: the registry as acknowledged (name -> newest record) plus
which names were deleted and how many ticks ago. After every step:

- no replica of a deleted model survives two ticks after the delete was acknowledged;
- once two ticks pass without a change, every loaded replica serves the newest acknowledged
  generation's config (what Triton was given equals the newest record's), floors (min
  replicas) are kept wherever live servers have room for them, and no server holds more
  than its capacity;
- what the control API reports (`model_status`, the gateway's `replicas`, the `directory`)
  agrees with what the servers have loaded.

`LifecycleMachine` runs over the in-memory ports (FakeFleet, FakeTritonControl, MemoryStore:
an emulation, fast, thousands of steps); tests/integration/test_lifecycle_triton.py subclasses
it with real Triton servers and few steps.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.memstore import MemoryStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.errors import Conflict, NotFound
from controlplane.fleet import FleetDriver, ServerHealth
from controlplane.reconciler import ArtifactFiles, Reconciler, ReconcilerConfig
from controlplane.registry import Registry
from controlplane.spec import ModelSpec
from controlplane.store import ModelRecord, ModelStore
from controlplane.triton import TritonControl
from tests.fakes import FakeFleet, FakeTritonControl, InlineArtifacts
from tests.support import python_spec

MiB = 1 << 20
NAMES = ("a", "b", "c", "d")
SETTLE_TICKS = 2
ENSURE_TICKS = 5  # an ensure that no tick satisfies within this many gives up


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Truth:
    """What the registry acknowledged, and how long ago each thing happened (in ticks)."""

    records: dict[str, ModelRecord] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)  # name -> ticks since its delete
    quiet: int = 0  # ticks since the last change of anything
    wanted: set[str] = field(default_factory=set)  # ensured, demand not yet expired


def spec_for(name: str, variant: int, floor: int, memory_mib: int) -> ModelSpec:
    """Variant changes what Triton serves (max_batch_size); floor and memory are policy."""
    body = python_spec(name, min_replicas=floor, max_replicas=2, memory_bytes=memory_mib * MiB)
    body["max_batch_size"] = (4, 8)[variant]
    return ModelSpec.model_validate(body)


class LifecycleMachine(RuleBasedStateMachine):
    """The lifecycle over in-memory ports. Subclasses override the `make_*` hooks."""

    servers = 3
    capacity_mib = 512
    # Operations run and invariants checked, over all runs (the benchmark reports them).
    stats: ClassVar[Counter[str]] = Counter()

    # A loop shared by every run (real servers hold loop-bound connections); None: one each.
    shared_loop: ClassVar[asyncio.AbstractEventLoop | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.shared_loop or asyncio.new_event_loop()
        self.clock = Clock()
        self.truth = Truth()
        self.steps = 0
        self.fleet = self.make_fleet()
        self.control = self.make_control()
        self.store = self.make_store()
        self.registry = Registry(
            self.store,
            Renderer(ProtobufSchema(), TemplateFiles()),
            ArtifactPolicy(None),
            self.clock,
        )
        self.rec = self.new_reconciler()

    # --- ports (overridden for real servers) --------------------------------------------
    def make_fleet(self) -> FleetDriver:
        self.fake_fleet = FakeFleet(self.servers, self.capacity_mib * MiB)
        return self.fake_fleet

    def make_control(self) -> TritonControl:
        self.fake_control = FakeTritonControl(self.fake_fleet)
        return self.fake_control

    def make_store(self) -> ModelStore:
        return MemoryStore()

    def make_artifacts(self) -> ArtifactFiles:
        return InlineArtifacts()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def new_reconciler(self) -> Reconciler:
        return Reconciler(
            self.fleet,
            self.control,
            self.store,
            self.make_artifacts(),
            clock=self.clock,
            rng=random.Random(0),
            config=ReconcilerConfig(max_concurrent_loads=4, max_loads_per_server=2),
        )

    def loaded(self) -> dict[str, dict[str, dict[str, Any]]]:
        """server id -> model -> the config it serves, for live servers (what Triton has)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for server in self.fleet.snapshot().servers:
            if server.live:
                names = self.fake_control.models.get(server.id, {})
                out[server.id] = {n: self.fake_control.configs[(server.id, n)] for n in names}
        return out

    def kill(self, server_id: str) -> None:
        self.fake_fleet.set_health(server_id, ServerHealth.DOWN)
        self.fake_control.models.pop(server_id, None)  # a dead server forgets everything

    def revive(self, server_id: str) -> None:
        self.fake_fleet.set_health(server_id, ServerHealth.LIVE)

    def serves(self, served: dict[str, Any], record: ModelRecord) -> bool:
        """Whether a server's config for the model is the record's."""
        return served == json.loads(record.config_json)

    def teardown(self) -> None:
        self.run(self.rec.close())
        if self.shared_loop is None:
            self.loop.close()

    # --- operations ---------------------------------------------------------------------
    def _changed(self) -> None:
        self.truth.quiet = 0

    @rule(
        name=st.sampled_from(NAMES),
        variant=st.integers(0, 1),
        floor=st.integers(0, 2),
        memory_mib=st.sampled_from((64, 128)),
    )
    def register(self, name: str, variant: int, floor: int, memory_mib: int) -> None:
        self.stats["op register"] += 1
        try:
            record = self.run(self.registry.register(spec_for(name, variant, floor, memory_mib)))
        except Conflict:
            assert name in self.truth.records, f"{name} refused as taken but it is not"
            return
        assert name not in self.truth.records, f"{name} registered twice"
        last = self.truth.records.get(name)
        assert last is None or record.generation > last.generation
        self.truth.records[name] = record
        self.truth.deleted.pop(name, None)
        self._changed()

    @rule(
        name=st.sampled_from(NAMES),
        variant=st.integers(0, 1),
        floor=st.integers(0, 2),
        memory_mib=st.sampled_from((64, 128)),
    )
    def update(self, name: str, variant: int, floor: int, memory_mib: int) -> None:
        self.stats["op update"] += 1
        try:
            record = self.run(
                self.registry.update(name, spec_for(name, variant, floor, memory_mib))
            )
        except NotFound:
            assert name not in self.truth.records, f"{name} is registered, update said 404"
            return
        before = self.truth.records[name]
        assert record.generation == before.generation + 1  # the ack orders the changes
        self.truth.records[name] = record
        self._changed()

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        self.stats["op delete"] += 1
        try:
            record = self.run(self.registry.delete(name))
        except NotFound:
            assert name not in self.truth.records
            return
        assert record == self.truth.records.pop(name)
        self.truth.deleted[name] = 0
        self.truth.wanted.discard(name)
        self._changed()

    @rule(name=st.sampled_from(NAMES))
    def ensure(self, name: str) -> None:
        """`POST /ensure` (and a cold gateway request): want it warm and wait, while the loop
        ticks; a model the loop has not seen yet waits for a tick that starts after the call."""
        self.stats["op ensure"] += 1

        async def ensure_while_ticking() -> int:
            task = asyncio.ensure_future(self.rec.ensure(name, 5.0))
            n = 0
            while not task.done() and n < ENSURE_TICKS:
                await self._tick()
                n += 1
                await asyncio.sleep(0)
            task.cancel()  # still waiting after that many ticks: the client gives up
            await asyncio.gather(task, return_exceptions=True)
            return n

        if name in self.truth.records:
            self.truth.wanted.add(name)
            self._changed()
        self._ticked(self.run(ensure_while_ticking()))

    @rule(index=st.integers(0, 2))
    def kill_server(self, index: int) -> None:
        self.stats["op kill_server"] += 1
        servers = self.fleet.snapshot().servers
        self.kill(servers[index % len(servers)].id)
        self._changed()

    @rule(index=st.integers(0, 2))
    def restart_server(self, index: int) -> None:
        self.stats["op restart_server"] += 1
        servers = self.fleet.snapshot().servers
        server = servers[index % len(servers)]
        if server.live:
            self.kill(server.id)
        self.revive(server.id)
        self._changed()

    @rule()
    def restart_control_plane(self) -> None:
        """A new reconciler over the same store and servers (what a crash and restart does)."""
        self.stats["op restart_control_plane"] += 1
        self.run(self.rec.close())
        self.rec = self.new_reconciler()
        self.truth.wanted.clear()  # demand lived in the old process's memory
        self._changed()

    @rule(seconds=st.sampled_from((1.0, 30.0, 400.0)))
    def time_passes(self, seconds: float) -> None:
        self.stats["op time_passes"] += 1
        self.clock.now += seconds
        if seconds >= 300:  # ReconcilerConfig.demand_ttl_s
            self.truth.wanted.clear()
            self._changed()

    @rule(n=st.integers(1, 3))
    def ticks(self, n: int) -> None:
        for _ in range(n):
            self.run(self._tick())
        self._ticked(n)

    async def _tick(self) -> None:
        self.stats["op tick"] += 1
        await self.rec.tick()
        await self.rec.wait_idle()

    def _ticked(self, n: int) -> None:
        self.truth.quiet += n
        for name in self.truth.deleted:
            self.truth.deleted[name] += n

    # --- invariants ---------------------------------------------------------------------
    @invariant()
    def deleted_models_are_gone_within_two_ticks(self) -> None:
        loaded = self.loaded()
        for name, ticks in self.truth.deleted.items():
            if ticks >= SETTLE_TICKS:
                self.stats["check deleted model gone"] += 1
                holders = [sid for sid, models in loaded.items() if name in models]
                assert not holders, f"deleted {name} still loaded on {holders} after {ticks} ticks"
                assert not self.rec.replicas(name)

    @invariant()
    def no_server_over_capacity(self) -> None:
        for sid, models in self.loaded().items():
            self.stats["check server within capacity"] += 1
            used = sum(
                self.truth.records[n].spec.policy.memory_bytes
                for n in models
                if n in self.truth.records
            )
            assert used <= self.capacity_mib * MiB, f"{sid} holds {used} bytes"

    @precondition(lambda self: self.truth.quiet >= SETTLE_TICKS)
    @invariant()
    def settled_state_matches_the_newest_acknowledged(self) -> None:
        loaded = self.loaded()
        live = sorted(loaded)
        for name, record in self.truth.records.items():
            holders = sorted(sid for sid in live if name in loaded[sid])
            self.stats["check newest generation served"] += len(holders)
            for sid in holders:
                assert self.serves(loaded[sid][name], record), (
                    f"{name} on {sid} serves an older config than generation {record.generation}"
                )
            floor = record.spec.policy.min_replicas
            target = max(floor, 1 if name in self.truth.wanted else 0)
            if self._room_for_floors(len(live)):
                self.stats["check floor kept"] += 1
                assert len(holders) >= min(target, len(live)), (
                    f"{name}: {len(holders)} replicas on {live}, floor {floor}, target {target}"
                )
            # The API's views agree with what the servers have loaded.
            self.stats["check views agree with servers"] += 1
            status = self.rec.model_status(name)
            ready = sorted(r["server"] for r in status["replicas"] if r["state"] == "READY")
            assert ready == holders, f"{name}: status says {ready}, servers hold {holders}"
            assert all(r["generation"] == record.generation for r in status["replicas"])
            assert sorted(r.server_id for r in self.rec.replicas(name)) == holders
            directory = self.rec.directory()["models"][name]["replicas"]
            assert sorted(r["server_id"] for r in directory) == holders
        for sid in live:
            strays = set(loaded[sid]) - set(self.truth.records)
            assert not strays, f"{sid} serves unregistered {strays}"

    def _room_for_floors(self, live: int) -> bool:
        """Whether the live servers can hold every floor and every ensured model at once."""
        need = 0
        for name, record in self.truth.records.items():
            target = max(record.spec.policy.min_replicas, 1 if name in self.truth.wanted else 0)
            if target > live:
                return False
            need += target * record.spec.policy.memory_bytes
        return need <= live * self.capacity_mib * MiB
