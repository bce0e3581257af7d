"""`tritonfleet gateway`: the KServe v2 gateway in a process of its own, asking a running control
plane for replicas."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING

from adapters.cli import overrides, process
from adapters.cli.core import EXIT_UNAVAILABLE, CliError
from adapters.cli.flags import gateway_opts
from adapters.settings import Settings

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = overrides.to_settings(args)
    if not settings.controlplane_url:
        raise CliError("gateway: --controlplane-url (or TRITONFLEET_CONTROLPLANE_URL) is required")
    process.configure_logging(args.verbose)
    return process.run(_gateway(settings, settings.controlplane_url))


async def _gateway(settings: Settings, control_url: str) -> int:
    from adapters.gateway.app import Gateway
    from adapters.gateway.remote import RemoteDirectory

    directory = RemoteDirectory(
        control_url, admin_key=settings.admin_key, api_token=settings.api_token
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await directory.start()
    gateway = Gateway(settings.gateway_config(), directory, admin_token=settings.api_token)
    try:
        try:
            await gateway.start()
        except OSError as exc:
            raise CliError(
                f"gateway: cannot listen on {settings.gateway_host}:{settings.gateway_http_port}/"
                f"{settings.gateway_grpc_port} ({exc.strerror}); choose other --http-port/"
                "--grpc-port",
                EXIT_UNAVAILABLE,
            ) from exc
        process.freeze_heap()
        print(
            f"gateway: KServe v2 HTTP {gateway.http_url}  gRPC {gateway.grpc_url}  "
            f"(replicas from {control_url})",
            flush=True,
        )
        await stop.wait()
    finally:
        await gateway.stop()
        await directory.stop()
    return 0


def add_gateway(sub: Subparsers) -> None:
    gw = sub.add_parser(
        "gateway", help="run the KServe v2 gateway apart, over a running control plane"
    )
    gateway_opts(gw, "")
    gw.add_argument(
        "--controlplane-url",
        default=None,
        help="the control API to ask for replicas (env TRITONFLEET_CONTROLPLANE_URL)",
    )
    gw.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    gw.set_defaults(func=cmd_gateway)
