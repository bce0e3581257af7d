"""The warm pool on three real Triton servers: floors, eviction, failover, broken models,
and a control plane SIGKILLed and restarted (SQLite keeps the registry; Triton keeps the models;
the new process adopts them without a single load call)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.artifactfiles import LocalArtifactFiles
from adapters.sqlitestore import SqliteStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonbin import TritonInstall
from adapters.tritoncontrol import GrpcTritonControl
from adapters.tritonschema import ProtobufSchema
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.reconciler import ModelState, Reconciler, ReconcilerConfig
from controlplane.registry import Registry
from controlplane.spec import ModelSpec
from tests.support import BROKEN_PY, eventually, free_port_block, python_spec, start_fleet

pytestmark = pytest.mark.triton
MiB = 1 << 20


def test_floors_eviction_failover_and_broken_model(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    async def scenario() -> None:
        # 3 servers with room for two 64 MiB replicas each; no memory meter, so the declared
        # footprints stay in force and the arithmetic below is exact.
        fleet = await start_fleet(
            triton_install,
            tmp_path / "fleet",
            servers=3,
            capacity_bytes=150 * MiB,
            auto_restart=False,
        )
        store = await SqliteStore(tmp_path / "db.sqlite").open()
        registry = Registry(
            store, Renderer(ProtobufSchema(), TemplateFiles()), ArtifactPolicy(None), clock
        )
        control = GrpcTritonControl()
        rec = Reconciler(
            fleet,
            control,
            store,
            LocalArtifactFiles(ArtifactPolicy(None)),
            clock=clock,
            rng=random.Random(1),
            config=ReconcilerConfig(interval_s=0.2, demand_ttl_s=60),
        )
        registry.subscribe(lambda _n: asyncio.sleep(0, rec.wake()))
        loop_task = asyncio.create_task(rec.run())
        try:
            for name in ("f1", "f2", "f3"):
                await registry.register(ModelSpec.model_validate(python_spec(name, min_replicas=1)))
            await eventually(
                lambda: all(rec.model_state(n) is ModelState.READY for n in ("f1", "f2", "f3")), 60
            )

            # Fill the remaining three slots with on-demand models, oldest first.
            for name in ("c1", "c2", "c3"):
                await registry.register(ModelSpec.model_validate(python_spec(name)))
                assert await rec.ensure(name, timeout_s=60), rec.model_status(name)
                offset[0] += 1  # the next one is used later (fake time): c1 is the oldest
            used = sum(s["used_bytes"] for s in rec.fleet_status()["servers"])
            assert used == 6 * 64 * MiB

            # Their demand expires; they stay warm (nothing needs room)...
            offset[0] += 120
            await rec.wait_ticks(3)
            assert all(rec.model_state(n) is ModelState.READY for n in ("c1", "c2", "c3"))
            # ...until a hot model needs room: the least recently used idle one goes.
            await registry.register(ModelSpec.model_validate(python_spec("hot")))
            assert await rec.ensure("hot", timeout_s=60), rec.model_status("hot")
            assert rec.model_state("c1") is ModelState.EVICTED
            assert all(
                rec.model_state(n) is ModelState.READY for n in ("c2", "c3", "f1", "f2", "f3")
            )

            # SIGKILL the server holding f1: f1 is READY on another server within seconds.
            victim = rec.model_status("f1")["replicas"][0]["server"]
            os.killpg(fleet.snapshot().by_id(victim).pid, signal.SIGKILL)
            took = await eventually(
                lambda: any(
                    r["state"] == "READY" and r["server"] != victim
                    for r in rec.model_status("f1")["replicas"]
                ),
                30,
            )
            print(f"\nf1 READY on another server {took:.2f}s after SIGKILL of {victim}")
            assert took < 15
            for name in ("f2", "f3"):
                await eventually(lambda n=name: rec.model_state(n) is ModelState.READY, 30)

            # A broken model: FAILED with Triton's reason, and no retry storm.
            await registry.register(
                ModelSpec.model_validate(python_spec("broken", source=BROKEN_PY, min_replicas=1))
            )
            await eventually(lambda: rec.model_state("broken") is ModelState.FAILED, 60)
            status = rec.model_status("broken")
            assert "this_module_does_not_exist_anywhere" in status["last_error"]
            attempts = rec.load_calls
            await rec.wait_ticks(10)
            assert rec.load_calls == attempts
        finally:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
            await rec.close()
            await control.close()
            await fleet.stop()
            await store.close()

    asyncio.run(scenario())


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def test_control_plane_sigkill_keeps_registry_and_adopts_loaded_models(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    base = free_port_block(9)

    async def scenario() -> None:
        fleet = await start_fleet(
            triton_install, tmp_path / "fleet", servers=3, base_port=base, admin_key="k"
        )
        # The servers as an operator describes servers they run: one YAML entry each.
        fleet_yaml = tmp_path / "fleet.yaml"
        fleet_yaml.write_text(
            "servers:\n"
            + "".join(
                f"  - {{url: '{s.http_url}', admin_key: k, capacity_bytes: {1 << 30}}}\n"
                for s in fleet.snapshot().servers
            )
        )
        api_port = free_port_block(1)
        api = f"http://127.0.0.1:{api_port}"
        cmd = [
            sys.executable,
            "-m",
            "adapters.cli",
            "controlplane",
            "--fleet",
            "static",
            "--fleet-config",
            str(fleet_yaml),
            "--data-dir",
            str(tmp_path / "cp"),
            "--port",
            str(api_port),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        log = open(tmp_path / "cp.log", "ab")  # noqa: SIM115 - closed in finally

        def launch() -> subprocess.Popen[bytes]:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

        async def ready(client: httpx.AsyncClient) -> bool:
            try:
                return (await client.get(f"{api}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        proc = launch()
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                await eventually(lambda: ready(client), 60)
                for name, floor in (("a", 2), ("b", 1)):
                    r = await client.post(
                        f"{api}/v1/models",
                        json=python_spec(name, min_replicas=floor, max_replicas=2),
                    )
                    assert r.status_code == 201, r.text

                async def all_ready() -> bool:
                    sa = (await client.get(f"{api}/v1/models/a/status")).json()
                    sb = (await client.get(f"{api}/v1/models/b/status")).json()
                    return [r["state"] for r in sa["replicas"]] == ["READY"] * 2 and sb[
                        "state"
                    ] == "READY"

                await eventually(all_ready, 60)
                loads_before = _metric(
                    (await client.get(f"{api}/metrics")).text, "tritonfleet_reconciler_loads_total"
                )
                assert loads_before == 3

                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc = launch()
                await eventually(lambda: ready(client), 60)
                await eventually(all_ready, 30)

                async def ticks() -> float:
                    text = (await client.get(f"{api}/metrics")).text
                    return _metric(text, "tritonfleet_reconciler_ticks_total")

                # Three more ticks of the new process: any redundant load would have happened.
                seen = await ticks()

                async def three_more() -> bool:
                    return await ticks() >= seen + 3

                await eventually(three_more, 30)
                names = [m["name"] for m in (await client.get(f"{api}/v1/models")).json()["models"]]
                assert names == ["a", "b"]  # registrations survived the SIGKILL (SQLite, WAL, FULL)
                metrics = (await client.get(f"{api}/metrics")).text
                assert _metric(metrics, "tritonfleet_reconciler_loads_total") == 0
                assert _metric(metrics, "tritonfleet_models_ready") == 2
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            await fleet.stop()

    asyncio.run(scenario())
