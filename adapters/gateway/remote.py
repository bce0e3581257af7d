"""A `ReplicaDirectory` over the control API, for a gateway that runs apart from the control
plane (the Helm chart's gateway Deployment).

It polls `GET /v1/replicas` every `interval_s` and answers `replicas()`/`routing()` from that
snapshot (no I/O on the request path); `ensure()` asks `POST /v1/models/{m}/ensure` and polls
again. If the control plane is unreachable, the last snapshot keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import httpx
from pydantic import ValidationError

from controlplane.replicas import DirectoryWire, ModelRouting, Replica, TenantAccess

log = logging.getLogger(__name__)


class RemoteDirectory:
    def __init__(
        self,
        control_url: str,
        *,
        admin_key: str | None,
        admin_header: str = "admin-key",
        api_token: str | None = None,
        interval_s: float = 1.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._http = httpx.AsyncClient(
            base_url=control_url.rstrip("/"), headers=headers, timeout=httpx.Timeout(5.0)
        )
        self._admin_key = admin_key
        self._admin_header = admin_header
        self._interval_s = interval_s
        self._routing: dict[str, ModelRouting] = {}
        self._replicas: dict[str, tuple[Replica, ...]] = {}
        self._tenants: dict[str, TenantAccess] = {}
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.refresh()

    async def refresh(self) -> None:
        try:
            r = await self._http.get("/v1/replicas")
            r.raise_for_status()
            wire = DirectoryWire.model_validate_json(r.content)
        except (httpx.HTTPError, ValidationError) as exc:
            if self.last_error is None:
                log.warning("control API unreachable, serving the last known replicas: %s", exc)
            self.last_error = str(exc)
            return
        if self.last_error is not None:
            log.info("control API reachable again")
        self.last_error = None
        self._routing = wire.routing()
        self._tenants = wire.access()
        self._replicas = {
            name: tuple(
                Replica(
                    model=name,
                    server_id=r.server_id,
                    http_url=r.http_url,
                    grpc_url=r.grpc_url,
                    metrics_url=r.metrics_url,
                    admin_header=self._admin_header,
                    admin_key=self._admin_key,
                )
                for r in m.replicas
            )
            for name, m in wire.models.items()
        }

    # --- ReplicaDirectory --------------------------------------------------------------
    def replicas(self, model: str) -> Sequence[Replica]:
        return self._replicas.get(model, ())

    def routing(self, model: str) -> ModelRouting | None:
        return self._routing.get(model)

    def tenant_by_token(self, token_sha256: str) -> TenantAccess | None:
        return self._tenants.get(token_sha256)

    async def ensure(self, model: str, timeout_s: float) -> Sequence[Replica]:
        try:
            await self._http.post(
                f"/v1/models/{model}/ensure",
                params={"timeout_s": max(0.0, min(timeout_s, 600.0))},
                timeout=httpx.Timeout(timeout_s + 5.0),
            )
        except httpx.HTTPError as exc:
            log.warning("ensure %s via the control API failed: %s", model, exc)
        await self.refresh()
        return self.replicas(model)
