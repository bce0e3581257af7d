"""The act step of the reconciler: loads, unloads and drains as background tasks.

The loop must never wait on Triton, so every action runs as its own task, under a fleet-wide and
a per-server limit. A reload keeps the old generation serving until the new one is READY. A
failed load marks the model FAILED with Triton's reason and backs off (exponential, jittered,
bounded attempts); an unreachable server backs off too: no storms. After a load the model's
footprint is measured and stored.

The actuator writes the shared `FleetState` and tells its owner that the ready replicas changed
through `on_change`; it knows nothing of the loop. It also answers what the diff step needs to
leave alone (`untouchable`) and what the planner must not retry yet (`blocked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable, Iterable, KeysView
from typing import Any, Protocol

from controlplane import batching, placement
from controlplane.errors import ModelLoadFailed, TritonfleetError
from controlplane.events import EventFeed, EventKind
from controlplane.fleet import Server
from controlplane.fleetstate import FleetState, ReplicaRecord, ReplicaState
from controlplane.store import Footprint, ModelRecord, ModelStore
from controlplane.triton import TritonControl

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (model, server id)


class ArtifactFiles(Protocol):
    """Reads a registered model's files (inline, or from an allowed local path)."""

    async def files(self, record: ModelRecord) -> dict[str, bytes]: ...


class InflightProbe(Protocol):
    """Requests in flight to one replica through the gateway; None when it cannot tell."""

    def inflight(self, model: str, server_id: str) -> int | None: ...


class MemoryMeter(Protocol):
    """Bytes a server uses now (for footprint deltas around a load); None when unknown."""

    async def sample(self, server: Server) -> tuple[int, str] | None: ...


