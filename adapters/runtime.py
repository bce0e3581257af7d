"""Assembling a running tritonfleet from `Settings`: fleet, store, registry, reconciler, API.

This is the composition root: the one place that picks adapters for the core's ports.
`Runtime.start()` brings everything up in order and `stop()` takes it down in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import uvicorn

from adapters.api.control import ApiContext, UsageSource, create_app
from adapters.api.dashboard import UiConfig
from adapters.api.eventstream import StreamLimits
from adapters.artifactfiles import LocalArtifactFiles
from adapters.gateway.app import Gateway
from adapters.loadsignals import GatewaySignals, PrometheusSignals, TritonCapacity
from adapters.localfleet import LocalFleet, LocalFleetConfig
from adapters.nvml import inventory
from adapters.procmem import ProcessTreeMeter
from adapters.settings import FleetKind, Settings
from adapters.sqlitestore import SqliteStore
from adapters.staticfleet import StaticFleet, load_servers, parse_servers
from adapters.templatefiles import TemplateFiles
from adapters.tritonbin import check_python_stub, locate
from adapters.tritoncontrol import GrpcTritonControl
from adapters.tritonschema import ProtobufSchema
from adapters.usagerecorder import UsageRecorder
from controlplane.artifacts import ArtifactPolicy
from controlplane.autopilot import Autopilot, FleetBounds
from controlplane.autoscale import ScalerConfig
from controlplane.configgen import Renderer
from controlplane.errors import FleetError
from controlplane.events import EventFeed
from controlplane.fleet import FleetDriver
from controlplane.placement import QuotaView
from controlplane.reconciler import Reconciler, ReconcilerConfig
from controlplane.registry import Registry
from controlplane.tenants import TenantRegistry
from controlplane.timeline import Timeline
from model_repo_templates import EXAMPLES_DIR

log = logging.getLogger(__name__)


def build_fleet(settings: Settings) -> FleetDriver:
    if settings.fleet is FleetKind.STATIC:
        entries = (
            load_servers(settings.fleet_config)
            if settings.fleet_config
            else parse_servers(settings.static_servers, settings.admin_key)
        )
        return StaticFleet(entries, settings.server_capacity_bytes)
    if settings.fleet is FleetKind.KUBERNETES:
        from adapters.k8sfleet import K8sFleet, K8sFleetConfig

        missing = [
            f"TRITONFLEET_{n.upper()}"
            for n in ("k8s_namespace", "k8s_statefulset", "k8s_label_selector")
            if not getattr(settings, n)
        ]
        if missing:
            raise FleetError(
                f"--fleet kubernetes needs {', '.join(missing)} (the Helm chart sets them; "
                "see docs/kubernetes.md)"
            )
        return K8sFleet.in_cluster(
            K8sFleetConfig(
                namespace=settings.k8s_namespace or "",
                statefulset=settings.k8s_statefulset or "",
                label_selector=settings.k8s_label_selector or "",
                http_port=settings.k8s_http_port,
                grpc_port=settings.k8s_grpc_port,
                metrics_port=settings.k8s_metrics_port,
                capacity_bytes=settings.server_capacity_bytes,
                admin_key=settings.admin_key,
            )
        )
    gpus = inventory()
    servers, capacity = settings.servers, settings.server_capacity_bytes
    min_servers = settings.min_servers if settings.min_servers is not None else servers
    max_servers = settings.max_servers
    per_env: dict[int, dict[str, str]] = {}
    labels: dict[str, str] = {"device": "cpu"}
    if gpus:
        devices = [(m.uuid, m.memory_total_bytes) for g in gpus for m in g.mig_devices] or [
            (g.uuid, g.memory_total_bytes) for g in gpus
        ]
        servers = len(devices)
        capacity = int(min(mem for _, mem in devices) * 0.9)  # leave room for CUDA contexts
        per_env = {i: {"CUDA_VISIBLE_DEVICES": uuid} for i, (uuid, _) in enumerate(devices)}
        labels = {"device": "gpu", "gpu.product": gpus[0].name}
        log.info("NVML: %d GPU device(s); one server each, %d bytes per server", servers, capacity)
        if settings.min_servers is not None or settings.max_servers is not None:
            # One server per device: another server would have no device of its own.
            log.warning(
                "--min-servers/--max-servers ignored: with GPUs the local fleet is one server "
                "per device (%d)",
                servers,
            )
        min_servers, max_servers = servers, None
    else:
        log.info(
            "no NVML: CPU mode with %d server(s) of %d bytes each (--capacity-bytes)",
            servers,
            capacity,
        )
    check_python_stub()
    install = locate(settings.tritonserver, settings.data_dir / "cache")
    return LocalFleet(
        LocalFleetConfig(
            servers=servers,
            run_dir=settings.data_dir / "servers",
            capacity_bytes=capacity,
            admin_key=settings.admin_key,
            base_port=settings.base_port,
            per_server_env=per_env,
            labels=labels,
            min_servers=min_servers,
            max_servers=max_servers,
            keep_servers=settings.keep_servers,
            log_max_bytes=settings.server_log_max_bytes,
        ),
        install,
    )


def local_admin_key(s: Settings) -> str:
    """A fresh key per run; with --keep-servers one kept in the data directory (mode 0600), so
    a restarted control plane can still use the servers it adopts."""
    if not s.keep_servers:
        return secrets.token_urlsafe(24)
    path = s.data_dir / "admin-key"
    if path.exists():
        return path.read_text().strip()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def fleet_bounds(s: Settings) -> FleetBounds:
    """How far the autopilot may resize the fleet: fixed unless --max-servers says otherwise."""
    if s.fleet is FleetKind.STATIC:
        return FleetBounds(s.servers, s.servers, s.server_idle_s)
    if s.fleet is FleetKind.KUBERNETES:
        low = s.min_servers or 1
        return FleetBounds(low, s.max_servers or low, s.server_idle_s)
    low = s.min_servers if s.min_servers is not None else s.servers
    return FleetBounds(low, s.max_servers or s.servers, s.server_idle_s)


def ui_config(s: Settings) -> UiConfig:
    return UiConfig(
        enabled=s.ui_enabled,
        stream=StreamLimits(
            max_clients=s.ui_stream_max_clients,
            heartbeat_s=s.ui_stream_heartbeat_s,
            max_s=s.ui_stream_max_s,
            write_timeout_s=s.ui_stream_write_timeout_s,
        ),
    )


def autopilot(s: Settings) -> Autopilot:
    """The autopilot with the settings' windows, default SLO and fleet bounds (no signals yet),
    and the dashboard's bounded decision feed and per-model timeline."""
    return Autopilot(
        None,
        ScalerConfig(
            stable_window_s=s.autopilot_stable_window_s,
            panic_window_s=s.autopilot_panic_window_s,
            default_p95_ms=s.slo_p95_ms,
            default_p99_ms=s.slo_p99_ms,
            default_max_error_rate=s.slo_max_error_rate,
        ),
        fleet_bounds(s),
        events=EventFeed(s.ui_events_kept),
        timeline=Timeline(s.ui_series_points),
    )


