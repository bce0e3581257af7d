"""The port between the gateway and the control plane: where a model's ready replicas are.

The gateway asks `replicas(model)` on every request (no I/O: an in-memory view kept fresh by
whoever implements it) and `ensure(model)` when a model has none, to hold the request while the
control plane loads it. In `tritonfleet up` the reconciler implements it in-process; a gateway
running apart from the control plane implements it over the control API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from controlplane.fleet import Server


@dataclass(frozen=True)
class Replica:
    """One ready copy of a model on one server."""

    model: str
    server_id: str
    http_url: str  # "http://127.0.0.1:8000"
    grpc_url: str  # "127.0.0.1:8001"
    metrics_url: str | None = None
    admin_header: str = "admin-key"
    admin_key: str | None = field(default=None, repr=False)


def replica_on(server: Server, model: str) -> Replica:
    """The replica of `model` on `server`, carrying what the gateway needs to reach it."""
    return Replica(
        model=model,
        server_id=server.id,
        http_url=server.http_url,
        grpc_url=server.grpc_url,
        metrics_url=server.metrics_url,
        admin_header=server.admin_header,
        admin_key=server.admin_key,
    )


@dataclass(frozen=True)
class ModelRouting:
    """What the gateway must know about a model beyond where it runs."""

    name: str
    sequence: bool = False  # sequence-batched models are never retried on another replica
    max_queue: int | None = None  # admission limit of requests in flight through the gateway
    tenant: str | None = None  # the owner: with gateway auth, only its token (or the admin's)


@dataclass(frozen=True)
class TenantAccess:
    """What the gateway knows of a tenant: its name and its rate limit (never its token)."""

    name: str
    requests_per_s: float | None = None
    burst: int | None = None


class TenantLookup(Protocol):
    def tenant_by_token(self, token_sha256: str) -> TenantAccess | None:
        """The live tenant whose token hashes to `token_sha256`; None if none. No I/O."""
        ...


class ReplicaDirectory(Protocol):
    def replicas(self, model: str) -> Sequence[Replica]:
        """Ready replicas of `model` right now; empty when cold or unknown. Never does I/O."""
        ...

    def routing(self, model: str) -> ModelRouting | None:
        """Routing facts for a registered model; None when no such model is registered."""
        ...

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        """Make `model` warm somewhere; return its replicas, or empty after `timeout_s`."""
        ...


class ReplicaWire(BaseModel):
    """One ready replica in `GET /v1/replicas` (no admin key: a gateway holds its own)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    server_id: str
    http_url: str
    grpc_url: str
    metrics_url: str | None = None


class ModelWire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sequence: bool = False
    max_inflight: int | None = Field(default=None, ge=1)
    replicas: list[ReplicaWire] = Field(default_factory=list)
    tenant: str | None = None


class TenantWire(BaseModel):
    """One live tenant in `GET /v1/replicas`, keyed by the SHA-256 of its token: the gateway
    authenticates without ever holding a token."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    requests_per_s: float | None = None
    burst: int | None = None


class DirectoryWire(BaseModel):
    """`GET /v1/replicas`: what a gateway running apart needs to route. Built by the control
    plane and parsed by the gateway with this one model, so the two cannot drift."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    models: dict[str, ModelWire] = Field(default_factory=dict)
    tenants: dict[str, TenantWire] = Field(default_factory=dict)  # token SHA-256 -> tenant

    def routing(self) -> dict[str, ModelRouting]:
        return {
            name: ModelRouting(
                name=name, sequence=m.sequence, max_queue=m.max_inflight, tenant=m.tenant
            )
            for name, m in self.models.items()
        }

    def access(self) -> dict[str, TenantAccess]:
        return {
            digest: TenantAccess(t.name, t.requests_per_s, t.burst)
            for digest, t in self.tenants.items()
        }
