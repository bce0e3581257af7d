"""Shared pieces of the gateway benchmarks: a fleet with models, and the gateway as a process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from adapters.gateway.demofleet import DemoModel, load_everywhere
from adapters.localfleet import LocalFleet, LocalFleetConfig
from adapters.tritonbin import locate
from controlplane.fleet import FleetSnapshot

ADMIN_KEY = "bench-admin-key"
ROOT = Path(__file__).resolve().parents[1]


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


class ControlApiStub:
    """`GET /v1/replicas` (and a no-op ensure) for a fixed fleet, in a thread of this process.

    The gateway runs as users run it, `tritonfleet gateway --controlplane-url ...`; this stands
    in for the control plane, which has nothing to decide for a benchmark's fixed fleet.
    """

    def __init__(self, snap: FleetSnapshot, models: Iterable[str]) -> None:
        body = json.dumps(
            {
                "models": {
                    m: {
                        "sequence": False,
                        "max_inflight": None,
                        "replicas": [
                            {
                                "server_id": s.id,
                                "http_url": s.http_url,
                                "grpc_url": s.grpc_url,
                                "metrics_url": s.metrics_url,
                            }
                            for s in snap.servers
                        ],
                    }
                    for m in models
                }
            }
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply(body)

            def do_POST(self) -> None:
                self._reply(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tritonfleet_command() -> list[str]:
    """The `tritonfleet` console script of this environment (as installed for users)."""
    script = Path(sys.executable).parent / "tritonfleet"
    found = str(script) if script.exists() else shutil.which("tritonfleet")
    if found is None:
        raise RuntimeError("no `tritonfleet` console script; run `pip install -e .` first")
    return [found]


class GatewayProcess:
    """`tritonfleet gateway` over `snap`, in its own process, started with a user's flags."""

    def __init__(self, snap: FleetSnapshot, models: Iterable[str], config: dict[str, Any]) -> None:
        self.control = ControlApiStub(snap, models)
        flags = {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, **config}
        self.argv = [
            *tritonfleet_command(),
            "gateway",
            "--controlplane-url",
            self.control.url,
            *(a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.http = self.grpc = ""

    async def __aenter__(self) -> GatewayProcess:
        # This checkout's code, whichever checkout the environment was installed from.
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TRITONFLEET_ADMIN_KEY": ADMIN_KEY,
        }
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        # "gateway: KServe v2 HTTP http://h:p  gRPC h:p  (replicas from ...)"
        words = line.split()
        if words[:4] != ["gateway:", "KServe", "v2", "HTTP"]:
            self.control.close()
            raise RuntimeError(f"gateway did not start: {line!r} ({' '.join(self.argv)})")
        self.http, self.grpc = words[4].removeprefix("http://"), words[6]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait)
        self.control.close()
