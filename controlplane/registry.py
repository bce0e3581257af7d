"""Registering, changing and removing models: validation, rendering, storing, notifying.

Nothing is stored unless the spec validates, its artifact is allowed and the rendered config
passes Triton's schema and rules, so a bad request can never damage what is registered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import RenderedConfig, Renderer
from controlplane.errors import FieldProblem, InvalidSpec, NotFound
from controlplane.spec import ModelSpec
from controlplane.store import ModelRecord, ModelStore
from controlplane.tenants import ADMIN, Principal, TenantRegistry, check_quota, owner_for

Listener = Callable[[str], Awaitable[None]]


class Registry:
    def __init__(
        self,
        store: ModelStore,
        renderer: Renderer,
        artifacts: ArtifactPolicy,
        clock: Callable[[], float],
        tenants: TenantRegistry | None = None,
    ) -> None:
        self._store = store
        self._renderer = renderer
        self._artifacts = artifacts
        self._clock = clock
        self._listeners: list[Listener] = []
        self.tenants = tenants
        # Quota checks read the tenant's models, then write: one writer at a time, or two
        # registrations could each pass the check the other breaks.
        self._writing = asyncio.Lock()

    @property
    def store(self) -> ModelStore:
        return self._store

    def subscribe(self, listener: Listener) -> None:
        """`listener(name)` runs after each successful change of model `name`."""
        self._listeners.append(listener)

    def render(self, spec: ModelSpec) -> RenderedConfig:
        """Validate everything about `spec` without storing it (a dry run)."""
        problems = self._artifacts.check(spec.artifact)
        if problems:
            raise InvalidSpec(problems)
        return self._renderer.render(spec)

    async def register(self, spec: ModelSpec, principal: Principal = ADMIN) -> ModelRecord:
        owner = owner_for(spec, principal, self.tenants.index) if self.tenants else None
        rendered = self.render(spec)
        async with self._writing:
            await self._check_quota(owner, principal, spec)
            now = self._clock()
            record = ModelRecord(
                name=spec.name,
                generation=1,
                spec=spec,
                config_pbtxt=rendered.pbtxt,
                config_json=rendered.json(),
                created_at=now,
                updated_at=now,
                tenant=owner,
            )
            created = await self._store.create(record)
        await self._notify(spec.name)
        return created

    async def _check_quota(self, owner: str | None, principal: Principal, spec: ModelSpec) -> None:
        """Tenants are held to their quota; the admin may register past it (the planner still
        caps what runs)."""
        if owner is None or principal.admin or self.tenants is None:
            return
        tenant = self.tenants.get(owner)
        others = [r.spec for r in await self._store.list() if r.tenant == owner]
        check_quota(tenant, [s for s in others if s.name != spec.name], spec)

    async def update(self, name: str, spec: ModelSpec, principal: Principal = ADMIN) -> ModelRecord:
        if spec.name != name:
            raise InvalidSpec(
                [
                    FieldProblem(
                        "name",
                        f"{spec.name!r} differs from the URL's {name!r}; renaming "
                        "is not supported, register a new model instead",
                    )
                ]
            )
        current = await self.get(name, principal)
        if self.tenants is not None and not principal.admin:
            owner_for(spec, principal, self.tenants.index)  # ensemble steps stay in the prefix
        rendered = self.render(spec)
        async with self._writing:
            await self._check_quota(current.tenant, principal, spec)
            record = replace(
                current,
                generation=current.generation + 1,
                spec=spec,
                config_pbtxt=rendered.pbtxt,
                config_json=rendered.json(),
                updated_at=self._clock(),
            )
            updated = await self._store.update(record, expected_generation=current.generation)
        await self._notify(name)
        return updated

    async def delete(self, name: str, principal: Principal = ADMIN) -> ModelRecord:
        await self.get(name, principal)
        removed = await self._store.delete(name)
        await self._notify(name)
        return removed

    async def get(self, name: str, principal: Principal = ADMIN) -> ModelRecord:
        """The model; `NotFound` also when it belongs to someone `principal` may not see (a 404
        never tells a tenant that another tenant's model exists)."""
        record = await self._store.get(name)
        if not principal.sees(record.tenant):
            raise NotFound("model", name)
        return record

    async def list(self, principal: Principal = ADMIN) -> list[ModelRecord]:
        records = await self._store.list()
        if principal.admin:
            return records
        return [r for r in records if principal.sees(r.tenant)]

    async def _notify(self, name: str) -> None:
        for listener in self._listeners:
            await listener(name)
