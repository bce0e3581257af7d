"""The model-store port: where registrations live, plus an in-memory fake for tests.

A record is one registered model at one generation: the spec the user gave and the config
rendered from it. `PUT` makes a new generation; the reconciler uses the generation to tell a
changed model from an unchanged one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Protocol

from controlplane.errors import Conflict, NotFound
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


class MemoryStore:
    """In-memory `ModelStore` for unit tests."""

    def __init__(self) -> None:
        self._records: dict[str, ModelRecord] = {}
        self._footprints: dict[str, Footprint] = {}
        self._last_generation: dict[str, int] = {}  # of deleted names

    async def get(self, name: str) -> ModelRecord:
        try:
            return self._records[name]
        except KeyError:
            raise NotFound("model", name) from None

    async def list(self) -> list[ModelRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

    async def create(self, record: ModelRecord) -> ModelRecord:
        if record.name in self._records:
            raise Conflict(f"model {record.name!r} is already registered; use PUT to change it")
        after = self._last_generation.get(record.name, 0)
        if record.generation <= after:
            record = replace(record, generation=after + 1)
        self._records[record.name] = record
        return record

    async def update(self, record: ModelRecord, expected_generation: int) -> ModelRecord:
        current = await self.get(record.name)
        if current.generation != expected_generation:
            raise Conflict(
                f"model {record.name!r} changed meanwhile (generation {current.generation}); retry"
            )
        self._records[record.name] = replace(record, created_at=current.created_at)
        self._footprints.pop(record.name, None)  # a new generation is measured anew
        return self._records[record.name]

    async def delete(self, name: str) -> ModelRecord:
        record = await self.get(name)
        del self._records[name]
        self._last_generation[name] = record.generation
        self._footprints.pop(name, None)
        return record

    async def retired(self, names: Collection[str]) -> set[str]:
        return {n for n in names if n in self._last_generation and n not in self._records}

    async def put_footprint(self, footprint: Footprint) -> bool:
        record = self._records.get(footprint.model)
        if record is None or record.generation != footprint.generation:
            return False
        self._footprints[footprint.model] = footprint
        return True

    async def footprints(self) -> dict[str, Footprint]:
        return dict(self._footprints)

    async def close(self) -> None:
        return None