class Limits(Protocol):
    """The knobs the actuator reads (`ReconcilerConfig` has them all)."""

    @property
    def max_concurrent_loads(self) -> int: ...
    @property
    def max_loads_per_server(self) -> int: ...
    @property
    def backoff_base_s(self) -> float: ...
    @property
    def backoff_max_s(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def drain_grace_s(self) -> float: ...
    @property
    def drain_timeout_s(self) -> float: ...


class Actuator:
    def __init__(
        self,
        state: FleetState,
        control: TritonControl,
        store: ModelStore,
        artifacts: ArtifactFiles,
        clock: Callable[[], float],
        rng: random.Random,
        limits: Limits,
        on_change: Callable[[], None],
        meter: MemoryMeter | None = None,
        inflight: InflightProbe | None = None,
        tuning: Callable[[str], tuple[int, int | None]] | None = None,
        events: EventFeed | None = None,
    ) -> None:
        self._state = state
        self._control = control
        self._store = store
        self._artifacts = artifacts
        self._clock = clock
        self._rng = rng
        self._cfg = limits
        self._on_change = on_change  # the set of READY replicas may have changed
        self._meter = meter
        self._inflight = inflight
        # (version, tuned max_queue_delay_us or None) of a model: what a load should serve
        self._tuning = tuning or (lambda _model: (0, None))
        self._events = events
        self._tasks: dict[Key, asyncio.Task[None]] = {}  # (model, server) in flight
        self._settled: dict[Key, float] = {}  # loop time each action finished
        self._hold_until: dict[str, float] = {}  # transient failures: no new load before
        self._background: set[asyncio.Task[None]] = set()
        self._global = asyncio.Semaphore(self._cfg.max_concurrent_loads)
        self._per_server: dict[str, asyncio.Semaphore] = {}

    def attach_inflight(self, probe: InflightProbe) -> None:
        self._inflight = probe

    # --- what the loop asks -------------------------------------------------------------
    @property
    def in_flight(self) -> KeysView[Key]:
        """(model, server) pairs with a load or unload under way."""
        return self._tasks.keys()

    def untouchable(self, key: Key, observed_at: float) -> bool:
        """In flight, or finished after the observation: the observation is stale for it."""
        return key in self._tasks or self._settled.get(key, -math.inf) >= observed_at

    def forget_settled(self, observed_at: float) -> None:
        """Finish times older than `observed_at` can never make a later observation stale."""
        for key in [k for k, t in self._settled.items() if t < observed_at]:
            del self._settled[key]

    def blocked(self, name: str, now: float) -> bool:
        """`name` must not be loaded now: backing off, or out of attempts for its generation."""
        st = self._state.model(name)
        if now < self._hold_until.get(name, 0.0):
            return True
        return st.failures > 0 and (st.failures >= self._cfg.max_attempts or now < st.retry_at)

    def reset_failures(self) -> None:
        """A new generation (the user changed the spec) starts with a clean slate."""
        for name, record in self._state.records.items():
            st = self._state.model(name)
            if st.failures and st.failed_generation != record.generation:
                st.failures, st.retry_at, st.last_error = 0, 0.0, None

    def forget(self, models: Iterable[str], known_servers: set[str]) -> None:
        """Drop the bookkeeping of deleted models and of servers that left the fleet."""
        for name in models:
            self._hold_until.pop(name, None)
        for sid in list(self._per_server):
            if sid not in known_servers and not any(s == sid for _, s in self._tasks):
                del self._per_server[sid]

    async def wait_idle(self) -> None:
        """Until no load or unload is in flight (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- act ----------------------------------------------------------------------------
    def start(self, action: placement.Action) -> None:
        key = (action.model, action.server)
        state = self._state
        server = state.snapshot.by_id(action.server)
        if key in self._tasks or server is None:
            return
        now = self._clock()
        coro: Any
        if action.kind is placement.ActionKind.LOAD:
            record = state.records[action.model]
            rep = state.replicas.get(key)
            if rep is not None and rep.state is ReplicaState.READY:
                rep.pending_generation = record.generation  # reload: the old one keeps serving
                log.info(
                    "replica %s on %s: READY → reloading generation %d",
                    action.model,
                    server.id,
                    record.generation,
                )
            else:
                state.replicas[key] = ReplicaRecord(ReplicaState.LOADING, record.generation, now)
                log.info("replica %s on %s: → LOADING (%s)", action.model, server.id, action.reason)
            coro = self._load(server, record, *self._tuning(action.model))
        else:
            rep = state.replicas.get(key)
            if rep is not None:
                rep.state = ReplicaState.UNLOADING
            log.info("replica %s on %s: → UNLOADING (%s)", action.model, server.id, action.reason)
            coro = self._unload(server, action.model, action.evicts, action.drain)
        task = asyncio.create_task(coro, name=f"{action.model}@{action.server}")
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: Key, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)
        self._settled[key] = asyncio.get_running_loop().time()

    def _server_sem(self, server_id: str) -> asyncio.Semaphore:
        sem = self._per_server.get(server_id)
        if sem is None:
            sem = self._per_server[server_id] = asyncio.Semaphore(self._cfg.max_loads_per_server)
        return sem

    def _backoff(self, attempt: int) -> float:
        delay = min(self._cfg.backoff_max_s, self._cfg.backoff_base_s * 2.0 ** max(0, attempt - 1))
        return float(delay * (0.5 + self._rng.random()))

    async def _load(
        self, server: Server, record: ModelRecord, tuning: int = 0, delay_us: int | None = None
    ) -> None:
        key = (record.name, server.id)
        config = batching.apply(record.config_json, delay_us)
        st = self._state.model(record.name)
        try:
            async with self._global, self._server_sem(server.id):
                if self._superseded(record):
                    log.info(
                        "replica %s on %s: load of generation %d dropped (deleted or changed "
                        "while it waited for a slot)",
                        record.name,
                        server.id,
                        record.generation,
                    )
                    self._settle_dropped_load(key)
                    return
                before = await self._meter.sample(server) if self._meter else None
                files = await self._artifacts.files(record)
                self._state.load_calls += 1
                await self._control.load(server, record.name, config, files)
                after = await self._meter.sample(server) if self._meter else None
        except ModelLoadFailed as exc:
            st.failures = st.failures + 1 if st.failed_generation == record.generation else 1
            st.failed_generation = record.generation
            st.last_error = exc.reason
            st.retry_at = self._clock() + self._backoff(st.failures)
            log.warning(
                "model %s on %s: LOADING → FAILED (attempt %d/%d): %s",
                record.name,
                server.id,
                st.failures,
                self._cfg.max_attempts,
                exc.reason,
            )
            self._publish(record.name, f"load on {server.id} failed: {exc.reason}", server.id)
            self._settle_failed_load(server, record.name, key)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # unreachable server, unreadable artifact, anything else
            self._hold_until[record.name] = self._clock() + self._backoff(1)
            log.warning("replica %s on %s: load did not complete: %s", record.name, server.id, exc)
            self._publish(record.name, f"load on {server.id} did not complete: {exc}", server.id)
            self._settle_failed_load(server, record.name, key)
            return
        rep = self._state.replicas.get(key)
        if rep is not None:
            rep.state, rep.generation, rep.pending_generation = (
                ReplicaState.READY,
                record.generation,
                None,
            )
            rep.since, rep.tuning, rep.served_key = self._clock(), tuning, record.served_key
        st.failures, st.last_error, st.evicted = 0, None, False
        self._hold_until.pop(record.name, None)
        log.info("replica %s on %s: LOADING → READY", record.name, server.id)
        self._publish(record.name, f"READY on {server.id}", server.id)
        self._on_change()
        st.signal()
        await self._record_footprint(record, server, before, after)

    def _publish(self, model: str, summary: str, server_id: str) -> None:
        if self._events is not None:
            self._events.publish(
                EventKind.REPLICA, model, summary[:500], self._clock(), {"server": server_id}
            )

    def _superseded(self, record: ModelRecord) -> bool:
        """The latest registry the loop read no longer serves `record`: deleted, or changed
        to another config or artifact. (A load waits for its slots; a storm of changes must
        not become a storm of loads of configs nobody wants any more.)"""
        current = self._state.records.get(record.name)
        return current is None or current.served_key != record.served_key

    def _settle_dropped_load(self, key: Key) -> None:
        rep = self._state.replicas.get(key)
        if rep is not None and rep.pending_generation is not None:
            rep.pending_generation = None  # a dropped reload: the old one serves until replaced
        elif rep is not None and rep.state is ReplicaState.LOADING:
            del self._state.replicas[key]  # nothing reached Triton: nothing to clean up
        self._state.model(key[0]).signal()

    def _settle_failed_load(self, server: Server, name: str, key: Key) -> None:
        rep = self._state.replicas.get(key)
        if rep is not None and rep.pending_generation is not None:
            rep.pending_generation = None  # a failed reload: the old generation keeps serving
        else:
            self._state.replicas.pop(key, None)
            # A failed first load leaves the model UNAVAILABLE on Triton; clear it (best effort).
            task = asyncio.get_running_loop().create_task(self._quiet_unload(server, name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._state.model(name).signal()

    async def _record_footprint(
        self,
        record: ModelRecord,
        server: Server,
        before: tuple[int, str] | None,
        after: tuple[int, str] | None,
    ) -> None:
        known = self._state.footprints.get(record.name)
        if known is not None and known.generation == record.generation:
            return
        measured: tuple[int, str] | None = None
        try:
            loaded = (await self._control.loaded(server)).get(record.name)
        except TritonfleetError:
            loaded = None
        if loaded is not None and loaded.memory_bytes:
            measured = (loaded.memory_bytes, "triton-memory-usage")
        elif before is not None and after is not None and after[0] > before[0]:
            measured = (after[0] - before[0], after[1])
        if measured is None:
            return
        fp = Footprint(record.name, measured[0], measured[1], self._clock(), record.generation)
        try:
            if await self._store.put_footprint(fp):
                self._state.footprints[record.name] = fp
        except TritonfleetError as exc:
            log.warning("could not store footprint of %s: %s", record.name, exc)

    async def _drain(self, server: Server, name: str) -> None:
        """Out of routing first; then wait for the requests in flight to it to finish."""
        self._on_change()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(self._cfg.drain_grace_s)
        while loop.time() - start < self._cfg.drain_timeout_s:
            n = self._inflight.inflight(name, server.id) if self._inflight else None
            if not n:
                return
            await asyncio.sleep(0.05)
        log.warning(
            "replica %s on %s: still busy after %gs of draining; unloading anyway",
            name,
            server.id,
            self._cfg.drain_timeout_s,
        )

    async def _unload(self, server: Server, name: str, evicted: bool, drain: bool = False) -> None:
        key = (name, server.id)
        if drain:
            await self._drain(server, name)
        try:
            self._state.unload_calls += 1
            await self._control.unload(server, name)
        except TritonfleetError as exc:
            log.warning("unload %s on %s failed: %s", name, server.id, exc)
        self._state.replicas.pop(key, None)
        st = self._state.model(name)
        if evicted:
            st.evicted = True
        log.info(
            "replica %s on %s: UNLOADING → gone%s", name, server.id, " (evicted)" if evicted else ""
        )
        self._on_change()
        st.signal()

    async def _quiet_unload(self, server: Server, name: str) -> None:
        with contextlib.suppress(TritonfleetError):
            await self._control.unload(server, name)
