"""Small in-memory implementations of the core's ports, for tests and simulations.

They behave like the real thing where the core depends on it (a load makes a model appear in
`loaded`, a dead server loses its models) and record every call so tests can count them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from controlplane.autopilot import Measured
from controlplane.errors import ModelLoadFailed, NotSupported, ServerUnavailable
from controlplane.fleet import FleetSnapshot, Server, ServerHealth
from controlplane.store import ModelRecord
from controlplane.triton import LoadedModel


class FakeFleet:
    name = "fake"

    def __init__(self, n: int, capacity_bytes: int, max_servers: int | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.max_servers = max_servers  # None: a fixed size, like a static fleet
        self.scale_calls: list[int] = []
        self.servers = [self._server(i) for i in range(n)]

    def _server(self, i: int) -> Server:
        return Server(
            id=f"s{i}",
            http_url=f"http://fake-{i}:8000",
            grpc_url=f"fake-{i}:8001",
            metrics_url=None,
            capacity_bytes=self.capacity_bytes,
        )

    def set_health(self, server_id: str, health: ServerHealth) -> None:
        self.servers = [replace(s, health=health) if s.id == server_id else s for s in self.servers]

    async def start(self) -> FleetSnapshot:
        return self.snapshot()

    async def refresh(self) -> FleetSnapshot:
        return self.snapshot()

    def snapshot(self) -> FleetSnapshot:
        return FleetSnapshot(servers=tuple(self.servers), driver=self.name)

    async def scale(self, replicas: int) -> None:
        """StatefulSet-like: grow with new ordinals, shrink from the highest one."""
        if self.max_servers is None or not 1 <= replicas <= self.max_servers:
            raise NotSupported(f"fake fleet: cannot scale to {replicas}")
        self.scale_calls.append(replicas)
        self.servers = [
            self.servers[i] if i < len(self.servers) else self._server(i) for i in range(replicas)
        ]

    async def stop(self) -> None:
        return None


class FakeTritonControl:
    def __init__(self, fleet: FakeFleet, load_delay_s: float = 0.0) -> None:
        self._fleet = fleet
        self.delay = load_delay_s
        self.models: dict[str, dict[str, LoadedModel]] = {}
        self.broken: dict[str, str] = {}  # model -> Triton's reason
        self.loads: list[tuple[str, str]] = []
        self.configs: dict[tuple[str, str], dict[str, Any]] = {}
        self.unloads: list[tuple[str, str]] = []

    def _live(self, server: Server) -> dict[str, LoadedModel]:
        current = next(s for s in self._fleet.servers if s.id == server.id)
        if current.health is not ServerHealth.LIVE:
            self.models.pop(server.id, None)  # a dead server forgets everything
            raise ServerUnavailable(f"{server.id} is down")
        return self.models.setdefault(server.id, {})

    async def load(
        self, server: Server, model: str, config_json: str, files: Mapping[str, bytes]
    ) -> None:
        self.loads.append((model, server.id))
        if self.delay:
            await asyncio.sleep(self.delay)
        loaded = self._live(server)
        if model in self.broken:
            raise ModelLoadFailed(model, server.id, self.broken[model])
        loaded[model] = LoadedModel(name=model, version="1", ready=True)
        self.configs[(server.id, model)] = json.loads(config_json)

    async def unload(self, server: Server, model: str) -> None:
        self.unloads.append((model, server.id))
        self._live(server).pop(model, None)

    async def loaded(self, server: Server) -> dict[str, LoadedModel]:
        return dict(self._live(server))

    async def config(self, server: Server, model: str) -> dict[str, Any] | None:
        if model not in self._live(server):
            return None
        return self.configs.get((server.id, model))

    async def close(self) -> None:
        return None


class InlineArtifacts:
    async def files(self, record: ModelRecord) -> dict[str, bytes]:
        return {}


class FakeLoadSignals:
    """`LoadSignals` whose readings a test sets per model (missing: stale)."""

    def __init__(self) -> None:
        self.readings: dict[str, Measured] = {}
        self.fail = False

    async def read(
        self, models: Mapping[str, Any], stable_s: float, panic_s: float, now: float
    ) -> Mapping[str, Measured]:
        if self.fail:
            raise ServerUnavailable("signals unreachable")
        return {n: m for n, m in self.readings.items() if n in models}


class FakeInflight:
    """`InflightProbe` over a dict the test fills: (model, server) -> requests in flight."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.asked: dict[tuple[str, str], int] = {}  # how often a drain looked

    def inflight(self, model: str, server_id: str) -> int | None:
        self.asked[model, server_id] = self.asked.get((model, server_id), 0) + 1
        return self.counts.get((model, server_id), 0)
