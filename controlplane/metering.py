"""The chargeback observation of the fleet: what the reconciler believes is READY, where, and
with how many bytes (kept apart from `usage` so the store's row type needs no fleet state)."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.fleet import Server
from controlplane.fleetstate import FleetState, ReplicaState
from controlplane.usage import Counters, ModelMeta, Observation, ReplicaObs


def has_gpu(server: Server) -> bool:
    """A server backed by a GPU (or a MIG slice): the local fleet labels it `device=gpu`; a
    static or Kubernetes fleet says so with a `gpu.*` or `nvidia.com/gpu*` label."""
    labels = server.labels
    return labels.get("device") == "gpu" or any(
        k.startswith(("gpu.", "nvidia.com/gpu")) for k in labels
    )


def observe(
    state: FleetState, now: float, counters: Mapping[str, Mapping[str, Counters]] | None = None
) -> Observation:
    """What the reconciler believes now: READY replicas on live servers, with their bytes."""
    live = {s.id: s for s in state.snapshot.servers if s.live}
    ready = [
        ReplicaObs(name, sid, state.memory_of(name))
        for (name, sid), rep in state.replicas.items()
        if rep.state is ReplicaState.READY and sid in live and name in state.records
    ]
    models = {
        name: ModelMeta(record.tenant, record.spec.tags) for name, record in state.records.items()
    }
    gpus = frozenset(sid for sid, s in live.items() if has_gpu(s))
    return Observation(now, ready, models, gpus, counters)
