"""An in-memory `ReplicaDirectory`: for tests, benchmarks and a gateway over a fixed fleet.

The control plane's reconciler is the real directory; this one is told where models are
(`put`) and, when given a `warm` callback, calls it from `ensure` to load a cold model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from controlplane.fleet import Server
from controlplane.replicas import ModelRouting, Replica, replica_on


class StaticDirectory:
    def __init__(self, warm: Callable[[str], Awaitable[Sequence[Replica]]] | None = None) -> None:
        self._routing: dict[str, ModelRouting] = {}
        self._replicas: dict[str, tuple[Replica, ...]] = {}
        self._warm = warm
        self.ensure_calls: list[str] = []

    def register(self, routing: ModelRouting) -> None:
        self._routing[routing.name] = routing
        self._replicas.setdefault(routing.name, ())

    def put(self, model: str, servers: Iterable[Server]) -> None:
        """`model` is ready on `servers` (registering it with default routing if new)."""
        if model not in self._routing:
            self.register(ModelRouting(name=model))
        self._replicas[model] = tuple(replica_on(s, model) for s in servers)

    def put_replicas(self, model: str, replicas: Iterable[Replica]) -> None:
        if model not in self._routing:
            self.register(ModelRouting(name=model))
        self._replicas[model] = tuple(replicas)

    def drop_server(self, server_id: str) -> None:
        for m, reps in self._replicas.items():
            self._replicas[m] = tuple(r for r in reps if r.server_id != server_id)

    # --- ReplicaDirectory --------------------------------------------------------------
    def replicas(self, model: str) -> Sequence[Replica]:
        return self._replicas.get(model, ())

    def routing(self, model: str) -> ModelRouting | None:
        return self._routing.get(model)

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        self.ensure_calls.append(model)
        if self._warm is None:
            return self.replicas(model)
        try:
            got = await asyncio.wait_for(self._warm(model), timeout_s)
        except TimeoutError:
            return ()
        self._replicas[model] = tuple(got)
        return got
