"""The fleet port: where Triton servers come from.

The control plane never knows whether its servers are local processes (`adapters.localfleet`),
endpoints someone else runs (`adapters.staticfleet`) or pods of a StatefulSet
(`adapters.k8sfleet`); it sees `Server` records through a `FleetDriver`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class ServerHealth(StrEnum):
    STARTING = "STARTING"
    LIVE = "LIVE"
    DOWN = "DOWN"


@dataclass(frozen=True)
class Server:
    """One Triton server as the control plane sees it.

    `admin_key` is the restricted-API header value tritonfleet uses for the model-repository
    and model-config APIs (`--http-restricted-api ...:<admin_header>=<admin_key>`); None when
    the server restricts nothing.
    """

    id: str
    http_url: str  # "http://127.0.0.1:8000"
    grpc_url: str  # "127.0.0.1:8001" (host:port, as gRPC clients take it)
    metrics_url: str | None  # "http://127.0.0.1:8002/metrics"
    capacity_bytes: int
    health: ServerHealth = ServerHealth.LIVE
    admin_header: str = "admin-key"
    admin_key: str | None = field(default=None, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None  # only for servers this process started

    @property
    def live(self) -> bool:
        return self.health is ServerHealth.LIVE


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at one instant: what a planner or router reads.

    `min_servers`/`max_servers` are the sizes `FleetDriver.scale` accepts, where the driver
    bounds them (None: no bound this driver knows of).
    """

    servers: tuple[Server, ...]
    driver: str
    min_servers: int | None = None
    max_servers: int | None = None

    def live(self) -> tuple[Server, ...]:
        return tuple(s for s in self.servers if s.live)

    def by_id(self, server_id: str) -> Server | None:
        return next((s for s in self.servers if s.id == server_id), None)


@runtime_checkable
class FleetDriver(Protocol):
    """Starts (or discovers), watches and scales a pool of Triton servers."""

    name: str

    async def start(self) -> FleetSnapshot:
        """Bring the fleet up (or connect to it) and return the first view of it."""
        ...

    async def refresh(self) -> FleetSnapshot:
        """Probe each server and return the current view; never raises for a dead server."""
        ...

    def snapshot(self) -> FleetSnapshot:
        """The last view, without I/O."""
        ...

    async def scale(self, replicas: int) -> None:
        """Ask for `replicas` servers; raises `NotSupported` where the driver cannot.

        Shrinking removes the highest-ordinal servers first, as a StatefulSet does (local-2
        before local-1; pod N-1 before N-2). The driver does not drain them: callers must have
        emptied those servers (moved their models elsewhere) before asking for fewer.
        """
        ...

    async def stop(self) -> None:
        """Release what `start` took (stops processes this driver started)."""
        ...
