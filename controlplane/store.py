"""The model-store port: where registrations live (`adapters.sqlitestore`, `adapters.memstore`).

A record is one registered model at one generation: the spec the user gave and the config
rendered from it. `PUT` makes a new generation; the reconciler uses the generation to tell a
changed model from an unchanged one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from controlplane.spec import ModelSpec


@dataclass(frozen=True)
class ModelRecord:
    name: str
    generation: int
    spec: ModelSpec
    config_pbtxt: str
    config_json: str
    created_at: float
    updated_at: float
    tenant: str | None = None  # the owner; None: registered by the admin for no tenant

    @property
    def served_key(self) -> str:
        """What Triton is given for this record: the config and the artifact. Two generations
        with the same key serve the same thing (a policy- or SLO-only change needs no reload)."""
        artifact = self.spec.artifact.model_dump_json() if self.spec.artifact else ""
        return hashlib.sha256(f"{self.config_json}\0{artifact}".encode()).hexdigest()


@dataclass(frozen=True)
class Footprint:
    """A model's measured memory per replica, and where the number came from."""

    model: str
    memory_bytes: int
    source: str  # "triton-memory-usage", "process-tree-rss-delta", ...
    measured_at: float
    generation: int = 0  # the model generation it was measured for


class ModelStore(Protocol):
    async def get(self, name: str) -> ModelRecord:
        """Raise `NotFound` when absent."""
        ...

    async def list(self) -> list[ModelRecord]: ...

    async def create(self, record: ModelRecord) -> ModelRecord:
        """Raise `Conflict` when the name exists. A name registered before and deleted
        continues after its last generation (generations of one name never repeat, so a
        generation orders every acknowledged change of a name); returns what was stored."""
        ...

    async def update(self, record: ModelRecord, expected_generation: int) -> ModelRecord:
        """Compare-and-set on generation; raise `Conflict` when it moved, `NotFound` if gone."""
        ...

    async def delete(self, name: str) -> ModelRecord: ...

    async def retired(self, names: Collection[str]) -> set[str]:
        """Those of `names` that were registered here once and are deleted now."""
        ...

    async def put_footprint(self, footprint: Footprint) -> bool:
        """Store it if the model still exists at that generation; say whether it was stored."""
        ...

    async def footprints(self) -> dict[str, Footprint]: ...

    async def close(self) -> None: ...
