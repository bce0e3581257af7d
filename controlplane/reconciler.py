"""The reconciler: observe → diff → plan → act, once per tick, forever.

1. **Observe** the registry and measured footprints, then the fleet (`FleetDriver.refresh`) and
   what each live server has loaded (`TritonControl.loaded`, i.e. statistics: models loaded with
   file overrides are missing from the repository index).
2. **Diff** that against what the reconciler believes: adopt models already loaded (a restarted
   control plane issues no redundant load; a loaded config that differs from the registered one
   is adopted as stale and reloaded), forget replicas whose server lost them, notice registrations
   whose generation changed. A replica whose load or unload finished after the observation was
   taken is left alone this tick, so a slow observation can never undo a fresh action.
3. **Plan** with the pure `placement.plan`.
4. **Act**: loads and unloads run as background tasks under a fleet-wide and a per-server limit,
   so a slow load never stalls the loop. A reload keeps the old generation serving until the new
   one is READY. A failed load marks the model FAILED with Triton's reason and backs off
   (exponential, jittered, bounded attempts); an unreachable server backs off too: no storms.

One failing step never stops the loop; transitions are logged as `old → new`, quiet ticks are not.
The reconciler also answers the control API (`FleetView`) and the gateway (`ReplicaDirectory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane import autopilot as autopilot_mod
from controlplane import fleetstate, placement
from controlplane.autopilot import Autopilot
from controlplane.configgen import served_matches
from controlplane.errors import ModelLoadFailed, TritonfleetError
from controlplane.fleet import FleetDriver, FleetSnapshot, Server
from controlplane.fleetstate import FleetState, ModelState, ReplicaRecord, ReplicaState
from controlplane.replicas import ModelRouting, Replica, replica_on
from controlplane.store import Footprint, ModelRecord, ModelStore
from controlplane.triton import LoadedModel, TritonControl

log = logging.getLogger(__name__)

__all__ = ["ModelState", "Reconciler", "ReconcilerConfig", "ReplicaState", "TickReport"]


class ArtifactFiles(Protocol):
    """Reads a registered model's files (inline, or from an allowed local path)."""

    async def files(self, record: ModelRecord) -> dict[str, bytes]: ...


