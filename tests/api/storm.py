"""Storms: many clients changing the same models at once through the real control API.

`run_storm` fires `ops` register/update/delete/ensure calls from `clients` concurrent HTTP
clients (httpx, one connection each) at `models` model names, against `ServedApi` (real
uvicorn, app, SQLite store, registry and reconciler loop; the fleet is the in-memory FakeFleet
whose Triton control is instrumented: an emulation with a load delay, so loads overlap). Then it
lets the reconciler settle and checks, per model:

- no 5xx, no transport error: every call got a documented answer;
- acknowledgements are ordered: every accepted register/update returned a generation never
  returned before for that name, and every delete returned one of those (the one it removed);
- the final registry equals the last acknowledged operation (highest generation; a delete of
  generation g comes after the write of g);
- what the servers have loaded equals the final registry: the newest config on every replica,
  floors kept, nothing of a deleted model;
- Triton saw no load the plan did not ask for: no load of a model the reconciler already knew
  was deleted or changed when the load began (stale), no load while the same replica already
  served that exact config (redundant), no load and unload of one replica at once;
- loads in flight never exceeded `max_concurrent_loads`, nor `max_loads_per_server` per server.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controlplane.fleet import Server
from controlplane.reconciler import Reconciler, ReconcilerConfig
from tests.api.fuzzing import MiB, ServedApi
from tests.fakes import FakeFleet, FakeTritonControl
from tests.support import python_spec

OPS = ("register", "update", "delete", "ensure")
WEIGHTS = (3, 4, 2, 3)


class CountingControl(FakeTritonControl):
    """FakeTritonControl that records loads and unloads in flight and what each load saw."""

    def __init__(self, fleet: FakeFleet, load_delay_s: float) -> None:
        super().__init__(fleet, load_delay_s=load_delay_s)
        self.rec: Reconciler | None = None
        self.inflight = 0
        self.max_inflight = 0
        self.per_server: Counter[str] = Counter()
        self.max_per_server = 0
        self.busy: set[tuple[str, str]] = set()  # replicas with a load or unload under way
        self.overlaps = 0
        self.stale = 0  # loads of a model the reconciler knew deleted or changed
        self.redundant = 0  # loads of the exact config the replica already served
        self.load_calls = 0
        self.unload_calls = 0

    def _begin(self, key: tuple[str, str]) -> None:
        if key in self.busy:
            self.overlaps += 1
        self.busy.add(key)

    async def load(
        self, server: Server, model: str, config_json: str, files: Mapping[str, bytes]
    ) -> None:
        key = (model, server.id)
        self.load_calls += 1
        self._begin(key)
        record = self.rec.state.records.get(model) if self.rec else None
        if record is None or record.config_json != config_json:
            self.stale += 1
        current = self.models.get(server.id, {})
        if model in current and self.configs.get((server.id, model)) == json.loads(config_json):
            self.redundant += 1
        self.inflight += 1
        self.per_server[server.id] += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self.max_per_server = max(self.max_per_server, self.per_server[server.id])
        try:
            await super().load(server, model, config_json, files)
        finally:
            self.inflight -= 1
            self.per_server[server.id] -= 1
            self.busy.discard(key)

    async def unload(self, server: Server, model: str) -> None:
        key = (model, server.id)
        self.unload_calls += 1
        self._begin(key)
        try:
            await super().unload(server, model)
        finally:
            self.busy.discard(key)


@dataclass
class Ack:
    generation: int
    deleted: bool
    body: dict[str, Any] | None  # the spec written (None for a delete)

    @property
    def order(self) -> tuple[int, int]:
        return (self.generation, 1 if self.deleted else 0)


@dataclass
class StormReport:
    ops: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    acks: dict[str, list[Ack]] = field(default_factory=dict)
    seconds: float = 0.0
    settle_s: float = 0.0
    checks: Counter[str] = field(default_factory=Counter)
    control: dict[str, int] = field(default_factory=dict)


def _spec(name: str, rng: random.Random) -> dict[str, Any]:
    body = python_spec(name, min_replicas=rng.randint(0, 2), max_replicas=2)
    body["max_batch_size"] = rng.choice((4, 8))  # what Triton serves changes, or not
    return body


async def _client(url: str, names: list[str], n_ops: int, seed: int, report: StormReport) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for _ in range(n_ops):
            name = rng.choice(names)
            op = rng.choices(OPS, WEIGHTS)[0]
            try:
                if op == "register":
                    body = _spec(name, rng)
                    r = await http.post("/v1/models", json=body)
                elif op == "update":
                    body = _spec(name, rng)
                    r = await http.put(f"/v1/models/{name}", json=body)
                elif op == "delete":
                    body = None
                    r = await http.delete(f"/v1/models/{name}")
                else:
                    body = None
                    r = await http.post(f"/v1/models/{name}/ensure", params={"timeout_s": 0.2})
            except httpx.HTTPError as exc:
                report.errors.append(f"{op} {name}: {type(exc).__name__}: {exc}")
                continue
            report.ops += 1
            report.by_status[f"{op} {r.status_code}"] += 1
            if r.status_code >= 500 and not (op == "ensure" and r.status_code == 503):
                report.errors.append(f"{op} {name}: {r.status_code} {r.text[:300]}")
            ok = {"register": 201, "update": 200, "delete": 200}.get(op)
            if r.status_code == ok:
                gen = r.json()["generation"]
                report.acks.setdefault(name, []).append(Ack(gen, op == "delete", body))


def expected_state(acks: list[Ack]) -> Ack | None:
    """The last acknowledged operation: None when the model should not exist."""
    if not acks:
        return None
    last = max(acks, key=lambda a: a.order)
    return None if last.deleted else last


def check_acks(name: str, acks: list[Ack], report: StormReport) -> None:
    writes = [a.generation for a in acks if not a.deleted]
    deletes = [a.generation for a in acks if a.deleted]
    report.checks["ack generations unique"] += 1
    assert len(writes) == len(set(writes)), f"{name}: a generation acknowledged twice: {writes}"
    assert len(deletes) == len(set(deletes)), f"{name}: one generation deleted twice"
    report.checks["deletes name an acknowledged write"] += 1
    assert set(deletes) <= set(writes), f"{name}: deleted {deletes}, written {writes}"


async def run_storm(
    root: Path,
    *,
    ops: int,
    models: int,
    clients: int,
    seed: int = 0,
    servers: int = 4,
    load_delay_s: float = 0.05,
    config: ReconcilerConfig | None = None,
    settle_timeout_s: float = 120.0,
) -> StormReport:
    # Caps that bind: best-fit packing sends most loads to one server, so a per-server cap
    # of 2 and a fleet-wide cap of 3 are both reached in a storm.
    cfg = config or ReconcilerConfig(
        interval_s=0.05, max_concurrent_loads=3, max_loads_per_server=2
    )
    controls: list[CountingControl] = []

    def make_control(fleet: FakeFleet) -> CountingControl:
        controls.append(CountingControl(fleet, load_delay_s))
        return controls[-1]

    served = ServedApi(
        root, servers=servers, capacity_bytes=2048 * MiB, config=cfg, make_control=make_control
    ).start()
    report = StormReport()
    try:
        control = controls[0]
        control.rec = served.rec
        names = [f"m{i}" for i in range(models)]
        per_client = [ops // clients + (1 if i < ops % clients else 0) for i in range(clients)]
        start = time.monotonic()
        await asyncio.gather(
            *(
                _client(served.url, names, n, seed * 1000 + i, report)
                for i, n in enumerate(per_client)
            )
        )
        report.seconds = time.monotonic() - start
        await _check_registry(served.url, names, report)
        start = time.monotonic()
        await _settle_and_check(served, control, names, report, settle_timeout_s)
        report.settle_s = time.monotonic() - start
        report.control = {
            "load_calls": control.load_calls,
            "unload_calls": control.unload_calls,
            "max_loads_in_flight": control.max_inflight,
            "max_loads_in_flight_per_server": control.max_per_server,
            "stale_loads": control.stale,
            "redundant_loads": control.redundant,
            "overlapping_actions": control.overlaps,
        }
        report.checks["loads in flight within the caps"] += 1
        assert control.max_inflight <= cfg.max_concurrent_loads, report.control
        assert control.max_per_server <= cfg.max_loads_per_server, report.control
        report.checks["no load the plan did not ask for"] += 1
        assert control.stale == 0 and control.redundant == 0, report.control
        assert control.overlaps == 0, report.control
    finally:
        served.stop()
    return report


async def _check_registry(url: str, names: list[str], report: StormReport) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for name in names:
            acks = report.acks.get(name, [])
            check_acks(name, acks, report)
            want = expected_state(acks)
            r = await http.get(f"/v1/models/{name}")
            report.checks["registry equals the last acknowledged op"] += 1
            if want is None:
                assert r.status_code == 404, f"{name}: expected deleted, got {r.text[:200]}"
                continue
            assert r.status_code == 200, f"{name}: expected generation {want.generation}: {r.text}"
            got = r.json()
            assert got["generation"] == want.generation, (name, got["generation"], want)
            assert want.body is not None
            assert got["spec"]["max_batch_size"] == want.body["max_batch_size"]
            assert got["spec"]["policy"]["min_replicas"] == want.body["policy"]["min_replicas"]


async def _settle_and_check(
    served: ServedApi,
    control: CountingControl,
    names: list[str],
    report: StormReport,
    timeout_s: float,
) -> None:
    """Wait (on reconciler ticks, not sleeps) until the fleet serves the final registry."""
    assert served.rec is not None and served.store is not None
    rec, store = served.rec, served.store

    async def converged() -> str | None:
        await rec.wait_idle()
        records = {r.name: r for r in await store.list()}
        for server in control._fleet.servers:
            loaded = control.models.get(server.id, {})
            for name in loaded:
                if name not in records:
                    return f"deleted {name} still on {server.id}"
                if control.configs[(server.id, name)] != json.loads(records[name].config_json):
                    return f"{name} on {server.id} serves an old config"
        for name, record in records.items():
            holders = [s for s, models in control.models.items() if name in models]
            if len(holders) < record.spec.policy.min_replicas:
                return f"{name}: {len(holders)} replicas, floor {record.spec.policy.min_replicas}"
            status = rec.model_status(name)
            ready = sorted(r["server"] for r in status["replicas"] if r["state"] == "READY")
            if ready != sorted(holders):
                return f"{name}: status says {ready}, servers hold {sorted(holders)}"
        return None

    async def wait() -> None:
        deadline = time.monotonic() + timeout_s
        problem = "not checked"
        while time.monotonic() < deadline:
            await rec.wait_ticks(2, timeout_s)
            problem = await converged() or ""
            if not problem:
                return
        raise AssertionError(f"fleet did not converge in {timeout_s}s: {problem}")

    served.call(wait())
    report.checks["fleet serves the final registry"] += len(names)
