"""The lifecycle state machine (tests/unit/lifecycle.py) against real Triton servers: a local
fleet of two real servers, the real gRPC control and a real SQLite store, few short runs. The
same invariants as the in-memory form; "what is loaded" is what each server's statistics list,
and "serves the newest generation" compares the config Triton reports with the record's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, run_state_machine_as_test

from adapters.artifactfiles import LocalArtifactFiles
from adapters.localfleet import LocalFleet
from adapters.sqlitestore import SqliteStore
from adapters.tritonbin import TritonInstall
from adapters.tritoncontrol import GrpcTritonControl
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import served_matches
from controlplane.errors import TritonfleetError
from controlplane.fleet import FleetDriver
from controlplane.reconciler import ArtifactFiles
from controlplane.store import ModelRecord, ModelStore
from controlplane.triton import TritonControl
from tests.support import start_fleet
from tests.unit.lifecycle import LifecycleMachine

pytestmark = pytest.mark.triton


class TritonLifecycle(LifecycleMachine):
    servers = 2
    local: ClassVar[LocalFleet]
    workdir: ClassVar[Path]
    runs = 0

    def _changed(self) -> None:
        # Few steps against real servers: settle after every change, so every invariant is
        # checked after every step (the in-memory form explores unsettled interleavings).
        super()._changed()
        for _ in range(2):
            self.run(self._tick())
        self._ticked(2)

    @initialize(floor=st.integers(1, 2), variant=st.integers(0, 1))
    def two_models(self, floor: int, variant: int) -> None:
        """Every run starts with models to keep warm (few steps must not all go to setup)."""
        self.register("a", variant, floor, 64)
        self.register("b", 1 - variant, 1, 128)

    def make_fleet(self) -> FleetDriver:
        return self.local

    def make_control(self) -> TritonControl:
        self.grpc = GrpcTritonControl()
        # A fresh start: nothing of an earlier run stays loaded.
        for server in self.run(self.local.refresh()).live():
            for name in self.run(self.grpc.loaded(server)):
                self.run(self.grpc.unload(server, name))
        return self.grpc

    def make_store(self) -> ModelStore:
        TritonLifecycle.runs += 1
        self.sqlite = self.run(SqliteStore(self.workdir / f"db{self.runs}.sqlite").open())
        return self.sqlite

    def make_artifacts(self) -> ArtifactFiles:
        return LocalArtifactFiles(ArtifactPolicy(None))  # the inline model.py, for real

    def loaded(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for server in self.local.snapshot().servers:
            if not server.live:
                continue
            try:
                names = self.run(self.grpc.loaded(server))
                out[server.id] = {n: self.run(self.grpc.config(server, n)) or {} for n in names}
            except TritonfleetError:  # died since the snapshot: it holds nothing
                continue
        return out

    def serves(self, served: dict[str, Any], record: ModelRecord) -> bool:
        return served_matches(json.loads(record.config_json), served)

    def kill(self, server_id: str) -> None:
        pid = self.local.pid(server_id)
        if pid is not None:
            os.killpg(os.getpgid(pid), signal.SIGKILL)  # the driver restarts it on a refresh
        self.run(self.local.refresh())

    def revive(self, server_id: str) -> None:
        self.run(self.local.restart(server_id))

    def teardown(self) -> None:
        super().teardown()
        self.run(self.grpc.close())
        self.run(self.sqlite.close())


@pytest.fixture
def machine(triton_install: TritonInstall, tmp_path: Path) -> Iterator[type[TritonLifecycle]]:
    loop = asyncio.new_event_loop()
    fleet = loop.run_until_complete(start_fleet(triton_install, tmp_path / "fleet", servers=2))
    TritonLifecycle.shared_loop = loop
    TritonLifecycle.local = fleet
    TritonLifecycle.workdir = tmp_path
    try:
        yield TritonLifecycle
    finally:
        loop.run_until_complete(fleet.stop())
        loop.close()
        TritonLifecycle.shared_loop = None


def test_lifecycle_against_real_triton(machine: type[TritonLifecycle]) -> None:
    machine.stats.clear()
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=4,
            stateful_step_count=8,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    for check in ("newest generation served", "floor kept", "views agree with servers"):
        assert machine.stats[f"check {check}"] > 0, dict(machine.stats)
