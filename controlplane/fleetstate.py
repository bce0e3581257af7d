"""What the reconciler believes about the fleet, as plain data, and the views of it.

`FleetState` is written only by the reconciler and its actuator; the control API and the gateway
read it (through `controlplane.views`) with `model_status`, `fleet_status` and `counters` (pure
functions, no I/O).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controlplane.fleet import FleetSnapshot, Server
from controlplane.store import Footprint, ModelRecord


class ReplicaState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"


class ModelState(StrEnum):
    PENDING = "PENDING"
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    EVICTED = "EVICTED"


@dataclass
class ReplicaRecord:
    state: ReplicaState
    generation: int  # the generation Triton is serving (0: unknown, reload it)
    since: float
    pending_generation: int | None = None  # a reload in flight; the old one keeps serving
    tuning: int = 0  # the autopilot's batching version it serves (0: the registered config)
    served_key: str | None = None  # ModelRecord.served_key of what it was loaded with


@dataclass
class ModelRuntime:
    failures: int = 0  # failed loads of `failed_generation`
    failed_generation: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    evicted: bool = False
    last_used: float = 0.0
    wanted_until: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def signal(self) -> None:
        """Wake everyone waiting on this model, and arm a fresh event for the next change."""
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class FleetState:
    snapshot: FleetSnapshot
    replicas: dict[tuple[str, str], ReplicaRecord] = field(default_factory=dict)
    models: dict[str, ModelRuntime] = field(default_factory=dict)
    records: dict[str, ModelRecord] = field(default_factory=dict)
    footprints: dict[str, Footprint] = field(default_factory=dict)
    unplaced: dict[str, str] = field(default_factory=dict)
    load_calls: int = 0
    unload_calls: int = 0

    def model(self, name: str) -> ModelRuntime:
        st = self.models.get(name)
        if st is None:
            st = self.models[name] = ModelRuntime()
        return st

    def replicas_of(self, name: str) -> list[tuple[str, ReplicaRecord]]:
        return [(sid, r) for (n, sid), r in sorted(self.replicas.items()) if n == name]

    def ready_servers(self) -> dict[str, list[Server]]:
        """Live servers holding a READY replica, per model, in server id order."""
        servers = {s.id: s for s in self.snapshot.servers if s.live}
        out: dict[str, list[Server]] = {}
        for (name, sid), rep in sorted(self.replicas.items()):
            if rep.state is ReplicaState.READY and sid in servers:
                out.setdefault(name, []).append(servers[sid])
        return out

    def memory_of(self, name: str) -> int:
        fp = self.footprints.get(name)
        if fp is not None:
            return fp.memory_bytes
        record = self.records.get(name)
        return record.spec.policy.memory_bytes if record else 0

    def model_state(self, name: str) -> ModelState:
        reps = [r for _, r in self.replicas_of(name)]
        st = self.models.get(name) or ModelRuntime()
        if any(r.state is ReplicaState.READY for r in reps):
            return ModelState.READY
        if any(r.state is ReplicaState.LOADING for r in reps):
            return ModelState.LOADING
        if st.last_error is not None:
            return ModelState.FAILED
        if st.evicted:
            return ModelState.EVICTED
        return ModelState.PENDING


def model_status(state: FleetState, name: str) -> dict[str, Any]:
    st = state.models.get(name) or ModelRuntime()
    record = state.records.get(name)
    fp = state.footprints.get(name)
    return {
        "name": name,
        "state": state.model_state(name).value,
        "generation": record.generation if record else None,
        "replicas": [
            {
                "server": sid,
                "state": rep.state.value,
                "generation": rep.generation,
                "pending_generation": rep.pending_generation,
                "since": rep.since,
            }
            for sid, rep in state.replicas_of(name)
        ],
        "last_error": st.last_error,
        "failures": st.failures,
        "retry_at": st.retry_at or None,
        "unplaced_reason": state.unplaced.get(name),
        "footprint": {
            "memory_bytes": state.memory_of(name) if record or fp else None,
            "source": fp.source if fp else "declared",
        },
        "last_used": st.last_used or None,
    }


def fleet_status(state: FleetState) -> dict[str, Any]:
    servers = []
    for s in state.snapshot.servers:
        names = sorted(n for (n, sid) in state.replicas if sid == s.id)
        servers.append(
            {
                "id": s.id,
                "health": s.health.value,
                "http_url": s.http_url,
                "grpc_url": s.grpc_url,
                "capacity_bytes": s.capacity_bytes,
                "used_bytes": sum(state.memory_of(n) for n in names),
                "models": [
                    {"name": n, "state": state.replicas[(n, s.id)].state.value} for n in names
                ],
                "labels": dict(s.labels),
            }
        )
    snap = state.snapshot
    return {
        "driver": snap.driver,
        "min_servers": snap.min_servers,
        "max_servers": snap.max_servers,
        "servers": servers,
        "unplaced": dict(state.unplaced),
    }


def counters(state: FleetState) -> Mapping[str, float]:
    states = [state.model_state(n).value for n in state.records]
    out: dict[str, float] = {
        "tritonfleet_reconciler_loads_total": state.load_calls,
        "tritonfleet_reconciler_unloads_total": state.unload_calls,
        "tritonfleet_replicas_ready": sum(
            1 for r in state.replicas.values() if r.state is ReplicaState.READY
        ),
        "tritonfleet_servers_live": len(state.snapshot.live()),
    }
    for ms in ModelState:
        out[f"tritonfleet_models_{ms.value.lower()}"] = states.count(ms.value)
    return out
