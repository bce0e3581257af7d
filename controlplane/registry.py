"""Registering, changing and removing models: validation, rendering, storing, notifying.

Nothing is stored unless the spec validates, its artifact is allowed and the rendered config
passes Triton's schema and rules, so a bad request can never damage what is registered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import RenderedConfig, Renderer
from controlplane.errors import FieldProblem, InvalidSpec
from controlplane.spec import ModelSpec
from controlplane.store import ModelRecord, ModelStore

Listener = Callable[[str], Awaitable[None]]


class Registry:
    def __init__(
        self,
        store: ModelStore,
        renderer: Renderer,
        artifacts: ArtifactPolicy,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._renderer = renderer
        self._artifacts = artifacts
        self._clock = clock
        self._listeners: list[Listener] = []

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

    async def register(self, spec: ModelSpec) -> ModelRecord:
        rendered = self.render(spec)
        now = self._clock()
        record = ModelRecord(
            name=spec.name,
            generation=1,
            spec=spec,
            config_pbtxt=rendered.pbtxt,
            config_json=rendered.json(),
            created_at=now,
            updated_at=now,
        )
        created = await self._store.create(record)
        await self._notify(spec.name)
        return created

    async def update(self, name: str, spec: ModelSpec) -> ModelRecord:
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
        current = await self._store.get(name)
        rendered = self.render(spec)
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

    async def delete(self, name: str) -> ModelRecord:
        removed = await self._store.delete(name)
        await self._notify(name)
        return removed

    async def get(self, name: str) -> ModelRecord:
        return await self._store.get(name)

    async def list(self) -> list[ModelRecord]:
        return await self._store.list()

    async def _notify(self, name: str) -> None:
        for listener in self._listeners:
            await listener(name)
