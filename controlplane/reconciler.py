"""The reconciler: observe → diff → plan → act, once per tick, forever.

1. **Observe** the registry and measured footprints, then the fleet (`FleetDriver.refresh`) and
   what each live server has loaded (`TritonControl.loaded`, i.e. statistics: models loaded with
   file overrides are missing from the repository index).
2. **Diff** that against what the reconciler believes: adopt models already loaded (a restarted
   control plane issues no redundant load; a loaded config that differs from the registered one
   is adopted as stale and reloaded), forget replicas whose server lost them, notice registrations
   whose generation changed. A replica whose load or unload finished after the observation was
   taken is left alone this tick, so a slow observation can never undo a fresh action. Then the
   autopilot (a pure policy) sets each model's wanted replicas.
3. **Plan** with the pure `placement.plan`; size the fleet when wanted replicas found no server.
4. **Act** through `controlplane.actuator`: loads and unloads run as background tasks under
   limits, so a slow load never stalls the loop; failures back off there.

One failing step never stops the loop; transitions are logged as `old → new`, quiet ticks are not.
This module is the loop and composes its parts; the gateway (`ReplicaDirectory`) and the control
API (`FleetView`) are answered by `controlplane.views`, to which the public methods delegate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane import autopilot as autopilot_mod
from controlplane import placement
from controlplane.actuator import Actuator, ArtifactFiles, InflightProbe, MemoryMeter
from controlplane.autopilot import Autopilot
from controlplane.configgen import served_matches
from controlplane.errors import TritonfleetError
from controlplane.events import EventKind
from controlplane.fleet import FleetDriver, FleetSnapshot, Server
from controlplane.fleetstate import FleetState, ModelState, ReplicaRecord, ReplicaState
from controlplane.replicas import ModelRouting, Replica
from controlplane.store import ModelStore
from controlplane.triton import LoadedModel, TritonControl
from controlplane.views import FleetViews, LatencyJson

log = logging.getLogger(__name__)

__all__ = [
    "ArtifactFiles",
    "InflightProbe",
    "MemoryMeter",
    "ModelState",
    "Reconciler",
    "ReconcilerConfig",
    "ReplicaState",
    "TickReport",
]


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
    # Where new replicas go; the runtime passes the user's setting (default AUTO). PACK here
    # keeps a bare Reconciler as it always was.
    placement_strategy: placement.PlacementSetting = placement.PlacementSetting.PACK


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
        quotas: Callable[[], Mapping[str, placement.QuotaView]] | None = None,
    ) -> None:
        self._fleet = fleet
        self._quotas = quotas or dict
        self._control = control
        self._store = store
        self._clock = clock
        self._cfg = config or ReconcilerConfig()
        self.autopilot = autopilot or Autopilot(None)
        self.events = self.autopilot.events  # one feed: the autopilot's, the loop's, the actuator's
        self._scaling: asyncio.Task[None] | None = None
        self.state = FleetState(FleetSnapshot(servers=(), driver=getattr(fleet, "name", "?")))
        self._wake = asyncio.Event()
        self._ticked = asyncio.Event()  # set (and replaced) at the end of every tick
        self._ticks_started = 0
        self._ticks_done = 0
        self.views = FleetViews(
            self.state, self.autopilot, clock, self._cfg.demand_ttl_s, self.wake, self._fresh_tick
        )
        self.actuator = Actuator(
            self.state,
            control,
            store,
            artifacts,
            clock,
            rng,
            self._cfg,
            on_change=self.views.refresh,
            meter=meter,
            inflight=inflight,
            tuning=self.autopilot.queue_delay,
            events=self.events,
        )

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
        self.actuator.attach_inflight(probe)

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
        candidates, orphans = self._diff(live, observed, observed_at, now)
        adopted = await self._adopt(candidates, now)
        await self._reclaim(orphans, now)
        self.actuator.reset_failures()
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
            self._announce(action, now)
            self.actuator.start(action)
        for model, server, why in reloads:
            action = placement.Action(placement.ActionKind.LOAD, model, server, why)
            self._announce(action, now, reload=True)
            self.actuator.start(action)
        self.views.refresh()
        self._ticks_done = max(self._ticks_done, this_tick)
        self._ticked.set()
        self._ticked = asyncio.Event()
        return TickReport(
            actions=result.actions,
            reloads=tuple((m, s) for m, s, _ in reloads),
            unplaced=result.unplaced,
            adopted=tuple(adopted),
        )

    def _announce(self, action: placement.Action, now: float, reload: bool = False) -> None:
        """Publish an action the loop is about to start (once: not while one is in flight)."""
        if (action.model, action.server) in self.actuator.in_flight:
            return
        if self.state.snapshot.by_id(action.server) is None:
            return
        verb = "reload" if reload else ("evict" if action.evicts else action.kind.value)
        self.events.publish(
            EventKind.PLACEMENT,
            action.model,
            f"{verb} on {action.server}: {action.reason}",
            now,
            {"action": verb, "server": action.server, "reason": action.reason},
        )

    async def _fresh_tick(self, timeout_s: float) -> None:
        """Until a tick that starts after this call has finished, or `timeout_s` passes."""
        with contextlib.suppress(TimeoutError):
            await self.wait_ticks(1, timeout_s)

    async def next_tick(self, timeout_s: float) -> None:
        """Until the next tick finishes on its own schedule (TimeoutError after `timeout_s`).
        Unlike `wait_ticks` it asks for no tick: a loop that follows the reconciler with it
        does not make it spin."""
        ticked = self._ticked
        async with asyncio.timeout(max(0.0, timeout_s)):
            await ticked.wait()

    async def wait_ticks(self, n: int, timeout_s: float = 60.0) -> None:
        """Until `n` ticks that start after this call have finished (TimeoutError after
        `timeout_s`): "nothing happened" is then a fact about the loop, not about a sleep."""
        wanted_tick = self._ticks_started + n
        async with asyncio.timeout(max(0.0, timeout_s)):
            while self._ticks_done < wanted_tick:
                self.wake()
                await self._ticked.wait()

    async def wait_idle(self) -> None:
        """Until no load or unload is in flight (tests and shutdown)."""
        await self.actuator.wait_idle()

    async def close(self) -> None:
        if self._scaling is not None:
            self._scaling.cancel()
        await self.actuator.close()  # cancels its tasks before its first await
        if self._scaling is not None:
            await asyncio.gather(self._scaling, return_exceptions=True)

    # --- observe / diff -----------------------------------------------------------------
    def _diff(
        self,
        live: Sequence[Server],
        observed: Sequence[dict[str, LoadedModel] | BaseException],
        observed_at: float,
        now: float,
    ) -> tuple[list[tuple[Server, str]], list[tuple[Server, str]]]:
        """Replicas to adopt (registered, loaded, unknown here), and orphans (loaded, unknown
        here, not registered: maybe deleted while no control plane watched)."""
        state, act = self.state, self.actuator
        candidates: list[tuple[Server, str]] = []
        orphans: list[tuple[Server, str]] = []
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
                if new and not act.untouchable(key, observed_at):
                    candidates.append((server, name))
                elif (
                    name not in state.records
                    and key not in state.replicas
                    and not act.untouchable(key, observed_at)
                ):
                    orphans.append((server, name))
            for (name, sid), rep in list(state.replicas.items()):
                key = (name, sid)
                if sid != server.id or name in seen or act.untouchable(key, observed_at):
                    continue
                log.info("replica %s on %s: %s → gone (server lost it)", name, sid, rep.state.value)
                del state.replicas[key]
        for (name, sid), rep in list(state.replicas.items()):
            key = (name, sid)
            if sid not in live_ids and key not in act.in_flight:
                log.info("replica %s on %s: %s → gone (server down)", name, sid, rep.state.value)
                del state.replicas[key]
        act.forget_settled(observed_at)
        return candidates, orphans

    async def _reclaim(self, orphans: list[tuple[Server, str]], now: float) -> None:
        """Orphans of models deleted here (the store remembers them) are taken back so the
        planner unloads them: a delete acknowledged just before a crash, or while the control
        plane was down, must not leave the model loaded for ever. Models someone else loaded
        (never registered here) are left alone."""
        if not orphans:
            return
        retired = await self._store.retired({name for _, name in orphans})
        for server, name in orphans:
            if name in retired:
                self.state.replicas[(name, server.id)] = ReplicaRecord(ReplicaState.READY, 0, now)
                log.info(
                    "replica %s on %s: (deleted model found loaded) → unloading", name, server.id
                )

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
            if record is None or (name, server.id) in self.actuator.in_flight:
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

    def _forget_deleted(self) -> None:
        """Drop runtime state of models that are neither registered nor loaded anywhere."""
        state = self.state
        held = {n for n, _ in state.replicas} | {n for n, _ in self.actuator.in_flight}
        gone = [n for n in state.models if n not in state.records and n not in held]
        for name in gone:
            state.models.pop(name).signal()
        self.actuator.forget(gone, {s.id for s in state.snapshot.servers})

    def _stale_generations(self, now: float) -> list[tuple[str, str, str]]:
        """READY replicas serving an old generation, or an old batching tuning: reload them."""
        out = []
        for (name, sid), rep in self.state.replicas.items():
            record = self.state.records.get(name)
            if (
                record is None
                or rep.state is not ReplicaState.READY
                or (name, sid) in self.actuator.in_flight
                or self.actuator.blocked(name, now)
            ):
                continue
            if rep.generation != record.generation and rep.served_key == record.served_key:
                # Only the fleet policy, SLO or autoscaling changed: Triton serves the same thing.
                log.info(
                    "replica %s on %s: generation %d → %d (no reload: same config and files)",
                    name,
                    sid,
                    rep.generation,
                    record.generation,
                )
                rep.generation = record.generation
            if rep.generation != record.generation:
                out.append((name, sid, "new generation"))
            elif rep.served_key is not None and rep.served_key != record.served_key:
                # Same generation, other content: only a store that reuses generations (one
                # from before they were kept across deletes) gets here; serve what is registered.
                out.append((name, sid, "served config differs from the registered one"))
            elif rep.tuning != self.autopilot.queue_delay(name)[0]:
                out.append((name, sid, "batching tuned by the autopilot"))
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
                    blocked=self.actuator.blocked(name, now),
                    server_labels=policy.server_labels,
                    tenant=record.tenant,
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
            quotas=self._quotas(),
            strategy=self.placement_strategy,
        )

    @property
    def placement_strategy(self) -> placement.Placement:
        """The configured strategy, AUTO resolved: pack when the fleet's bounds let the
        autopilot resize it (an empty top server is what lets it shrink), spread when they do
        not. The bounds, not whether signals are attached yet: the first plans at start run
        before the autopilot is attached, and must not spread floors onto a server it may
        later stop."""
        return self._cfg.placement_strategy.resolve(self.autopilot.bounds.elastic)

    # --- the autopilot and the fleet's size ----------------------------------------------
    async def _pilot(self, now: float) -> None:
        if not self.autopilot.enabled:
            return
        specs = {n: r.spec for n, r in self.state.records.items()}
        try:
            await self.autopilot.step(specs, self.state.ready_servers(), now)
        except Exception:  # the autopilot failing must not stop placement: last targets stand
            log.exception("autopilot step failed; keeping the last targets this tick")

    def _size_fleet(self, snap: placement.Snapshot, result: placement.Plan, now: float) -> None:
        """Grow the fleet when wanted replicas found no server; shrink it when the top is empty."""
        if not self.autopilot.enabled or (self._scaling is not None and not self._scaling.done()):
            return
        capped = result.quota_capped  # a quota, not the fleet's size, holds these back
        targets = {
            m.name: min(m.target, capped.get(m.name, m.target))
            for m in snap.models
            if not m.blocked
        }
        placed = {m: len(r) for m, r in result.placement.items()}
        short = autopilot_mod.shortfall(
            {m: t for m, t in targets.items() if m in result.unplaced}, placed
        )
        # What stands, what is in flight, and what this tick's plan is about to load.
        per_server = Counter(
            sid
            for _, sid in {
                *self.state.replicas,
                *self.actuator.in_flight,
                *((m, s) for m, held in result.placement.items() for s in held),
            }
        )
        servers = self.state.snapshot.servers
        want = self.autopilot.servers_wanted(servers, per_server, short, now)
        if want is None or want == len(servers):
            return
        log.info("fleet: servers %d → %d (%s)", len(servers), want, self.autopilot.fleet_reason)
        self.events.publish(
            EventKind.FLEET,
            None,
            f"servers {len(servers)} → {want} ({self.autopilot.fleet_reason})",
            now,
            {"from": len(servers), "to": want, "reason": self.autopilot.fleet_reason},
        )
        self.autopilot.actions["(fleet)", "grow" if want > len(servers) else "shrink"] += 1
        self._scaling = asyncio.create_task(self._scale(want), name=f"scale-fleet-{want}")

    async def _scale(self, servers: int) -> None:
        try:
            await self._fleet.scale(servers)
        except TritonfleetError as exc:
            log.warning("fleet: could not scale to %d servers: %s", servers, exc)
        self.wake()

    # --- the gateway's ReplicaDirectory and the control API's FleetView (controlplane.views)
    def replicas(self, model: str) -> Sequence[Replica]:
        return self.views.replicas(model)

    def routing(self, model: str) -> ModelRouting | None:
        return self.views.routing(model)

    def touch(self, model: str) -> None:
        self.views.touch(model)

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        return await self.views.ensure(model, timeout_s)

    def model_state(self, name: str) -> ModelState:
        return self.views.model_state(name)

    def model_status(self, name: str) -> dict[str, Any]:
        return self.views.model_status(name)

    def decisions(self, name: str) -> list[dict[str, Any]]:
        return self.views.decisions(name)

    def scaling_metrics(self) -> dict[str, dict[Any, int]]:
        return self.views.scaling_metrics()

    def fleet_status(self) -> dict[str, Any]:
        status = self.views.fleet_status()
        status["placement"] = {
            "setting": self._cfg.placement_strategy.value,
            "strategy": self.placement_strategy.value,
        }
        return status

    def counters(self) -> dict[str, float]:
        # Ticks finished: lets a test in another process wait for N ticks, not a sleep.
        return {**self.views.counters(), "tritonfleet_reconciler_ticks_total": self._ticks_done}

    def latency_json(
        self, sees: Callable[[str], bool], since: float | None, limit: int
    ) -> LatencyJson:
        return self.views.latency_json(sees, since, limit)

    def directory(self) -> dict[str, Any]:
        return self.views.directory()

    async def ensure_status(self, name: str, timeout_s: float) -> dict[str, Any]:
        return await self.views.ensure_status(name, timeout_s)