class InflightProbe(Protocol):
    """Requests in flight to one replica through the gateway; None when it cannot tell."""

    def inflight(self, model: str, server_id: str) -> int | None: ...


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
    drain_grace_s: float = 1.0  # scale-in: out of routing at least this long before unloading
    drain_timeout_s: float = 30.0  # ... and at most this long waiting for requests in flight


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
        config: ReconcilerConfig | None = None,
        meter: MemoryMeter | None = None,
        autopilot: Autopilot | None = None,
        inflight: InflightProbe | None = None,
    ) -> None:
        self._fleet = fleet
        self._control = control
        self._store = store
        self._artifacts = artifacts
        self._clock = clock
        self._rng = rng
        self._cfg = config or ReconcilerConfig()
        self._meter = meter
        self.autopilot = autopilot or Autopilot(None)
        self._inflight = inflight
        self._scaling: asyncio.Task[None] | None = None
        self.state = FleetState(FleetSnapshot(servers=(), driver=getattr(fleet, "name", "?")))
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}  # (model, server) in flight
        self._settled: dict[tuple[str, str], float] = {}  # loop time each action finished
        self._hold_until: dict[str, float] = {}  # transient failures: no new load before
        self._background: set[asyncio.Task[None]] = set()
        self._global = asyncio.Semaphore(self._cfg.max_concurrent_loads)
        self._per_server: dict[str, asyncio.Semaphore] = {}
        self._wake = asyncio.Event()
        self._ticked = asyncio.Event()  # set (and replaced) at the end of every tick
        self._ticks_started = 0
        self._ticks_done = 0
        self._ready_view: dict[str, tuple[Replica, ...]] = {}

    @property
    def load_calls(self) -> int:
        return self.state.load_calls

    @property
    def unload_calls(self) -> int:
        return self.state.unload_calls

    # --- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failing step never stops the loop
                log.exception("reconcile tick failed; retrying next tick")
            # asyncio.timeout, not wait_for: on 3.11 a cancel that lands as wait_for times out
            # is swallowed (CPython gh-86296), and this loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.interval_s):
                    await self._wake.wait()
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def attach_inflight(self, probe: InflightProbe) -> None:
        """Drains wait for the requests `probe` sees in flight (the in-process gateway)."""
        self._inflight = probe

    async def tick(self) -> TickReport:
        self._ticks_started += 1
        this_tick = self._ticks_started
        state = self.state
        # 1. Observe: the registry first, then the servers, so the gap between reading a
        #    server and acting on it is as short as possible.
        records = {r.name: r for r in await self._store.list()}
        footprints = await self._store.footprints()
        snap = await self._fleet.refresh()
        live = snap.live()
        observed_at = asyncio.get_running_loop().time()
        observed = await asyncio.gather(
            *(self._control.loaded(s) for s in live), return_exceptions=True
        )
        state.snapshot, state.records, state.footprints = snap, records, footprints
        now = self._clock()

        # 2. Diff.
        candidates = self._diff(live, observed, observed_at, now)
        adopted = await self._adopt(candidates, now)
        self._reset_failures()
        self._forget_deleted()
        reloads = self._stale_generations(now)
        await self._pilot(now)

        # 3. Plan.
        planned = self._planner_snapshot(now)
        result = placement.plan(planned)
        state.unplaced = dict(result.unplaced)
        self._size_fleet(planned, result, now)

        # 4. Act.
        for action in result.actions:
            self._start(action)
        for model, server in reloads:
            self._start(
                placement.Action(placement.ActionKind.LOAD, model, server, "new generation")
            )
        self._refresh_ready_view()
        self._ticks_done = max(self._ticks_done, this_tick)
        self._ticked.set()
        self._ticked = asyncio.Event()
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
        tasks = [*self._tasks.values(), *self._background]
        if self._scaling is not None:
            tasks.append(self._scaling)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- observe / diff -----------------------------------------------------------------
    def _untouchable(self, key: tuple[str, str], observed_at: float) -> bool:
        """In flight, or finished after the observation: the observation is stale for it."""
        return key in self._tasks or self._settled.get(key, -math.inf) >= observed_at

    def _diff(
        self,
        live: Sequence[Server],
        observed: Sequence[dict[str, LoadedModel] | BaseException],
        observed_at: float,
        now: float,
    ) -> list[tuple[Server, str]]:
        state = self.state
        candidates: list[tuple[Server, str]] = []
        live_ids = {s.id for s in live}
        for server, seen in zip(live, observed, strict=True):
            if isinstance(seen, BaseException):
                log.debug("server %s not observable this tick: %s", server.id, seen)
                continue  # keep what we believed about it
            for name, lm in seen.items():
                if lm.last_inference_ms and name in state.records:
                    st = state.model(name)
                    st.last_used = max(st.last_used, lm.last_inference_ms / 1000)
                key = (name, server.id)
                new = key not in state.replicas and name in state.records
                if new and not self._untouchable(key, observed_at):
                    candidates.append((server, name))
            for (name, sid), rep in list(state.replicas.items()):
                key = (name, sid)
                if sid != server.id or name in seen or self._untouchable(key, observed_at):
                    continue
                log.info("replica %s on %s: %s → gone (server lost it)", name, sid, rep.state.value)
                del state.replicas[key]
        for (name, sid), rep in list(state.replicas.items()):
            key = (name, sid)
            if sid not in live_ids and key not in self._tasks:
                log.info("replica %s on %s: %s → gone (server down)", name, sid, rep.state.value)
                del state.replicas[key]
        for key in [k for k, t in self._settled.items() if t < observed_at]:
            del self._settled[key]  # older than any future observation: no longer needed
        return candidates

    async def _adopt(
        self, candidates: list[tuple[Server, str]], now: float
    ) -> list[tuple[str, str]]:
        """Adopt models a server already has; a config that differs is adopted as stale."""
        if not candidates:
            return []
        served = await asyncio.gather(
            *(self._control.config(server, name) for server, name in candidates),
            return_exceptions=True,
        )
        adopted = []
        for (server, name), cfg in zip(candidates, served, strict=True):
            record = self.state.records.get(name)
            if record is None or (server.id, name) in self._tasks:
                continue
            matches = isinstance(cfg, Mapping) and served_matches(
                json.loads(record.config_json), cfg
            )
            generation = record.generation if matches else 0
            self.state.replicas[(name, server.id)] = ReplicaRecord(
                ReplicaState.READY, generation, now
            )
            adopted.append((name, server.id))
            log.info(
                "replica %s on %s: (adopted) → READY%s",
                name,
                server.id,
                "" if matches else " with a different config: will reload",
            )
        return adopted

    def _reset_failures(self) -> None:
        """A new generation (the user changed the spec) starts with a clean slate."""
        for name, record in self.state.records.items():
            st = self.state.model(name)
            if st.failures and st.failed_generation != record.generation:
                st.failures, st.retry_at, st.last_error = 0, 0.0, None

    def _forget_deleted(self) -> None:
        """Drop runtime state of models that are neither registered nor loaded anywhere."""
        held = {n for n, _ in self.state.replicas} | {n for n, _ in self._tasks}
        for name in list(self.state.models):
            if name not in self.state.records and name not in held:
                self.state.models.pop(name).signal()
                self._hold_until.pop(name, None)
        known = {s.id for s in self.state.snapshot.servers}
        for sid in list(self._per_server):
            if sid not in known and not any(s == sid for _, s in self._tasks):
                del self._per_server[sid]

    def _blocked(self, name: str, now: float) -> bool:
        st = self.state.model(name)
        if now < self._hold_until.get(name, 0.0):
            return True
        return st.failures > 0 and (st.failures >= self._cfg.max_attempts or now < st.retry_at)

    def _stale_generations(self, now: float) -> list[tuple[str, str]]:
        out = []
        for (name, sid), rep in self.state.replicas.items():
            record = self.state.records.get(name)
            if (
                record is not None
                and rep.state is ReplicaState.READY
                and rep.generation != record.generation
                and (name, sid) not in self._tasks
                and not self._blocked(name, now)
            ):
                out.append((name, sid))
        return out

    def _planner_snapshot(self, now: float) -> placement.Snapshot:
        state = self.state
        servers = tuple(
            placement.ServerView(s.id, s.capacity_bytes, s.live, s.labels)
            for s in state.snapshot.servers
        )
        models = []
        for name, record in state.records.items():
            st = state.model(name)
            policy = record.spec.policy
            demand = 1 if now < st.wanted_until else 0
            load = self.autopilot.wanted(name)
            models.append(
                placement.ModelView(
                    name=name,
                    memory_bytes=state.memory_of(name),
                    min_replicas=policy.min_replicas,
                    max_replicas=policy.max_replicas,
                    wanted=demand if load is None else max(demand, load),
                    shed_surplus=load is not None,
                    priority=policy.priority,
                    last_used=st.last_used,
                    blocked=self._blocked(name, now),
                    server_labels=policy.server_labels,
                )
            )
        current: dict[str, list[str]] = {}
        for (name, sid), rep in state.replicas.items():
            if rep.state is not ReplicaState.UNLOADING:
                current.setdefault(name, []).append(sid)
        # Replicas of deleted models stay in here so the planner unloads them; models someone
        # else loaded were never adopted and are left alone.
        return placement.Snapshot(
            servers=servers,
            models=tuple(models),
            placement={k: tuple(v) for k, v in current.items()},
            now=now,
        )

    # --- the autopilot and the fleet's size ----------------------------------------------
    def _ready_servers(self) -> dict[str, list[Server]]:
        servers = {s.id: s for s in self.state.snapshot.servers if s.live}
        out: dict[str, list[Server]] = {}
        for (name, sid), rep in sorted(self.state.replicas.items()):
            if rep.state is ReplicaState.READY and sid in servers:
                out.setdefault(name, []).append(servers[sid])
        return out

    async def _pilot(self, now: float) -> None:
        if not self.autopilot.enabled:
            return
        specs = {n: r.spec for n, r in self.state.records.items()}
        await self.autopilot.step(specs, self._ready_servers(), now)

    def _size_fleet(self, snap: placement.Snapshot, result: placement.Plan, now: float) -> None:
        """Grow the fleet when wanted replicas found no server; shrink it when the top is empty."""
        if not self.autopilot.enabled or (self._scaling is not None and not self._scaling.done()):
            return
        targets = {m.name: m.target for m in snap.models if not m.blocked}
        placed = {m: len(r) for m, r in result.placement.items()}
        short = autopilot_mod.shortfall(
            {m: t for m, t in targets.items() if m in result.unplaced}, placed
        )
        per_server: dict[str, int] = {}
        for _, sid in self.state.replicas:
            per_server[sid] = per_server.get(sid, 0) + 1
        for _, sid in self._tasks:
            per_server[sid] = per_server.get(sid, 0) + 1
        servers = self.state.snapshot.servers
        want = self.autopilot.servers_wanted(servers, per_server, short, now)
        if want is None or want == len(servers):
            return
        log.info("fleet: servers %d → %d (%s)", len(servers), want, self.autopilot.fleet_reason)
        self.autopilot.actions["(fleet)", "grow" if want > len(servers) else "shrink"] += 1
        self._scaling = asyncio.create_task(self._scale(want), name=f"scale-fleet-{want}")

    async def _scale(self, servers: int) -> None:
        try:
            await self._fleet.scale(servers)
        except TritonfleetError as exc:
            log.warning("fleet: could not scale to %d servers: %s", servers, exc)
        self.wake()

    # --- act ----------------------------------------------------------------------------
    def _start(self, action: placement.Action) -> None:
        key = (action.model, action.server)
        server = self.state.snapshot.by_id(action.server)
        if key in self._tasks or server is None:
            return
        now = self._clock()
        coro: Any
        if action.kind is placement.ActionKind.LOAD:
            record = self.state.records[action.model]
            rep = self.state.replicas.get(key)
            if rep is not None and rep.state is ReplicaState.READY:
                rep.pending_generation = record.generation  # reload: the old one keeps serving
                log.info(
                    "replica %s on %s: READY → reloading generation %d",
                    action.model,
                    server.id,
                    record.generation,
                )
            else:
                self.state.replicas[key] = ReplicaRecord(
                    ReplicaState.LOADING, record.generation, now
                )
                log.info("replica %s on %s: → LOADING (%s)", action.model, server.id, action.reason)
            coro = self._load(server, record)
        else:
            rep = self.state.replicas.get(key)
            if rep is not None:
                rep.state = ReplicaState.UNLOADING
            log.info("replica %s on %s: → UNLOADING (%s)", action.model, server.id, action.reason)
            coro = self._unload(server, action.model, action.evicts, action.drain)
        task = asyncio.create_task(coro, name=f"{action.model}@{action.server}")
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
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

    async def _load(self, server: Server, record: ModelRecord) -> None:
        key = (record.name, server.id)
        st = self.state.model(record.name)
        try:
            async with self._global, self._server_sem(server.id):
                before = await self._meter.sample(server) if self._meter else None
                files = await self._artifacts.files(record)
                self.state.load_calls += 1
                await self._control.load(server, record.name, record.config_json, files)
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
            self._settle_failed_load(server, record.name, key)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # unreachable server, unreadable artifact, anything else
            self._hold_until[record.name] = self._clock() + self._backoff(1)
            log.warning("replica %s on %s: load did not complete: %s", record.name, server.id, exc)
            self._settle_failed_load(server, record.name, key)
            return
        rep = self.state.replicas.get(key)
        if rep is not None:
            rep.state, rep.generation, rep.pending_generation = (
                ReplicaState.READY,
                record.generation,
                None,
            )
            rep.since = self._clock()
        st.failures, st.last_error, st.evicted = 0, None, False
        self._hold_until.pop(record.name, None)
        log.info("replica %s on %s: LOADING → READY", record.name, server.id)
        self._refresh_ready_view()
        st.signal()
        await self._record_footprint(record, server, before, after)

    def _settle_failed_load(self, server: Server, name: str, key: tuple[str, str]) -> None:
        rep = self.state.replicas.get(key)
        if rep is not None and rep.pending_generation is not None:
            rep.pending_generation = None  # a failed reload: the old generation keeps serving
        else:
            self.state.replicas.pop(key, None)
            # A failed first load leaves the model UNAVAILABLE on Triton; clear it (best effort).
            task = asyncio.get_running_loop().create_task(self._quiet_unload(server, name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.state.model(name).signal()

    async def _record_footprint(
        self,
        record: ModelRecord,
        server: Server,
        before: tuple[int, str] | None,
        after: tuple[int, str] | None,
    ) -> None:
        known = self.state.footprints.get(record.name)
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
                self.state.footprints[record.name] = fp
        except TritonfleetError as exc:
            log.warning("could not store footprint of %s: %s", record.name, exc)

    async def _drain(self, server: Server, name: str) -> None:
        """Out of routing first; then wait for the requests in flight to it to finish."""
        self._refresh_ready_view()
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
            self.state.unload_calls += 1
            await self._control.unload(server, name)
        except TritonfleetError as exc:
            log.warning("unload %s on %s failed: %s", name, server.id, exc)
        self.state.replicas.pop(key, None)
        st = self.state.model(name)
        if evicted:
            st.evicted = True
        log.info(
            "replica %s on %s: UNLOADING → gone%s", name, server.id, " (evicted)" if evicted else ""
        )
        self._refresh_ready_view()
        st.signal()

    async def _quiet_unload(self, server: Server, name: str) -> None:
        with contextlib.suppress(TritonfleetError):
            await self._control.unload(server, name)

    def _refresh_ready_view(self) -> None:
        servers = {s.id: s for s in self.state.snapshot.servers if s.live}
        view: dict[str, list[Replica]] = {}
        for (name, sid), rep in self.state.replicas.items():
            srv = servers.get(sid)
            if rep.state is ReplicaState.READY and srv is not None:
                view.setdefault(name, []).append(replica_on(srv, name))
        self._ready_view = {k: tuple(sorted(v, key=lambda r: r.server_id)) for k, v in view.items()}

    # --- ReplicaDirectory (the gateway) -------------------------------------------------
    def replicas(self, model: str) -> Sequence[Replica]:
        return self._ready_view.get(model, ())

    def routing(self, model: str) -> ModelRouting | None:
        record = self.state.records.get(model)
        if record is None:
            return None
        return ModelRouting(
            name=model,
            sequence=record.spec.sequence_batching is not None,
            max_queue=self.autopilot.admission(model),
        )

    def touch(self, model: str) -> None:
        """`model` is in use (served, or asked for): keep it wanted and off the eviction list."""
        if model not in self.state.records:
            return
        st = self.state.model(model)
        st.last_used = self._clock()
        st.wanted_until = max(st.wanted_until, st.last_used + self._cfg.demand_ttl_s)

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        """Want `model` warm; wait until a replica is READY, it fails, or `timeout_s` passes."""
        if not math.isfinite(timeout_s):
            return self.replicas(model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        if model not in self.state.records:
            # Registered a moment ago? Wait for a tick that starts after this call (one
            # already under way may have read the registry before the registration).
            wanted_tick = self._ticks_started + 1
            self.wake()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout_s)):
                    while self._ticks_done < wanted_tick:
                        await self._ticked.wait()
            if model not in self.state.records:
                return ()
        self.touch(model)
        self.wake()
        while not self.replicas(model):
            st = self.state.models.get(model)
            record = self.state.records.get(model)
            if st is None or record is None:
                break  # deleted meanwhile
            if st.failures and st.failed_generation == record.generation:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await st.changed.wait()
        return self.replicas(model)

    # --- FleetView (the control API) ----------------------------------------------------
    def model_state(self, name: str) -> ModelState:
        return self.state.model_state(name)

    def model_status(self, name: str) -> dict[str, Any]:
        status = fleetstate.model_status(self.state, name)
        status["autopilot"] = self.autopilot.status(name)
        return status

    def decisions(self, name: str) -> list[dict[str, Any]]:
        return self.autopilot.decisions(name)

    def scaling_metrics(self) -> dict[str, dict[Any, int]]:
        desired = {n: w for n in self.state.records if (w := self.autopilot.wanted(n)) is not None}
        return {"actions": self.autopilot.counters(), "desired": desired}

    def fleet_status(self) -> dict[str, Any]:
        return fleetstate.fleet_status(self.state)

    def counters(self) -> dict[str, float]:
        return dict(fleetstate.counters(self.state))

    def directory(self) -> dict[str, Any]:
        # No admin keys here: a gateway holds its own.
        return {
            "models": {
                name: {
                    "sequence": record.spec.sequence_batching is not None,
                    "max_inflight": self.autopilot.admission(name),
                    "replicas": [
                        {
                            "server_id": r.server_id,
                            "http_url": r.http_url,
                            "grpc_url": r.grpc_url,
                            "metrics_url": r.metrics_url,
                        }
                        for r in self.replicas(name)
                    ],
                }
                for name, record in self.state.records.items()
            }
        }

    async def ensure_status(self, name: str, timeout_s: float) -> dict[str, Any]:
        await self.ensure(name, timeout_s)
        return self.model_status(name)
