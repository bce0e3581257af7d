"""The reconciler: observe → diff → plan → act, once per tick, forever.

1. **Observe** the fleet (`FleetDriver.refresh`), what each live server has loaded
   (`TritonControl.loaded`, i.e. statistics: models loaded with file overrides are missing from
   the repository index), the registry and the measured footprints.
2. **Diff** that against what the reconciler believes: adopt models already loaded (a restarted
   control plane issues no redundant load), forget replicas whose server lost them, notice
   registrations whose generation changed.
3. **Plan** with the pure `placement.plan`.
4. **Act**: loads and unloads run as background tasks under a fleet-wide and a per-server limit,
   so a slow load never stalls the loop. A failed load marks the model FAILED with Triton's
   reason and backs off (exponential, jittered, bounded attempts): no retry storm.

One failing step never stops the loop; transitions are logged as `old → new`, quiet ticks are not.
The reconciler also answers the control API (`FleetView`) and the gateway (`ReplicaDirectory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from controlplane import placement
from controlplane.errors import ModelLoadFailed, ServerUnavailable, TritonfleetError
from controlplane.fleet import FleetDriver, FleetSnapshot, Server
from controlplane.replicas import ModelRouting, Replica
from controlplane.store import Footprint, ModelRecord, ModelStore
from controlplane.triton import LoadedModel, TritonControl

log = logging.getLogger(__name__)


class ReplicaState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"


class ModelState(StrEnum):
    PENDING = "PENDING"
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    EVICTED = "EVICTED"


class ArtifactFiles(Protocol):
    """Reads a registered model's files (inline, or from an allowed local path)."""

    async def files(self, record: ModelRecord) -> dict[str, bytes]: ...


class MemoryMeter(Protocol):
    """Bytes a server uses now (for footprint deltas around a load); None when unknown."""

    async def sample(self, server: Server) -> tuple[int, str] | None: ...


@dataclass(frozen=True)
class ReconcilerConfig:
    interval_s: float = 1.0
    max_concurrent_loads: int = 4
    max_loads_per_server: int = 1
    backoff_base_s: float = 5.0
    backoff_max_s: float = 600.0
    max_attempts: int = 3  # failed loads of one generation before the model waits for a PUT
    demand_ttl_s: float = 300.0  # an ensure keeps a replica wanted this long after last use


@dataclass
class _Replica:
    state: ReplicaState
    generation: int
    since: float


@dataclass
class _Model:
    failures: int = 0
    failed_generation: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    evicted: bool = False
    last_used: float = 0.0
    wanted_until: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class TickReport:
    actions: tuple[placement.Action, ...]
    reloads: tuple[tuple[str, str], ...]
    unplaced: Mapping[str, str]
    adopted: tuple[tuple[str, str], ...]


