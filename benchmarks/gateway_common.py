"""Shared pieces of the gateway benchmarks: a fleet with models, and the gateway as a process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adapters.gateway.demofleet import DemoModel, load_everywhere
from adapters.localfleet import LocalFleet, LocalFleetConfig
from adapters.tritonbin import locate
from controlplane.fleet import FleetSnapshot

ADMIN_KEY = "bench-admin-key"


async def start_fleet(
    run_dir: Path,
    servers: int,
    models: Iterable[DemoModel],
    per_server_env: dict[int, dict[str, str]] | None = None,
) -> tuple[LocalFleet, FleetSnapshot]:
    install = locate(None, Path.home() / ".cache/tritonfleet")
    fleet = LocalFleet(
        LocalFleetConfig(
            servers=servers,
            run_dir=run_dir,
            capacity_bytes=2 << 30,
            admin_key=ADMIN_KEY,
            auto_restart=False,
            per_server_env=per_server_env or {},
        ),
        install,
    )
    snap = await fleet.start()
    try:
        await load_everywhere(snap, models)
    except BaseException:
        await fleet.stop()
        raise
    return fleet, snap


class GatewayProcess:
    """`python -m adapters.gateway` over `snap`, in its own process (as deployed)."""

    def __init__(
        self, run_dir: Path, snap: FleetSnapshot, models: Iterable[str], config: dict[str, Any]
    ) -> None:
        spec = {
            "config": {"http_port": 0, "grpc_port": 0, **config},
            "servers": [
                {k: v for k, v in asdict(s).items() if k not in ("health", "labels")}
                for s in snap.servers
            ],
            "models": {m: [s.id for s in snap.servers] for m in models},
        }
        name = f"{config.get('policy', 'default')}-{config.get('grpc_door', 'default')}"
        self.spec_path = run_dir / f"gateway-{name}.json"
        self.spec_path.write_text(json.dumps(spec))
        self.proc: subprocess.Popen[str] | None = None
        self.http = self.grpc = ""

    async def __aenter__(self) -> GatewayProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.gateway", str(self.spec_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if not line.startswith("READY"):
            raise RuntimeError(f"gateway did not start: {line!r}")
        _, http, grpc = line.split()
        self.http, self.grpc = http.removeprefix("http://"), grpc
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait)
