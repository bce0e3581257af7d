"""A `ModelStore` that keeps registrations in memory, for what needs a store but no durability.

`tritonfleet config render --offline` renders a spec through the real `Registry` with one,
and the core's tests run the reconciler over one. `tritonfleet up` and `controlplane` use
`adapters.sqlitestore` (registrations must survive a restart).
"""

from __future__ import annotations

from dataclasses import replace

from controlplane.errors import Conflict, NotFound
from controlplane.store import Footprint, ModelRecord


class MemoryStore:
    """A `ModelStore` in this process's memory: nothing survives it."""

    def __init__(self) -> None:
        self._records: dict[str, ModelRecord] = {}
        self._footprints: dict[str, Footprint] = {}

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
        self._footprints.pop(name, None)
        return record

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
