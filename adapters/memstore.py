"""A `ModelStore` that keeps registrations in memory, for what needs a store but no durability.

`tritonfleet config render --offline` renders a spec through the real `Registry` with one,
and the core's tests run the reconciler over one. `tritonfleet up` and `controlplane` use
`adapters.sqlitestore` (registrations must survive a restart).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from controlplane.errors import Conflict, NotFound
from controlplane.store import Footprint, ModelRecord
from controlplane.tenants import Tenant
from controlplane.usage import UsageRow


class MemoryStore:
    """A `ModelStore` in this process's memory: nothing survives it."""

    def __init__(self) -> None:
        self._records: dict[str, ModelRecord] = {}
        self._footprints: dict[str, Footprint] = {}
        self._last_generation: dict[str, int] = {}  # of deleted names
        self._tenants: dict[str, Tenant] = {}
        self._usage: dict[tuple[int, str], UsageRow] = {}

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

    async def tenants(self) -> Sequence[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: t.name)

    async def put_tenant(self, tenant: Tenant, *, create: bool) -> Tenant:
        if create and tenant.name in self._tenants:
            raise Conflict(f"tenant {tenant.name!r} exists; revoke or rotate its token instead")
        self._tenants[tenant.name] = tenant
        return tenant

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        for row in rows:
            key = (row.bucket, row.model)
            if key not in self._usage:
                self._usage[key] = UsageRow(row.bucket, row.model, row.tenant, row.tags)
            self._usage[key].add(row)

    async def usage(
        self, from_s: float, to_s: float, tenant: str | None = None
    ) -> Sequence[UsageRow]:
        return [
            replace(r, tags=dict(r.tags))
            for r in self._usage.values()
            if from_s <= r.bucket < to_s and (tenant is None or r.tenant == tenant)
        ]

    async def prune_usage(self, before_s: float) -> int:
        old = [k for k in self._usage if k[0] < before_s]
        for k in old:
            del self._usage[k]
        return len(old)

    async def close(self) -> None:
        return None
