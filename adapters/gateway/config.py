"""The gateway's configuration: one typed tree, read once by whoever starts the gateway."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controlplane import routing


class GatewayConfig(BaseModel):
    """How the gateway listens, routes, retries and sheds load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address both front doors bind to.")
    http_port: int = Field(
        8000, ge=0, le=65535, description="KServe v2 HTTP/REST port (0: any free port)."
    )
    grpc_port: int | None = Field(
        8001,
        ge=0,
        le=65535,
        description="KServe v2 gRPC port (0: any free port; None: no gRPC door).",
    )
    grpc_door: Literal["h2", "grpcio"] = Field(
        "h2",
        description="gRPC door: h2 (HTTP/2 frames relayed, no grpcio on the path) or grpcio.",
    )
    policy: str = Field(
        "hot-cold", description="Replica choice: hot-cold, least-request, round-robin."
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        routing.make(v)  # ValueError naming the known ones
        return v

    auth: Literal["off", "tenants"] = Field(
        "off",
        description="tenants: model routes need a live tenant's (or the admin's) bearer token; "
        "401 without one, 404 for another tenant's model, 429 over a tenant's rate limit.",
    )
    max_body_bytes: int = Field(64 << 20, ge=0, description="Larger request bodies get 413 unread.")
    cold_hold_s: float = Field(
        30.0,
        ge=0,
        description="How long a request for a cold model waits for a replica before 503.",
    )
    retry_after_s: int = Field(5, ge=0, description="Retry-After sent with a cold-model 503.")
    upstream_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A replica that has not answered by then gets the request failed (504).",
    )
    connect_timeout_s: float = Field(1.0, gt=0, description="TCP connect timeout to a replica.")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A client connection must deliver a complete request head (HTTP) or its "
        "preface+SETTINGS / a whole HEADERS block (h2) within this time, else it is closed "
        "(HTTP: 408 if part of a head arrived).",
    )
    idle_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A client connection with no request in flight and no bytes for this "
        "long is closed.",
    )
    max_client_connections: int = Field(
        4096,
        ge=1,
        description="Open client connections per front door; further ones are closed at once.",
    )
    # HTTP/2 (the h2 gRPC door): every limit a hostile client could push against. Defaults
    # follow Envoy's http2_protocol_options and nginx's http2_* where they have one.
    h2_max_concurrent_streams: int = Field(
        128,
        ge=1,
        description="SETTINGS_MAX_CONCURRENT_STREAMS advertised to gRPC clients; a stream beyond "
        "it is refused with RST_STREAM REFUSED_STREAM (nginx http2_max_concurrent_streams).",
    )
    h2_initial_stream_window_bytes: int = Field(
        16 << 20,
        ge=65535,
        le=2**31 - 1,
        description="Flow-control window per stream granted to a gRPC client; credited back "
        "as the gateway consumes the data (Envoy initial_stream_window_size).",
    )
    h2_initial_connection_window_bytes: int = Field(
        64 << 20,
        ge=65535,
        le=2**31 - 1,
        description="Flow-control window per client connection (Envoy "
        "initial_connection_window_size).",
    )
    h2_max_frame_bytes: int = Field(
        1 << 20,
        ge=1 << 14,
        le=(1 << 24) - 1,
        description="SETTINGS_MAX_FRAME_SIZE advertised; a larger frame closes the connection "
        "(FRAME_SIZE_ERROR).",
    )
    h2_max_header_list_bytes: int = Field(
        64 << 10,
        ge=1 << 10,
        description="A request's header block, compressed (HEADERS + CONTINUATION) and decoded; "
        "more closes the connection with ENHANCE_YOUR_CALM (Envoy max_request_headers_kb).",
    )
    h2_max_continuation_frames: int = Field(
        32,
        ge=1,
        description="CONTINUATION frames in one header block; more closes the connection "
        "(CVE-2024-27316 class).",
    )
    h2_max_resets_per_s: int = Field(
        200,
        ge=1,
        description="Streams a client resets (or gets refused) per second on one connection; "
        "more gets GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).",
    )
    h2_max_control_frames_per_s: int = Field(
        1000,
        ge=1,
        description="PING, SETTINGS, PRIORITY and unknown frames a client sends per second on "
        "one connection; more gets GOAWAY ENHANCE_YOUR_CALM.",
    )
    h2_max_consecutive_empty_frames: int = Field(
        1,
        ge=0,
        description="Consecutive DATA/HEADERS/CONTINUATION frames with neither payload nor an "
        "end flag (Envoy max_consecutive_inbound_frames_with_empty_payload).",
    )
    h2_max_outbound_control_frames: int = Field(
        1000,
        ge=1,
        description="PING/SETTINGS ACKs and RST_STREAMs queued while the client does not read; "
        "more closes the connection (Envoy max_outbound_control_frames).",
    )
    h2_max_connection_buffer_bytes: int = Field(
        128 << 20,
        ge=1 << 16,
        description="Bytes one gRPC client connection may hold in the gateway, each way: "
        "request bytes buffered (unary messages being read or in flight; a stream that would "
        "exceed it gets RESOURCE_EXHAUSTED) and reply bytes the client has not read (a reply "
        "that would exceed it gets RESOURCE_EXHAUSTED; past half of it new calls get "
        "REFUSED_STREAM while the socket is full).",
    )
    h2_stream_idle_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A gRPC stream with no frames either way for this long is ended "
        "(DEADLINE_EXCEEDED, RST_STREAM); a connection whose queued replies make no progress "
        "for this long is closed (Envoy stream_idle_timeout).",
    )
    h2_hpack_cache_entries: int = Field(
        64, ge=0, description="Decoded header blocks cached per connection (entries)."
    )
    h2_hpack_cache_bytes: int = Field(
        256 << 10, ge=0, description="Decoded header blocks cached per connection (bytes)."
    )
    max_pipelined_bytes: int = Field(
        1 << 20,
        ge=1,
        description="HTTP: bytes of requests one client connection may queue behind the one "
        "being answered (heads and bodies); past it the gateway stops reading from that "
        "client until replies drain.",
    )
    retry_ratio: float = Field(
        0.2, ge=0, description="Retries may add this share of recent requests."
    )
    retry_min_per_s: float = Field(10.0, ge=0, description="... plus this many retries per second.")
    eject_after_failures: int = Field(
        3, ge=1, description="Consecutive connection failures/502/503/504 that eject a replica."
    )
    eject_base_s: float = Field(
        5.0, gt=0, description="First ejection's length; grows per ejection."
    )
    max_ejected_fraction: float = Field(
        0.5, ge=0, le=1, description="Never eject more than this share of the known replicas."
    )
    default_max_queue: int | None = Field(
        None,
        ge=1,
        description="Admission limit per model when its routing sets none (None: no limit).",
    )
    latency_tau_s: float = Field(2.0, gt=0, description="Decay time of the peak-EWMA latency.")
    signal_interval_s: float = Field(1.0, gt=0, description="How often Triton signals are scraped.")
    signal_max_age_s: float = Field(
        5.0, gt=0, description="Older signals are ignored by the policy."
    )
    prometheus_url: str | None = Field(
        None, description="Read signals from this Prometheus instead of scraping each server."
    )
    prometheus_bearer_token: str | None = Field(
        None, repr=False, description="Sent as `Authorization: Bearer` to prometheus_url."
    )
    admin_header_grpc: str = Field(
        "triton-grpc-protocol-admin-key",
        description="gRPC metadata key that carries the restricted-API key to Triton.",
    )
