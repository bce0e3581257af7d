"""Fleet-wide restart: every Triton server of a real local fleet SIGKILLed at once, under
gateway traffic, and brought back by the fleet driver.

`run_fleet_restart` starts a real `tritonfleet up` in-process (`Runtime`: local fleet of real
Triton servers, SQLite, reconciler, control API, gateway), registers `floors` models with a
warm floor of one replica and one cold model (no floor), waits for the floors, then starts
`clients` gateway clients (KServe v2 HTTP) and kills every server's process group together.
It measures:

- the peak of loads in flight (the Triton-control port is wrapped to count them), against
  `max_concurrent_loads` and `max_loads_per_server`;
- the seconds from the kill until every floor is READY again;
- what the clients saw meanwhile: answers by status, every 503's Retry-After, and the longest
  a cold request was held before its answer.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapters.runtime import Runtime
from controlplane.reconciler import ModelState
from tests.support import python_spec, up_settings

BODY = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


class LoadGauge:
    """Wraps a `TritonControl.load` to count the loads in flight, fleet-wide and per server."""

    def __init__(self, load: Callable[..., Awaitable[None]]) -> None:
        self._load = load
        self.inflight = 0
        self.peak = 0
        self.per_server: Counter[str] = Counter()
        self.peak_per_server = 0
        self.calls = 0

    async def __call__(self, server: Any, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        self.inflight += 1
        self.per_server[server.id] += 1
        self.peak = max(self.peak, self.inflight)
        self.peak_per_server = max(self.peak_per_server, self.per_server[server.id])
        try:
            await self._load(server, *args, **kwargs)
        finally:
            self.inflight -= 1
            self.per_server[server.id] -= 1


@dataclass
class RestartReport:
    servers: int
    floors: int
    max_concurrent_loads: int
    max_loads_per_server: int
    cold_hold_s: float
    first_ready_s: float = 0.0  # from start to every floor READY, the first time
    recovery_s: float = 0.0  # from the kill to every floor READY again
    peak_loads: int = 0
    peak_loads_per_server: int = 0
    loads_after_kill: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # "floor 200", "cold 503", ...
    retry_after: Counter[str] = field(default_factory=Counter)
    longest_cold_hold_s: float = 0.0
    transport_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    after_recovery: Counter[int] = field(default_factory=Counter)  # one request per floor


async def _floors_ready(rt: Runtime, names: list[str], timeout_s: float) -> None:
    """Until every floor model is READY, waiting on reconciler ticks (no sleeps)."""
    rec = rt.reconciler
    assert rec is not None
    deadline = time.monotonic() + timeout_s
    while any(rec.model_state(n) is not ModelState.READY for n in names):
        if time.monotonic() > deadline:
            states = {n: rec.model_state(n).value for n in names}
            raise AssertionError(f"floors not READY within {timeout_s}s: {states}")
        await rec.wait_ticks(1, timeout_s)


async def _client(
    url: str, models: list[str], cold: str, stop: asyncio.Event, seed: int, report: RestartReport
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=report.cold_hold_s + 30) as http:
        while not stop.is_set():
            model = rng.choice([*models, cold])
            kind = "cold" if model == cold else "floor"
            start = time.monotonic()
            try:
                r = await http.post(f"/v2/models/{model}/infer", json=BODY)
            except httpx.HTTPError as exc:
                report.transport_errors.append(f"{model}: {type(exc).__name__}: {exc}")
                continue
            held = time.monotonic() - start
            report.answers[f"{kind} {r.status_code}"] += 1
            if r.status_code == 503:
                report.retry_after[r.headers.get("retry-after", "missing")] += 1
            if kind == "cold":
                report.longest_cold_hold_s = max(report.longest_cold_hold_s, held)
            if r.status_code not in (200, 503):
                report.unexpected.append(f"{model}: {r.status_code} {r.text[:200]}")


async def run_fleet_restart(
    tmp: Path,
    *,
    servers: int = 2,
    floors: int = 3,
    clients: int = 4,
    max_concurrent_loads: int = 2,
    max_loads_per_server: int = 1,
    cold_hold_s: float = 3.0,
    timeout_s: float = 240.0,
) -> RestartReport:
    settings = up_settings(
        tmp,
        servers=servers,
        server_capacity_bytes=(floors + 2) * (64 << 20),
        max_concurrent_loads=max_concurrent_loads,
        max_loads_per_server=max_loads_per_server,
        gateway_cold_hold_s=cold_hold_s,
        gateway_retry_after_s=2,
        reconcile_interval_s=0.25,
    )
    report = RestartReport(servers, floors, max_concurrent_loads, max_loads_per_server, cold_hold_s)
    start = time.monotonic()
    rt = await Runtime(settings).start()
    try:
        assert rt.control is not None and rt.fleet is not None and rt.gateway is not None
        gauge = LoadGauge(rt.control.load)
        rt.control.load = gauge  # type: ignore[method-assign]
        names = [f"floor{i}" for i in range(floors)]
        async with httpx.AsyncClient(base_url=rt.api_url, timeout=60) as api:
            for name in names:
                r = await api.post("/v1/models", json=python_spec(name, min_replicas=1))
                assert r.status_code == 201, r.text
            r = await api.post("/v1/models", json=python_spec("cold"))
            assert r.status_code == 201, r.text
        await _floors_ready(rt, names, timeout_s)
        report.first_ready_s = time.monotonic() - start

        stop = asyncio.Event()
        url = rt.gateway.http_url
        traffic = [
            asyncio.create_task(_client(url, names, "cold", stop, i, report))
            for i in range(clients)
        ]
        try:
            loads_before = gauge.calls
            gauge.peak = gauge.peak_per_server = 0
            pids = [s.pid for s in rt.fleet.snapshot().servers]
            assert all(pids), pids
            killed = time.monotonic()
            for pid in pids:  # together: no await between the kills
                assert pid is not None
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            # The driver notices, restarts them; the reconciler reloads the floors.
            rec = rt.reconciler
            assert rec is not None
            await rec.wait_ticks(2, timeout_s)  # the deaths are seen before "ready" counts
            await _floors_ready(rt, names, timeout_s)
            report.recovery_s = time.monotonic() - killed
            report.loads_after_kill = gauge.calls - loads_before
        finally:
            stop.set()
            await asyncio.gather(*traffic)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for name in names:
                r = await http.post(f"/v2/models/{name}/infer", json=BODY)
                report.after_recovery[r.status_code] += 1
        report.peak_loads, report.peak_loads_per_server = gauge.peak, gauge.peak_per_server
    finally:
        await rt.stop()
    return report
