"""A fleet of Triton servers tritonfleet does not start: endpoints someone already runs.

Each entry gives the HTTP URL and optionally the gRPC address, metrics URL, capacity and the
restricted-API key; unspecified ports follow Triton's defaults relative to the HTTP port
(gRPC = HTTP + 1, metrics = HTTP + 2). `refresh()` probes `/v2/health/live`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlplane.errors import FleetError, NotSupported
from controlplane.fleet import FleetSnapshot, Server, ServerHealth


class StaticServer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Triton HTTP endpoint, e.g. http://10.0.0.5:8000")
    grpc: str | None = Field(default=None, description="host:port; default HTTP port + 1")
    metrics: str | None = Field(
        default=None, description="default http://host:(HTTP port + 2)/metrics"
    )
    capacity_bytes: int | None = Field(default=None, ge=1)
    admin_key: str | None = None
    admin_header: str = "admin-key"
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v if "://" in v else f"http://{v}")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ValueError(f"{v!r}: give an HTTP URL with a port, like http://10.0.0.5:8000")
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"


def parse_servers(urls: Sequence[str], admin_key: str | None) -> list[StaticServer]:
    """`--servers URL,URL` from the CLI, with one shared admin key."""
    out = []
    for raw in urls:
        raw = raw.strip()
        if raw:
            try:
                out.append(StaticServer(url=raw, admin_key=admin_key))
            except ValueError as exc:
                raise FleetError(f"--servers: {exc}") from exc
    if not out:
        raise FleetError("--fleet static needs --servers URL[,URL...]")
    return out


class StaticFleet:
    name = "static"

    def __init__(self, servers: Sequence[StaticServer], default_capacity_bytes: int) -> None:
        self._entries = list(servers)
        self._default_capacity = default_capacity_bytes
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0))
        self._snapshot = FleetSnapshot(servers=(), driver=self.name)

    def _server(self, i: int, e: StaticServer, health: ServerHealth) -> Server:
        parts = urlsplit(e.url)
        assert parts.port is not None and parts.hostname is not None
        return Server(
            id=f"static-{i}",
            http_url=e.url,
            grpc_url=e.grpc or f"{parts.hostname}:{parts.port + 1}",
            metrics_url=e.metrics or f"{parts.scheme}://{parts.hostname}:{parts.port + 2}/metrics",
            capacity_bytes=e.capacity_bytes or self._default_capacity,
            health=health,
            admin_header=e.admin_header,
            admin_key=e.admin_key,
            labels=dict(e.labels),
        )

    async def _probe(self, e: StaticServer) -> ServerHealth:
        try:
            r = await self._http.get(f"{e.url}/v2/health/live")
            return ServerHealth.LIVE if r.status_code == 200 else ServerHealth.DOWN
        except httpx.HTTPError:
            return ServerHealth.DOWN

    async def start(self) -> FleetSnapshot:
        snap = await self.refresh()
        if not snap.live():
            raise FleetError(
                "none of the static servers answers /v2/health/live: "
                + ", ".join(e.url for e in self._entries)
                + "; check the URLs and that Triton runs there"
            )
        return snap

    async def refresh(self) -> FleetSnapshot:
        health = await asyncio.gather(*(self._probe(e) for e in self._entries))
        self._snapshot = FleetSnapshot(
            servers=tuple(
                self._server(i, e, h)
                for i, (e, h) in enumerate(zip(self._entries, health, strict=True))
            ),
            driver=self.name,
        )
        return self._snapshot

    def snapshot(self) -> FleetSnapshot:
        return self._snapshot

    async def scale(self, replicas: int) -> None:
        raise NotSupported(
            "a static fleet cannot be scaled by tritonfleet; add servers to its list"
        )

    async def stop(self) -> None:
        await self._http.aclose()


def load_servers(path: Path) -> list[StaticServer]:
    """`--fleet-config FILE`: `servers:` as a YAML list of `StaticServer` fields."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FleetError(f"--fleet-config {path}: cannot read it as YAML ({exc})") from exc
    entries = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise FleetError(f"--fleet-config {path}: needs a non-empty `servers:` list")
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(StaticServer.model_validate(entry))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise FleetError(f"--fleet-config {path}: servers[{i}].{field}: {err['msg']}") from exc
    return out