def tenant_quotas(tenants: TenantRegistry) -> dict[str, QuotaView]:
    """Each tenant's caps for the planner (revoked tenants keep theirs)."""
    return {
        t.name: QuotaView(t.quota.replicas, t.quota.memory_bytes)
        for t in tenants.list()
        if t.quota.replicas is not None or t.quota.memory_bytes is not None
    }


def api_context(
    s: Settings,
    registry: Registry,
    reconciler: Reconciler,
    tenants: TenantRegistry,
    usage: UsageSource,
) -> ApiContext:
    """What the control API serves: every feature on (tenants, chargeback, the dashboard)."""
    return ApiContext(
        registry=registry,
        fleet=reconciler,
        api_token=s.api_token,
        tenants=tenants,
        usage=usage,
        max_body_bytes=s.max_body_bytes,
        ensure_timeout_s=s.ensure_timeout_s,
        ui=ui_config(s),
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our own event loop: signals are ours to handle, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:
        return None


@dataclass
class Runtime:
    settings: Settings
    fleet: FleetDriver | None = None
    store: SqliteStore | None = None
    control: GrpcTritonControl | None = None
    registry: Registry | None = None
    tenants: TenantRegistry | None = None
    reconciler: Reconciler | None = None
    api_server: uvicorn.Server | None = None
    api_url: str = ""
    gateway: Gateway | None = None
    capacity: TritonCapacity | None = None
    usage: UsageRecorder | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self) -> Runtime:
        s = self.settings
        if s.fleet is FleetKind.LOCAL and s.admin_key is None:
            s = self.settings = s.model_copy(update={"admin_key": local_admin_key(s)})
        self.store = await SqliteStore(s.db_path).open()
        policy = ArtifactPolicy(
            PurePosixPath(str(s.model_root.resolve())) if s.model_root else None
        )
        self.tenants = await TenantRegistry(self.store, time.time).load()
        if self.tenants.list() and s.api_token is None:
            log.warning(
                "tenants exist but no --api-token is set: a call without a token acts as the "
                "admin, so tenant isolation holds only for callers that send their token"
            )
        self.registry = Registry(
            self.store, Renderer(ProtobufSchema(), TemplateFiles()), policy, time.time, self.tenants
        )
        self.fleet = build_fleet(s)
        await self.fleet.start()
        self.control = GrpcTritonControl()
        self.reconciler = Reconciler(
            self.fleet,
            self.control,
            self.store,
            LocalArtifactFiles(policy),
            clock=time.time,
            rng=random.Random(),
            config=ReconcilerConfig(
                interval_s=s.reconcile_interval_s,
                max_concurrent_loads=s.max_concurrent_loads,
                max_loads_per_server=s.max_loads_per_server,
                drain_timeout_s=s.drain_timeout_s,
                placement_strategy=s.placement_strategy,
            ),
            meter=ProcessTreeMeter() if isinstance(self.fleet, LocalFleet) else None,
            autopilot=autopilot(s),
            quotas=self._quotas,
        )
        reconciler = self.reconciler
        self.tenants.subscribe(reconciler.wake)

        async def _changed(_: str) -> None:
            reconciler.wake()

        self.registry.subscribe(_changed)
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconciler"))
        # One scraper of Triton's /metrics for the autopilot and chargeback (never two).
        self.capacity = TritonCapacity()
        self.usage = UsageRecorder(
            self.reconciler,
            self.store,
            self.capacity,
            flush_interval_s=s.usage_flush_interval_s,
            retention_s=s.usage_retention_days * 86400,
        )
        self._tasks.append(asyncio.create_task(self.usage.run(), name="usage"))
        app = create_app(api_context(s, self.registry, self.reconciler, self.tenants, self.usage))
        config = uvicorn.Config(
            app, host=s.api_host, port=s.api_port, log_level="warning", lifespan="off"
        )
        self.api_server = EmbeddedServer(config)
        self._tasks.append(asyncio.create_task(self.api_server.serve(), name="control-api"))
        while not self.api_server.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()  # surfaces the bind error
                raise FleetError(
                    f"control API could not listen on {s.api_host}:{s.api_port}; "
                    "choose another --api-port"
                )
            await asyncio.sleep(0.02)
        port = self.api_server.servers[0].sockets[0].getsockname()[1]
        self.api_url = f"http://{s.api_host}:{port}"
        if s.gateway_enabled:
            gw_config = s.gateway_config()
            self.gateway = Gateway(
                gw_config,
                self.reconciler,
                tenants=self.tenants.index,
                admin_token=s.api_token,
                # The gateway's signal feed fetches each server's /metrics anyway: its pages
                # feed the autopilot's capacity and chargeback, so Triton is asked once.
                metrics_pages=None
                if gw_config.prometheus_url
                else self.capacity.fed_by(gw_config.signal_interval_s),
            )
            try:
                await self.gateway.start()
            except OSError as exc:
                raise FleetError(
                    f"the gateway could not listen on {s.gateway_host}:{s.gateway_http_port}/"
                    f"{s.gateway_grpc_port} ({exc.strerror}); choose other --gateway-http-port/"
                    "--gateway-grpc-port"
                ) from exc
            self.reconciler.attach_inflight(self.gateway.router)
        if s.autopilot:
            self._attach_signals()
        return self

    def _quotas(self) -> dict[str, QuotaView]:
        return {} if self.tenants is None else tenant_quotas(self.tenants)

    def _attach_signals(self) -> None:
        """The in-process gateway's request log when there is one, else Prometheus, else none."""
        assert self.reconciler is not None
        s = self.settings
        if self.gateway is not None:
            assert self.capacity is not None
            self.reconciler.autopilot.attach(
                GatewaySignals(
                    self.gateway.metrics.log, self.gateway.router.model_inflight, self.capacity
                )
            )
        elif s.prometheus_url:
            self.reconciler.autopilot.attach(
                PrometheusSignals(s.prometheus_url, s.prometheus_bearer_token)
            )
        else:
            log.warning(
                "autopilot off: no gateway in this process and no --prometheus-url to read "
                "load from"
            )

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        if self.api_server is not None:
            self.api_server.should_exit = True
        for task in self._tasks:
            if task.get_name() in ("reconciler", "usage"):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.usage is not None and self.store is not None:
            try:
                self.usage.observe()
                await self.usage.flush()  # a graceful stop loses nothing
            except Exception:
                log.exception("usage: the last flush failed")
        if self.reconciler is not None:
            await self.reconciler.close()
        if self.control is not None:
            await self.control.close()
        if self.capacity is not None:
            await self.capacity.close()
        if self.fleet is not None:
            await self.fleet.stop()
        if self.store is not None:
            await self.store.close()


def examples_dir() -> Path:
    return EXAMPLES_DIR
