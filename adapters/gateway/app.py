"""The gateway process: both front doors, the router, the signal feed and the timeout watch.

`Gateway` starts and stops them; `tritonfleet up` runs one beside the control plane and
`tritonfleet gateway` runs one alone (adapters/cli/process.py: uvloop, heap frozen after start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters.gateway.config import GatewayConfig
from adapters.gateway.http import HttpDoor
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from controlplane.replicas import ReplicaDirectory, TenantLookup
from controlplane.tenants import hash_token

if TYPE_CHECKING:
    from adapters.gateway.grpcdoor import GrpcDoor
    from adapters.gateway.h2door import H2Door

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        directory: ReplicaDirectory,
        *,
        tenants: TenantLookup | None = None,
        admin_token: str | None = None,
        metrics_pages: Callable[[str, str], None] | None = None,
    ) -> None:
        """`metrics_pages`: called with (server id, page) for every Triton /metrics page the
        signal feed fetches (`tritonfleet up` hands them to the autopilot's capacity)."""
        self.config = config
        self._metrics_pages = metrics_pages
        self.metrics = GatewayMetrics()
        self.router = Router(
            directory,
            config,
            self.metrics,
            tenants=tenants,
            admin_token_sha256=hash_token(admin_token) if admin_token else None,
        )
        self.http = HttpDoor(
            self.router,
            self.metrics,
            max_body_bytes=config.max_body_bytes,
            connect_timeout_s=config.connect_timeout_s,
            header_timeout_s=config.header_timeout_s,
            idle_timeout_s=config.idle_timeout_s,
            max_client_connections=config.max_client_connections,
            max_pipelined_bytes=config.max_pipelined_bytes,
        )
        self._server: asyncio.Server | None = None
        self._grpc: H2Door | GrpcDoor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.http_port = 0
        self.grpc_port: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str | None:
        return f"{self.config.host}:{self.grpc_port}" if self.grpc_port is not None else None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.http.protocol,
            self.config.host,
            self.config.http_port,
            reuse_address=True,
            backlog=1024,
        )
        sock = self._server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.http_port = int(sock.getsockname()[1])
        if self.config.grpc_port is not None:
            door: H2Door | GrpcDoor
            if self.config.grpc_door == "h2":
                from adapters.gateway.h2door import H2Door

                door = H2Door(self.router, self.metrics, self.config)
            else:
                from adapters.gateway.grpcdoor import GrpcDoor

                door = GrpcDoor(self.router, self.metrics, self.config)
            self.grpc_port = await door.start(self.config.host, self.config.grpc_port)
            self._grpc = door
        self._tasks.append(loop.create_task(self.router.watch_timeouts()))
        self._tasks.append(loop.create_task(self._reap_clients()))
        from adapters.gateway.signalfeed import feed

        self._tasks.append(loop.create_task(feed(self.router, self.config, self._metrics_pages)))
        log.info(
            "gateway: HTTP %s, gRPC %s, policy %s", self.http_url, self.grpc_url, self.config.policy
        )

    async def _reap_clients(self) -> None:
        """Close slow and idle client connections: one timer for all of them."""
        cfg = self.config
        interval = min(1.0, cfg.header_timeout_s / 10, cfg.idle_timeout_s / 10)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for door in (self.http, self._grpc):
                reap = getattr(door, "reap", None)  # the grpcio door has none
                if reap is not None:
                    try:
                        reap(now)
                    except Exception:  # a bug here must never stop the reaper
                        log.exception("reaping client connections failed")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            self.http.close()
            await self._server.wait_closed()
            self._server = None
        if self._grpc is not None:
            await self._grpc.stop()
            self._grpc = None
