"""What the gateway and the control API read of the fleet, apart from the loop that writes it.

`FleetViews` is the in-process `ReplicaDirectory` (the gateway: `replicas`, `routing`, `touch`,
`ensure`) and `FleetView` (the control API: status, counters, the directory for a gateway
running apart, the autopilot's decisions). It reads `FleetState` and the `Autopilot`; the only
thing it asks of the loop is to run soon (`wake`) or to finish a tick that starts after the
call (`fresh_tick`), so a model registered a moment ago is seen.

`replicas(model)` runs on every request: it reads a view that `refresh()` rebuilds whenever the
set of READY replicas may have changed, and never computes anything itself.

`latency_json` shares that loop too: it joins rows the timeline encoded when the autopilot
measured them, and yields the document one model at a time, so a front door can give the loop
back between slices of a large answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane import fleetstate
from controlplane.autopilot import Autopilot
from controlplane.events import EventFeed
from controlplane.fleetstate import FleetState, ModelState
from controlplane.replicas import (
    DirectoryWire,
    ModelRouting,
    ModelWire,
    Replica,
    ReplicaWire,
    replica_on,
)
from controlplane.timeline import COLUMNS, encode


@dataclass(frozen=True, slots=True)
class LatencyJson:
    """The latency view as JSON text: `models` it holds (sorted), and `chunks`, the document's
    text in order (its head, one chunk per model, its end), each computed when it is reached."""

    models: tuple[str, ...]
    chunks: Iterator[str]


class FleetViews:
    def __init__(
        self,
        state: FleetState,
        autopilot: Autopilot,
        clock: Callable[[], float],
        demand_ttl_s: float,
        wake: Callable[[], None],
        fresh_tick: Callable[[float], Awaitable[None]],
    ) -> None:
        self._state = state
        self._autopilot = autopilot
        self._clock = clock
        self._demand_ttl_s = demand_ttl_s
        self._wake = wake
        self._fresh_tick = fresh_tick
        self._ready: dict[str, tuple[Replica, ...]] = {}

    def refresh(self) -> None:
        """Rebuild the ready view (the READY replicas on live servers)."""
        self._ready = {
            name: tuple(replica_on(s, name) for s in servers)
            for name, servers in self._state.ready_servers().items()
        }

    # --- ReplicaDirectory (the gateway) -------------------------------------------------
    def replicas(self, model: str) -> Sequence[Replica]:
        return self._ready.get(model, ())

    def routing(self, model: str) -> ModelRouting | None:
        record = self._state.records.get(model)
        if record is None:
            return None
        return ModelRouting(
            name=model,
            sequence=record.spec.sequence_batching is not None,
            max_queue=self._autopilot.admission(model),
            tenant=record.tenant,
        )

    def touch(self, model: str) -> None:
        """`model` is in use (served, or asked for): keep it wanted and off the eviction list."""
        if model not in self._state.records:
            return
        st = self._state.model(model)
        st.last_used = self._clock()
        st.wanted_until = max(st.wanted_until, st.last_used + self._demand_ttl_s)

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        """Want `model` warm; wait until a replica is READY, it fails, or `timeout_s` passes."""
        if not math.isfinite(timeout_s):
            return self.replicas(model)
        state = self._state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        if model not in state.records:
            # Registered a moment ago? Wait for a tick that starts after this call (one
            # already under way may have read the registry before the registration).
            await self._fresh_tick(timeout_s)
            if model not in state.records:
                return ()
        self.touch(model)
        self._wake()
        while not self.replicas(model):
            st = state.models.get(model)
            record = state.records.get(model)
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
        return self._state.model_state(name)

    def model_status(self, name: str) -> dict[str, Any]:
        status = fleetstate.model_status(self._state, name)
        status["autopilot"] = self._autopilot.status(name)
        return status

    def decisions(self, name: str) -> list[dict[str, Any]]:
        return self._autopilot.decisions(name)

    def scaling_metrics(self) -> dict[str, dict[Any, int]]:
        pilot = self._autopilot
        desired = {n: w for n in self._state.records if (w := pilot.wanted(n)) is not None}
        return {"actions": pilot.counters(), "desired": desired}

    def fleet_status(self) -> dict[str, Any]:
        return fleetstate.fleet_status(self._state)

    @property
    def events(self) -> EventFeed:
        return self._autopilot.events

    def latency_json(
        self, sees: Callable[[str], bool], since: float | None, limit: int
    ) -> LatencyJson:
        """Each registered model `sees` lets through: state, SLO targets and the autopilot's
        measurements after `since` (the newest `limit`), as rows in `columns` order; as the
        JSON text the control API sends, model by model."""
        names = tuple(name for name in sorted(self._state.records) if sees(name))
        return LatencyJson(names, self._latency_chunks(names, since, limit))

    def _latency_chunks(
        self, names: tuple[str, ...], since: float | None, limit: int
    ) -> Iterator[str]:
        pilot = self._autopilot
        head = encode(
            {
                "autopilot": pilot.enabled,
                "window_s": pilot.config.panic_window_s,
                "columns": list(COLUMNS),
                "models": {},
            }
        )
        yield head[: -len("{}}")] + "{"
        for i, name in enumerate(names):
            # One model's piece is computed in one go (no ring changes under it); a deleted
            # model reads as the state and empty timeline it now has.
            t = pilot.timeline.targets(name)
            slo = {"p95_s": t.p95_s, "p99_s": t.p99_s, "max_error_rate": t.max_error_rate}
            yield (
                f'{"," if i else ""}{encode(name)}:{{"state":'
                f"{encode(self._state.model_state(name).value)},"
                f'"slo":{encode(slo)},"points":{pilot.timeline.rows_json(name, since, limit)}}}'
            )
        yield "}}"

    def counters(self) -> dict[str, float]:
        return dict(fleetstate.counters(self._state))

    def directory(self) -> dict[str, Any]:
        wire = DirectoryWire(
            models={
                name: ModelWire(
                    sequence=record.spec.sequence_batching is not None,
                    max_inflight=self._autopilot.admission(name),
                    replicas=[
                        ReplicaWire(
                            server_id=r.server_id,
                            http_url=r.http_url,
                            grpc_url=r.grpc_url,
                            metrics_url=r.metrics_url,
                        )
                        for r in self.replicas(name)
                    ],
                    tenant=record.tenant,
                )
                for name, record in self._state.records.items()
            }
        )
        return wire.model_dump()

    async def ensure_status(self, name: str, timeout_s: float) -> dict[str, Any]:
        await self.ensure(name, timeout_s)
        return self.model_status(name)
