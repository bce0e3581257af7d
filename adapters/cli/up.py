"""`tritonfleet up` (a local fleet, the control API, the gateway and the examples, all in this
process) and `tritonfleet controlplane` (the control plane alone, over an existing fleet)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters import specfile
from adapters.cli import overrides, process
from adapters.cli.flags import fleet_opts, gateway_opts
from adapters.settings import Settings

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers

STOP_TIMEOUT_S = 30.0  # a graceful stop of `up` never takes longer


async def _up(settings: Settings, ready_file: str | None) -> int:
    from adapters.runtime import Runtime, examples_dir
    from controlplane.spec import ModelSpec

    runtime = Runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()  # the first Ctrl-C/SIGTERM: a graceful stop, bounded in time
            return
        print("second signal: stopping now", file=sys.stderr, flush=True)
        kill_now(runtime)
        os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await runtime.start()
        assert runtime.registry is not None and runtime.fleet is not None
        if runtime.settings.register_examples:
            existing = {r.name for r in await runtime.registry.list()}
            for spec_path in sorted(examples_dir().glob("*/spec.yaml")):
                spec = ModelSpec.model_validate(specfile.load(spec_path))
                if spec.name not in existing:
                    await runtime.registry.register(spec)
        snap = runtime.fleet.snapshot()
        gw = runtime.gateway
        print("tritonfleet is up")
        print(f"  control API   {runtime.api_url}   (docs: {runtime.api_url}/docs)")
        if runtime.settings.ui_enabled:
            print(f"  dashboard     {runtime.api_url}/ui/")
        if gw is not None:
            print(f"  gateway       KServe v2 HTTP {gw.http_url}   gRPC {gw.grpc_url}")
        for s in snap.servers:
            print(
                f"  triton {s.id:<8} http {s.http_url}  grpc {s.grpc_url}  metrics {s.metrics_url}"
            )
        print(f"  data          {runtime.settings.data_dir.resolve()}")
        print(
            "  try: tritonfleet fleet status"
            + ("" if runtime.api_url == "http://127.0.0.1:8080" else f" --api {runtime.api_url}")
        )
        print("press Ctrl-C to stop", flush=True)
        process.freeze_heap()
        if ready_file:
            Path(ready_file).write_text(
                json.dumps(
                    {
                        "api_url": runtime.api_url,
                        "gateway_http_url": gw.http_url if gw else None,
                        "gateway_grpc_url": gw.grpc_url if gw else None,
                    }
                )
            )
        await stop.wait()
        print("stopping… (Ctrl-C again to stop at once)", flush=True)
    finally:
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await runtime.stop()
        except TimeoutError:
            print(f"not stopped within {STOP_TIMEOUT_S:.0f}s: stopping now", file=sys.stderr)
            kill_now(runtime)
            return 1
    return 0


def kill_now(runtime: Any) -> None:
    """SIGKILL the local fleet's servers and stubs (unless they are kept on purpose)."""
    kill = getattr(runtime.fleet, "kill_now", None)
    if kill is not None:
        kill()


def cmd_up(args: argparse.Namespace) -> int:
    settings = overrides.to_settings(args)
    process.configure_logging(args.verbose)
    return process.run(_up(settings, args.ready_file))


def add_up(sub: Subparsers) -> None:
    up = sub.add_parser("up", help="start a local fleet, the control API and the examples")
    fleet_opts(up)
    up.add_argument("--api-host", default=None, help="control API bind address (127.0.0.1)")
    up.add_argument("--api-port", type=int, default=None, help="control API port (8080)")
    up.add_argument("--no-examples", action="store_true", help="do not register the example models")
    up.add_argument("--no-gateway", action="store_true", help="do not start the gateway")
    gateway_opts(up, "gateway-")
    up.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)


def add_controlplane(sub: Subparsers) -> None:
    cp = sub.add_parser(
        "controlplane",
        help="run the control plane against an existing fleet (static or kubernetes); "
        "no example models",
    )
    fleet_opts(cp)
    cp.add_argument(
        "--host", dest="api_host", default=None, help="control API bind address (127.0.0.1)"
    )
    cp.add_argument(
        "--port", dest="api_port", type=int, default=None, help="control API port (8080)"
    )
    cp.set_defaults(func=cmd_up, no_examples=True, ready_file=None, no_gateway=True)
