"""tritonfleet's configuration: one typed tree, read once at the entry point.

Values come from (highest first) CLI flags, `TRITONFLEET_*` environment variables, then the
defaults below, which run a local fleet of real Triton processes with SQLite and direct
metrics scraping. Nothing reads the environment at import time.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.gateway.config import GatewayConfig
from controlplane.placement import PlacementSetting

_NOT_GATEWAY_CONFIG = frozenset({"gateway_enabled"})


class FleetKind(StrEnum):
    LOCAL = "local"
    STATIC = "static"
    KUBERNETES = "kubernetes"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRITONFLEET_", extra="forbid")

    data_dir: Path = Field(
        default=Path(".tritonfleet"),
        description="Where the SQLite store, server logs and the prepared Triton binary live",
    )
    api_host: str = Field(default="127.0.0.1", description="Control API bind address")
    api_port: int = Field(default=8080, ge=0, le=65535, description="Control API port (0 = any)")
    api_token: str | None = Field(
        default=None,
        description="The admin token: required by control-API changes (a tenant token also "
        "works, scoped to its models), and the only one that manages tenants",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest control-API request body accepted"
    )

    fleet: FleetKind = Field(default=FleetKind.LOCAL, description="Where Triton servers come from")
    servers: int = Field(default=2, ge=1, le=64, description="Local fleet: number of servers")
    min_servers: int | None = Field(
        default=None,
        ge=1,
        description="Local fleet: the autopilot may shrink the fleet down to this many servers "
        "(default: --servers, i.e. it never shrinks below its starting size); Kubernetes fleet: "
        "the StatefulSet's floor",
    )
    max_servers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Local fleet: the autopilot may grow the fleet up to this many servers "
        "(default: --servers, i.e. fixed size); Kubernetes fleet: the StatefulSet's ceiling",
    )
    base_port: int | None = Field(
        default=None, description="Local fleet: first port (3 per server); default: free ports"
    )
    static_servers: list[str] = Field(
        default_factory=list, description="Static fleet: Triton HTTP URLs (gRPC at port+1)"
    )
    fleet_config: Path | None = Field(
        default=None,
        description="Static fleet: YAML file with `servers: [{url, grpc, metrics, "
        "capacity_bytes, admin_key, labels}]`",
    )
    server_capacity_bytes: int = Field(
        default=4 * 1024**3,
        ge=1,
        description="Memory each server offers to models when NVML cannot tell (CPU mode)",
    )
    admin_key: str | None = Field(
        default=None,
        description="Restricted-API key for Triton's repository/config APIs; generated for a "
        "local fleet when unset",
    )
    tritonserver: str | None = Field(default=None, description="Path to a tritonserver binary")
    model_root: Path | None = Field(
        default=None, description="Local directory that artifact paths must stay under"
    )
    keep_servers: bool = Field(
        default=False,
        description="Local fleet: servers outlive the control plane (stop, crash or kill), and "
        "the next start with the same data dir adopts the live ones (no reload); off: they stop "
        "with it, and leftovers found at start are stopped and replaced",
    )
    server_log_max_bytes: int = Field(
        default=64 << 20,
        ge=1 << 20,
        description="Local fleet: a server's log is rotated (one old copy) past this size",
    )
    register_examples: bool = Field(
        default=True, description="`up`: register the example models shipped with tritonfleet"
    )

    reconcile_interval_s: float = Field(default=1.0, gt=0, description="Reconciler tick")
    max_concurrent_loads: int = Field(default=4, ge=1, description="Loads in flight, fleet-wide")
    max_loads_per_server: int = Field(default=1, ge=1, description="Loads in flight per server")
    ensure_timeout_s: float = Field(default=30.0, gt=0, description="Default hold for ensure")

    autopilot: bool = Field(
        default=True,
        description="Drive each model's replicas, admission limit and the fleet's size from "
        "measured load and its SLO (off: warm floors and explicit demand only)",
    )
    autopilot_stable_window_s: float = Field(
        default=30.0,
        gt=0,
        le=120,
        description="Autopilot: demand averaged over this window (at most 120 s, what the "
        "gateway's per-model request log holds)",
    )
    autopilot_panic_window_s: float = Field(
        default=5.0, gt=0, le=600, description="Autopilot: bursts are judged over this window"
    )
    slo_p95_ms: float | None = Field(
        default=None, gt=0, description="Fleet-wide P95 target for models that declare no slo"
    )
    slo_p99_ms: float | None = Field(
        default=None, gt=0, description="Fleet-wide P99 target for models that declare no slo"
    )
    slo_max_error_rate: float = Field(
        default=0.001, ge=0, lt=1, description="Fleet-wide error-rate target (0..1)"
    )
    placement_strategy: PlacementSetting = Field(
        default=PlacementSetting.AUTO,
        description="Where a new replica goes: `pack` (best-fit: fill servers, so an elastic "
        "fleet can stop empty ones), `spread` (the server with the most free memory: models "
        "share GPU time and cold loads with fewer neighbours), or `auto` (spread when the fleet "
        "cannot change size, pack when the autopilot may grow and shrink it)",
    )
    server_idle_s: float = Field(
        default=30.0,
        gt=0,
        description="An empty highest-ordinal server is stopped after this long (elastic fleet)",
    )
    drain_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Scale-in waits at most this long for a replica's requests in flight",
    )

    ui_enabled: bool = Field(
        default=True, description="Serve the live dashboard at /ui on the control API"
    )
    ui_events_kept: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Decisions the event feed keeps (a stream that falls further behind is "
        "told how many it missed)",
    )
    ui_series_points: int = Field(
        default=600,
        ge=10,
        le=100_000,
        description="Measurements kept per model for the latency charts (one per autopilot "
        "tick: 600 at 1 s is ten minutes)",
    )
    ui_stream_max_clients: int = Field(
        default=16, ge=1, le=10_000, description="Event streams (/v1/events) open at once"
    )
    ui_stream_heartbeat_s: float = Field(
        default=15.0, gt=0, le=300, description="A quiet event stream sends a keepalive this often"
    )
    ui_stream_max_s: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="An event stream is closed cleanly after this long (the page reconnects)",
    )
    ui_stream_write_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A stream whose client takes no bytes for this long is closed",
    )

    gateway_enabled: bool = Field(default=True, description="Run the gateway in-process")
    # The gateway's settings: `gateway_<name>` is GatewayConfig's `<name>` (the composition root
    # builds it from `gateway_values()`; a test checks that every GatewayConfig field has one
    # and that the defaults agree). GatewayConfig validates the values; its errors name these.
    gateway_host: str = Field(default="127.0.0.1", description="Gateway bind address")
    gateway_auth: Literal["off", "tenants"] = Field(
        default="off",
        description="Gateway auth: 'tenants' needs a tenant's (or the admin's) bearer token on "
        "model routes (401 without, 404 for another tenant's model, 429 over its rate limit)",
    )
    gateway_http_port: int = Field(default=8000, ge=0, le=65535, description="Gateway HTTP port")
    gateway_grpc_port: int | None = Field(
        default=8001, ge=0, le=65535, description="Gateway gRPC port (none: no gRPC door)"
    )
    gateway_grpc_door: Literal["h2", "grpcio"] = Field(
        default="h2", description="gRPC door: h2 (HTTP/2 frame relay) or grpcio"
    )
    gateway_policy: str = Field(
        default="hot-cold", description="Replica choice: hot-cold, least-request, round-robin"
    )
    gateway_max_body_bytes: int = Field(
        default=64 << 20, description="Larger request bodies get 413 (gRPC: RESOURCE_EXHAUSTED)"
    )
    gateway_cold_hold_s: float | None = Field(
        default=None,
        description="How long a request for a cold model waits for a replica before 503 "
        "(default: ensure_timeout_s)",
    )
    gateway_retry_after_s: int = Field(default=5, description="Retry-After of a cold-model 503")
    gateway_upstream_timeout_s: float = Field(
        default=60.0, description="A replica's reply later than this fails the request (504)"
    )
    gateway_connect_timeout_s: float = Field(
        default=1.0, description="TCP connect timeout to a replica"
    )
    gateway_header_timeout_s: float = Field(
        default=10.0, description="A client must send a complete request head within this (408)"
    )
    gateway_idle_timeout_s: float = Field(
        default=120.0, description="A client connection idle this long is closed"
    )
    gateway_max_client_connections: int = Field(
        default=4096, description="Open client connections per front door; more are closed"
    )
    gateway_max_pipelined_bytes: int = Field(
        default=1 << 20,
        description="HTTP: request bytes one client may queue behind the one being answered",
    )
    gateway_retry_ratio: float = Field(
        default=0.2, description="Retries may add this share of recent requests"
    )
    gateway_retry_min_per_s: float = Field(
        default=10.0, description="... plus this many retries per second"
    )
    gateway_eject_after_failures: int = Field(
        default=3, description="Consecutive failures (connect/502/503/504) that eject a replica"
    )
    gateway_eject_base_s: float = Field(
        default=5.0, description="First ejection's length; grows with each ejection"
    )
    gateway_max_ejected_fraction: float = Field(
        default=0.5, description="Never eject more than this share of the known replicas"
    )
    gateway_default_max_queue: int | None = Field(
        default=None,
        description="Admission limit per model when the control plane sets none (none: no limit)",
    )
    gateway_latency_tau_s: float = Field(
        default=2.0, description="Decay time of the peak-EWMA latency"
    )
    gateway_signal_interval_s: float = Field(
        default=1.0, description="How often Triton signals are scraped or queried"
    )
    gateway_signal_max_age_s: float = Field(
        default=5.0, description="Older Triton signals are ignored by the policy"
    )
    gateway_h2_max_concurrent_streams: int = Field(
        default=128, description="SETTINGS_MAX_CONCURRENT_STREAMS advertised to gRPC clients"
    )
    gateway_h2_initial_stream_window_bytes: int = Field(
        default=16777216, description="Flow-control window per stream granted to a gRPC client"
    )
    gateway_h2_initial_connection_window_bytes: int = Field(
        default=67108864, description="Flow-control window per client connection"
    )
    gateway_h2_max_frame_bytes: int = Field(
        default=1048576, description="SETTINGS_MAX_FRAME_SIZE advertised"
    )
    gateway_h2_max_header_list_bytes: int = Field(
        default=65536, description="A request's header block, compressed"
    )
    gateway_h2_max_continuation_frames: int = Field(
        default=32, description="CONTINUATION frames in one header block"
    )
    gateway_h2_max_resets_per_s: int = Field(default=200, description="Streams a client resets")
    gateway_h2_max_control_frames_per_s: int = Field(
        default=1000,
        description="PING, SETTINGS, PRIORITY and unknown frames a client sends per second",
    )
    gateway_h2_max_consecutive_empty_frames: int = Field(
        default=1,
        description="Consecutive DATA/HEADERS/CONTINUATION frames with neither payload nor",
    )
    gateway_h2_max_outbound_control_frames: int = Field(
        default=1000,
        description="PING/SETTINGS ACKs and RST_STREAMs queued while the client does not",
    )
    gateway_h2_max_connection_buffer_bytes: int = Field(
        default=134217728,
        description="Request bytes, and unread reply bytes, one gRPC client connection may "
        "hold in the gateway",
    )
    gateway_h2_stream_idle_timeout_s: float = Field(
        default=300.0, description="A gRPC stream with no frames either way for this long is ended"
    )
    gateway_h2_hpack_cache_entries: int = Field(
        default=64, description="Decoded header blocks cached per connection"
    )
    gateway_h2_hpack_cache_bytes: int = Field(
        default=262144, description="Decoded header blocks cached per connection"
    )
    gateway_admin_header_grpc: str = Field(
        default="triton-grpc-protocol-admin-key",
        description="gRPC metadata key that carries the restricted-API key to Triton",
    )

    store_path: Path | None = Field(
        default=None, description="SQLite file of the registry; default <data_dir>/tritonfleet.db"
    )
    usage_flush_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Chargeback: accrued usage is written to SQLite this often (a crash loses "
        "at most this much)",
    )
    usage_retention_days: float = Field(
        default=400.0, gt=0, description="Chargeback: per-minute usage older than this is pruned"
    )

    k8s_namespace: str | None = Field(default=None, description="Kubernetes fleet: namespace")
    k8s_statefulset: str | None = Field(default=None, description="Triton StatefulSet name")
    k8s_label_selector: str | None = Field(default=None, description="Triton pod selector")
    k8s_http_port: int = Field(default=8000, description="Triton pods' HTTP port")
    k8s_grpc_port: int = Field(default=8001, description="Triton pods' gRPC port")
    k8s_metrics_port: int = Field(default=8002, description="Triton pods' metrics port")

    prometheus_url: str | None = Field(
        default=None, description="Read signals from this Prometheus instead of scraping Triton"
    )
    prometheus_bearer_token: str | None = Field(default=None, description="Prometheus auth")
    controlplane_url: str | None = Field(
        default=None, description="Gateway running apart: the control API it asks for replicas"
    )

    @field_validator("gateway_grpc_port", "gateway_default_max_queue", mode="before")
    @classmethod
    def _none_word(cls, v: object) -> object:
        """`none` (flag or environment) turns the optional gateway settings off."""
        return None if isinstance(v, str) and v.strip().lower() in ("", "none") else v

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        low, high = self.min_servers, self.max_servers
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"min_servers ({low}) is greater than max_servers ({high}); lower --min-servers "
                "or raise --max-servers"
            )
        if self.fleet is FleetKind.LOCAL:
            if high is not None and high < self.servers:
                raise ValueError(
                    f"max_servers ({high}) is below servers ({self.servers}): the local fleet "
                    f"starts with --servers; raise --max-servers to {self.servers} or more"
                )
            if low is not None and low > self.servers:
                raise ValueError(
                    f"min_servers ({low}) is above servers ({self.servers}): the local fleet "
                    f"starts with --servers; lower --min-servers to {self.servers} or less"
                )
        if self.autopilot_panic_window_s > self.autopilot_stable_window_s:
            raise ValueError(
                f"autopilot_panic_window_s ({self.autopilot_panic_window_s:g}) exceeds "
                f"autopilot_stable_window_s ({self.autopilot_stable_window_s:g}); the panic "
                "window must be the shorter one"
            )
        if self.slo_p95_ms and self.slo_p99_ms and self.slo_p95_ms > self.slo_p99_ms:
            raise ValueError(
                f"slo_p95_ms ({self.slo_p95_ms:g}) exceeds slo_p99_ms ({self.slo_p99_ms:g})"
            )
        return self

    def gateway_config(self) -> GatewayConfig:
        """The gateway's config: every `gateway_*` setting (Prometheus shared). Raises
        ValidationError where the gateway's own checks refuse a value."""
        return GatewayConfig(**self.gateway_values())

    def gateway_values(self) -> dict[str, Any]:
        """GatewayConfig's fields from these settings: every `gateway_<name>` as `<name>`."""
        values = {
            name.removeprefix("gateway_"): getattr(self, name)
            for name in type(self).model_fields
            if name.startswith("gateway_") and name not in _NOT_GATEWAY_CONFIG
        }
        if values["cold_hold_s"] is None:
            values["cold_hold_s"] = self.ensure_timeout_s
        # One Prometheus for the whole fleet: the control plane and the gateway share it.
        values["prometheus_url"] = self.prometheus_url
        values["prometheus_bearer_token"] = self.prometheus_bearer_token
        return values

    @property
    def db_path(self) -> Path:
        return self.store_path or self.data_dir / "tritonfleet.db"