class Reconciler:
    def __init__(
        self,
        fleet: FleetDriver,
        control: TritonControl,
        store: ModelStore,
        artifacts: ArtifactFiles,
        clock: Callable[[], float],
        rng: random.Random,
        config: ReconcilerConfig = ReconcilerConfig(),
        meter: MemoryMeter | None = None,
    ) -> None:
        self._fleet = fleet
        self._control = control
        self._store = store
        self._artifacts = artifacts
        self._clock = clock
        self._rng = rng
        self._cfg = config
        self._meter = meter
        # (model, server) -> replica the reconciler believes in
        self._replicas: dict[tuple[str, str], _Replica] = {}
        self._models: dict[str, _Model] = {}
        self._records: dict[str, ModelRecord] = {}
        self._footprints: dict[str, Footprint] = {}
        self._snapshot = FleetSnapshot(servers=(), driver=getattr(fleet, "name", "?"))
        self._loaded: dict[str, dict[str, LoadedModel]] = {}
        self._unplaced: dict[str, str] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}  # (model, server) in flight
        self._global = asyncio.Semaphore(config.max_concurrent_loads)
        self._per_server: dict[str, asyncio.Semaphore] = {}
        self._wake = asyncio.Event()
        self._ready_view: dict[str, tuple[Replica, ...]] = {}
        self.load_calls = 0  # every load issued to Triton, for tests and metrics
        self.unload_calls = 0

    # --- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failing step never stops the loop
                log.exception("reconcile tick failed; retrying next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._cfg.interval_s)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    async def tick(self) -> TickReport:
        now = self._clock()
        # 1. Observe.
        snap = await self._fleet.refresh()
        self._snapshot = snap
        live = snap.live()
        observed = await asyncio.gather(
            *(self._control.loaded(s) for s in live), return_exceptions=True
        )
        records = {r.name: r for r in await self._store.list()}
        self._records = records
        self._footprints = await self._store.footprints()

        # 2. Diff.
        adopted = self._diff(snap, live, observed, records, now)
        reloads = self._stale_generations(records)

        # 3. Plan.
        snapshot = self._planner_snapshot(snap, records, now)
        result = placement.plan(snapshot)
        self._unplaced = dict(result.unplaced)

        # 4. Act.
        for action in result.actions:
            self._start(action, records)
        for model, server in reloads:
            self._start(
                placement.Action(placement.ActionKind.LOAD, model, server, "new generation"),
                records,
            )
        self._refresh_ready_view()
        return TickReport(
            actions=result.actions,
            reloads=tuple(reloads),
            unplaced=result.unplaced,
            adopted=tuple(adopted),
        )

    async def wait_idle(self) -> None:
        """Until no load or unload is in flight (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    # --- observe / diff -----------------------------------------------------------------
    def _diff(
        self,
        snap: FleetSnapshot,
        live: Sequence[Server],
        observed: Sequence[dict[str, LoadedModel] | BaseException],
        records: Mapping[str, ModelRecord],
        now: float,
    ) -> list[tuple[str, str]]:
        adopted: list[tuple[str, str]] = []
        live_ids = {s.id for s in live}
        for server, seen in zip(live, observed, strict=True):
            if isinstance(seen, BaseException):
                log.debug("server %s not observable this tick: %s", server.id, seen)
                continue  # keep what we believed about it
            self._loaded[server.id] = seen
            for name, lm in seen.items():
                model = self._model(name)
                if lm.last_inference_ms:
                    model.last_used = max(model.last_used, lm.last_inference_ms / 1000)
                key = (name, server.id)
                rep = self._replicas.get(key)
                if rep is None and name in records:
                    # Loaded before we knew (a restarted control plane): adopt, don't reload.
                    self._replicas[key] = _Replica(
                        ReplicaState.READY, records[name].generation, now
                    )
                    adopted.append(key)
                    log.info("replica %s on %s: (adopted) → READY", name, server.id)
                elif rep is not None and rep.state is ReplicaState.LOADING and not self._busy(key):
                    rep.state = ReplicaState.READY
            for (name, sid), rep in list(self._replicas.items()):
                if sid != server.id or name in seen or self._busy((name, sid)):
                    continue
                if rep.state is not ReplicaState.LOADING:
                    log.info(
                        "replica %s on %s: %s → gone (server lost it)", name, sid, rep.state.value
                    )
                    del self._replicas[(name, sid)]
        for (name, sid), rep in list(self._replicas.items()):
            if sid not in live_ids and not self._busy((name, sid)):
                log.info("replica %s on %s: %s → gone (server down)", name, sid, rep.state.value)
                del self._replicas[(name, sid)]
        return adopted

    def _stale_generations(self, records: Mapping[str, ModelRecord]) -> list[tuple[str, str]]:
        out = []
        for (name, sid), rep in self._replicas.items():
            record = records.get(name)
            if (
                record is not None
                and rep.state is ReplicaState.READY
                and rep.generation != record.generation
                and not self._busy((name, sid))
            ):
                out.append((name, sid))
        return out

    def _planner_snapshot(
        self, snap: FleetSnapshot, records: Mapping[str, ModelRecord], now: float
    ) -> placement.Snapshot:
        servers = tuple(
            placement.ServerView(s.id, s.capacity_bytes, s.live, s.labels) for s in snap.servers
        )
        models = []
        for name, record in records.items():
            st = self._model(name)
            policy = record.spec.policy
            if st.failed_generation != record.generation:
                st.failures, st.retry_at, st.last_error = 0, 0.0, None
            blocked = st.failures > 0 and (
                st.failures >= self._cfg.max_attempts or now < st.retry_at
            )
            fp = self._footprints.get(name)
            models.append(
                placement.ModelView(
                    name=name,
                    memory_bytes=fp.memory_bytes if fp else policy.memory_bytes,
                    min_replicas=policy.min_replicas,
                    max_replicas=policy.max_replicas,
                    wanted=1 if now < st.wanted_until else 0,
                    priority=policy.priority,
                    last_used=st.last_used,
                    blocked=blocked,
                )
            )
        current: dict[str, list[str]] = {}
        for (name, sid), rep in self._replicas.items():
            if rep.state is not ReplicaState.UNLOADING:
                current.setdefault(name, []).append(sid)
        return placement.Snapshot(
            servers=servers,
            models=tuple(models),
            # Replicas of deleted models stay in here so the planner unloads them; models
            # someone else loaded were never adopted and are left alone.
            placement={k: tuple(v) for k, v in current.items()},
            now=now,
        )

    # --- act ----------------------------------------------------------------------------
    def _busy(self, key: tuple[str, str]) -> bool:
        return key in self._tasks

    def _start(self, action: placement.Action, records: Mapping[str, ModelRecord]) -> None:
        key = (action.model, action.server)
        if self._busy(key):
            return
        server = self._snapshot.by_id(action.server)
        if server is None:
            return
        now = self._clock()
        if action.kind is placement.ActionKind.LOAD:
            record = records[action.model]
            old = self._replicas.get(key)
            self._replicas[key] = _Replica(ReplicaState.LOADING, record.generation, now)
            if old is None:
                log.info("replica %s on %s: → LOADING (%s)", action.model, server.id, action.reason)
            coro = self._load(server, record, action.reason)
        else:
            rep = self._replicas.get(key)
            if rep is not None:
                rep.state = ReplicaState.UNLOADING
            log.info("replica %s on %s: → UNLOADING (%s)", action.model, server.id, action.reason)
            coro = self._unload(server, action.model, action.reason)
        task = asyncio.create_task(coro, name=f"{action.model}@{action.server}")
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)

    def _server_sem(self, server_id: str) -> asyncio.Semaphore:
        sem = self._per_server.get(server_id)
        if sem is None:
            sem = self._per_server[server_id] = asyncio.Semaphore(self._cfg.max_loads_per_server)
        return sem

    async def _load(self, server: Server, record: ModelRecord, reason: str) -> None:
        key = (record.name, server.id)
        model = self._model(record.name)
        try:
            async with self._global, self._server_sem(server.id):
                before = await self._meter.sample(server) if self._meter else None
                files = await self._artifacts.files(record)
                self.load_calls += 1
                await self._control.load(server, record.name, record.config_json, files)
                after = await self._meter.sample(server) if self._meter else None
        except ModelLoadFailed as exc:
            self._replicas.pop(key, None)
            model.failures += 1
            model.failed_generation = record.generation
            model.last_error = exc.reason
            delay = min(
                self._cfg.backoff_max_s, self._cfg.backoff_base_s * 2 ** (model.failures - 1)
            )
            model.retry_at = self._clock() + delay * (0.5 + self._rng.random())
            log.warning(
                "model %s on %s: LOADING → FAILED (attempt %d/%d): %s",
                record.name,
                server.id,
                model.failures,
                self._cfg.max_attempts,
                exc.reason,
            )
            await self._quiet_unload(server, record.name)
            self._signal(record.name)
            return
        except (ServerUnavailable, TritonfleetError, OSError) as exc:
            self._replicas.pop(key, None)
            log.warning("replica %s on %s: LOADING → gone: %s", record.name, server.id, exc)
            self._signal(record.name)
            return
        rep = self._replicas.get(key)
        if rep is not None:
            rep.state = ReplicaState.READY
            rep.generation = record.generation
            rep.since = self._clock()
        model.failures, model.last_error, model.evicted = 0, None, False
        log.info("replica %s on %s: LOADING → READY", record.name, server.id)
        await self._record_footprint(record, server, before, after)
        self._refresh_ready_view()
        self._signal(record.name)

    async def _record_footprint(
        self,
        record: ModelRecord,
        server: Server,
        before: tuple[int, str] | None,
        after: tuple[int, str] | None,
    ) -> None:
        measured: tuple[int, str] | None = None
        try:
            loaded = (await self._control.loaded(server)).get(record.name)
        except TritonfleetError:
            loaded = None
        if loaded is not None and loaded.memory_bytes:
            measured = (loaded.memory_bytes, "triton-memory-usage")
        elif before is not None and after is not None and after[0] > before[0]:
            measured = (after[0] - before[0], after[1])
        if measured is None or record.name in self._footprints:
            return
        fp = Footprint(record.name, measured[0], measured[1], self._clock())
        self._footprints[record.name] = fp
        try:
            await self._store.put_footprint(fp)
        except TritonfleetError as exc:
            log.warning("could not store footprint of %s: %s", record.name, exc)

    async def _unload(self, server: Server, name: str, reason: str) -> None:
        key = (name, server.id)
        try:
            self.unload_calls += 1
            await self._control.unload(server, name)
        except TritonfleetError as exc:
            log.warning("unload %s on %s failed: %s", name, server.id, exc)
        self._replicas.pop(key, None)
        if "evicted" in reason:
            self._model(name).evicted = True
        log.info("replica %s on %s: UNLOADING → gone (%s)", name, server.id, reason)
        self._refresh_ready_view()
        self._signal(name)

    async def _quiet_unload(self, server: Server, name: str) -> None:
        # A failed load leaves the model UNAVAILABLE on Triton; clear it so it holds nothing.
        with contextlib.suppress(TritonfleetError):
            await self._control.unload(server, name)

    def _model(self, name: str) -> _Model:
        st = self._models.get(name)
        if st is None:
            st = self._models[name] = _Model()
        return st

    def _signal(self, name: str) -> None:
        st = self._model(name)
        st.changed.set()
        st.changed = asyncio.Event()

    def _refresh_ready_view(self) -> None:
        servers = {s.id: s for s in self._snapshot.servers if s.live}
        view: dict[str, list[Replica]] = {}
        for (name, sid), rep in self._replicas.items():
            srv = servers.get(sid)
            if rep.state is ReplicaState.READY and srv is not None:
                view.setdefault(name, []).append(
                    Replica(
                        model=name,
                        server_id=sid,
                        http_url=srv.http_url,
                        grpc_url=srv.grpc_url,
                        metrics_url=srv.metrics_url,
                        admin_header=srv.admin_header,
                        admin_key=srv.admin_key,
                    )
                )
        self._ready_view = {k: tuple(sorted(v, key=lambda r: r.server_id)) for k, v in view.items()}

    # --- ReplicaDirectory (the gateway) -------------------------------------------------
    def replicas(self, model: str) -> Sequence[Replica]:
        return self._ready_view.get(model, ())

    def routing(self, model: str) -> ModelRouting | None:
        record = self._records.get(model)
        if record is None:
            return None
        return ModelRouting(name=model, sequence=record.spec.sequence_batching is not None)

    def touch(self, model: str) -> None:
        """The gateway served `model`: it is in use (keeps it off the eviction list)."""
        st = self._model(model)
        st.last_used = self._clock()
        st.wanted_until = max(st.wanted_until, st.last_used + self._cfg.demand_ttl_s)

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        """Want `model` warm; wait until a replica is READY, it fails, or `timeout_s` passes."""
        st = self._model(model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.touch(model)
        self.wake()
        while not self.replicas(model):
            if st.failures and st.failed_generation == getattr(
                self._records.get(model), "generation", -1
            ):
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(st.changed.wait(), timeout=min(remaining, 0.5))
        return self.replicas(model)

    # --- FleetView (the control API) ----------------------------------------------------
    def model_state(self, name: str) -> ModelState:
        reps = [r for (n, _), r in self._replicas.items() if n == name]
        st = self._model(name)
        if any(r.state is ReplicaState.READY for r in reps):
            return ModelState.READY
        if any(r.state is ReplicaState.LOADING for r in reps):
            return ModelState.LOADING
        if st.last_error is not None:
            return ModelState.FAILED
        if st.evicted:
            return ModelState.EVICTED
        return ModelState.PENDING

    def model_status(self, name: str) -> dict[str, Any]:
        st = self._model(name)
        record = self._records.get(name)
        fp = self._footprints.get(name)
        return {
            "name": name,
            "state": self.model_state(name).value,
            "generation": record.generation if record else None,
            "replicas": [
                {
                    "server": sid,
                    "state": rep.state.value,
                    "generation": rep.generation,
                    "since": rep.since,
                }
                for (n, sid), rep in sorted(self._replicas.items())
                if n == name
            ],
            "last_error": st.last_error,
            "failures": st.failures,
            "retry_at": st.retry_at or None,
            "unplaced_reason": self._unplaced.get(name),
            "footprint": {
                "memory_bytes": fp.memory_bytes
                if fp
                else (record.spec.policy.memory_bytes if record else None),
                "source": fp.source if fp else "declared",
            },
            "last_used": st.last_used or None,
        }

    def counters(self) -> dict[str, float]:
        states = [self.model_state(n).value for n in self._records]
        out: dict[str, float] = {
            "tritonfleet_reconciler_loads_total": self.load_calls,
            "tritonfleet_reconciler_unloads_total": self.unload_calls,
            "tritonfleet_replicas_ready": sum(
                1 for r in self._replicas.values() if r.state is ReplicaState.READY
            ),
            "tritonfleet_servers_live": len(self._snapshot.live()),
        }
        for state in ModelState:
            out[f"tritonfleet_models_{state.value.lower()}"] = states.count(state.value)
        return out

    async def ensure_status(self, name: str, timeout_s: float) -> dict[str, Any]:
        await self.ensure(name, timeout_s)
        return self.model_status(name)

    def fleet_status(self) -> dict[str, Any]:
        out = []
        for s in self._snapshot.servers:
            models = sorted(n for (n, sid) in self._replicas if sid == s.id)
            used = sum(self._memory_of(n) for n in models)
            out.append(
                {
                    "id": s.id,
                    "health": s.health.value,
                    "http_url": s.http_url,
                    "grpc_url": s.grpc_url,
                    "capacity_bytes": s.capacity_bytes,
                    "used_bytes": used,
                    "models": [
                        {"name": n, "state": self._replicas[(n, s.id)].state.value} for n in models
                    ],
                    "labels": dict(s.labels),
                }
            )
        return {"driver": self._snapshot.driver, "servers": out, "unplaced": dict(self._unplaced)}

    def _memory_of(self, name: str) -> int:
        fp = self._footprints.get(name)
        if fp is not None:
            return fp.memory_bytes
        record = self._records.get(name)
        return record.spec.policy.memory_bytes if record else 0
