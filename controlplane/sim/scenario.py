"""A simulation scenario: fleet, models, workload and policies as one validated tree.

Read from YAML by the adapter (`adapters/simio.py`); everything here is plain pydantic, so a bad
field is reported by name. Units are in the names (`_s`, `_us`, `_mib`, `_rps`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from controlplane.spec import BatchingBounds, InputModel

MIB = 1 << 20


class Failure(InputModel):
    server: int = Field(ge=0, description="Index of the server (0-based) that fails.")
    at_s: float = Field(ge=0, description="Simulated time of the failure.")


class FleetSpec(InputModel):
    servers: int = Field(default=3, ge=1, le=100_000, description="Triton servers (one per GPU).")
    memory_mib: int = Field(
        default=16_384, ge=1, description="Model memory per server (GPU memory)."
    )
    restart_s: float = Field(
        default=30.0, ge=0, description="A failed server is back (empty) after this long."
    )
    mtbf_s: float | None = Field(
        default=None,
        gt=0,
        description="Mean time between failures per server (exponential); none: off.",
    )
    failures: tuple[Failure, ...] = Field(default=(), description="Failures at fixed times.")
    warm_start: bool = Field(
        default=False,
        description="Start with every warm floor (min_replicas) and a replica of every model "
        "expected at least once per keep-alive already loaded (placed by the real planner), "
        "instead of an empty fleet; with a replayed trace, the floors only.",
    )
    gpu_slots: int | None = Field(
        default=None,
        ge=1,
        description="Batches one server executes at once across all its models (the GPU is "
        "shared; 1: one at a time); none: models on one server never contend.",
    )
    slow_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Share of servers that are slow."
    )
    slow_servers: tuple[int, ...] = Field(
        default=(), description="Indices of servers that are slow."
    )
    slow_factor: float = Field(
        default=1.0,
        ge=1,
        description="Service time multiplier on a slow server (e.g. 5: five times).",
    )


class ModelGroup(InputModel):
    """One model, or `count` alike models named `name-0` … `name-(count-1)`."""

    name: str = Field(min_length=1, max_length=200, description="Model name (prefix if count>1).")
    count: int = Field(default=1, ge=1, le=1_000_000, description="How many alike models.")
    weight: float = Field(
        default=1.0, ge=0, description="Relative request share of each model (popularity: weights)."
    )
    memory_mib: int = Field(default=1024, ge=1, description="Footprint of one replica.")
    load_s: float = Field(default=2.0, ge=0, description="Time to load one replica.")
    unload_s: float = Field(default=0.2, ge=0, description="Time to unload one replica.")
    load_failure_rate: float = Field(default=0.0, ge=0, le=1, description="Chance a load fails.")
    service_a_s: float = Field(
        default=0.005, ge=0, description="Service time of a batch: a + b x size."
    )
    service_b_s: float = Field(
        default=0.001, ge=0, description="Per-request part of the service time."
    )
    service: Literal["deterministic", "exponential"] = Field(
        default="deterministic", description="Service time distribution around a + b x size."
    )
    max_batch_size: int = Field(
        default=8, ge=0, description="Triton max_batch_size (0: no batching)."
    )
    preferred_batch_sizes: tuple[int, ...] = Field(
        default=(), description="Triton dynamic_batching.preferred_batch_size."
    )
    max_queue_delay_us: int = Field(
        default=0, ge=0, description="Triton max_queue_delay_microseconds."
    )
    batching: BatchingBounds | None = Field(
        default=None,
        description="Let the autopilot tune max_queue_delay_us within these bounds "
        "(controlplane.batching; autoscale: slo, needs p95_ms or p99_ms).",
    )
    instances: int = Field(
        default=1, ge=1, description="Model instances per replica (instance_group)."
    )
    min_replicas: int = Field(default=0, ge=0, description="Warm floor.")
    max_replicas: int = Field(default=1, ge=1, description="At most this many replicas.")
    priority: int = Field(default=0, description="Higher is placed first and evicted last.")
    idle_to_zero_s: float = Field(
        default=300.0, gt=0, description="Fixed keep-alive after last use."
    )
    p95_ms: float | None = Field(default=None, gt=0, description="P95 target (autoscale: slo).")
    p99_ms: float | None = Field(default=None, gt=0, description="P99 target (autoscale: slo).")
    max_inflight: int | None = Field(
        default=None,
        ge=1,
        description="Gateway admission limit of requests in flight for this model.",
    )

    @model_validator(mode="after")
    def _floors(self) -> ModelGroup:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}"
            )
        return self


class Step(InputModel):
    at_s: float = Field(ge=0, description="From this time on ...")
    factor: float = Field(ge=0, description="... the arrival rate is multiplied by this.")


class WorkloadSpec(InputModel):
    kind: Literal["poisson", "mmpp", "diurnal", "trace"] = Field(
        default="poisson", description="Arrival process (trace: replay `trace` file)."
    )
    rate_rps: float = Field(
        default=10.0, ge=0, le=10_000_000, description="Mean arrival rate over all models."
    )
    popularity: Literal["weights", "zipf", "azure"] = Field(
        default="weights",
        description="How requests split over models: the groups' weights, Zipf, or the "
        "Azure Functions 2019 skew.",
    )
    zipf_s: float = Field(default=1.0, ge=0, description="Zipf exponent (popularity: zipf).")
    steps: tuple[Step, ...] = Field(default=(), description="Rate multipliers from given times on.")
    burst_factor: float = Field(
        default=5.0, ge=1, description="mmpp: rate in a burst over the rate between bursts."
    )
    burst_mean_s: float = Field(default=10.0, gt=0, description="mmpp: mean burst length.")
    calm_mean_s: float = Field(default=60.0, gt=0, description="mmpp: mean time between bursts.")
    period_s: float = Field(default=86_400.0, gt=0, description="diurnal: period of the cycle.")
    amplitude: float = Field(
        default=0.5, ge=0, le=1, description="diurnal: peak-to-mean swing (0..1)."
    )
    trace: str | None = Field(
        default=None,
        description="kind: trace: CSV file `timestamp_s,model[,tenant]` (relative path).",
    )
    timer_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of models invoked by a timer (a fixed period = 1 / their rate, 2% "
        "jitter, random phase) instead of Poisson arrivals, as timer triggers in Azure Functions.",
    )
    tenants: int = Field(default=1, ge=1, description="Synthetic tenants requests are spread over.")

    @model_validator(mode="after")
    def _trace_given(self) -> WorkloadSpec:
        if self.kind == "trace" and not self.trace:
            raise ValueError("kind: trace needs `trace: FILE.csv`")
        return self


class GatewaySpec(InputModel):
    routing: Literal["hot-cold", "least-request", "round-robin"] = Field(
        default="hot-cold", description="Replica choice policy (controlplane.routing)."
    )
    retries: int = Field(default=1, ge=0, description="Retries of a request whose server failed.")
    cold_hold_s: float = Field(
        default=30.0, ge=0, description="A request for a cold model waits this."
    )
    latency_tau_s: float = Field(default=2.0, gt=0, description="Peak-EWMA decay time.")
    admission: Literal["static", "auto"] = Field(
        default="static",
        description="static: each model's max_inflight; auto: the autopilot's admission limit.",
    )


class ReconcilerSpec(InputModel):
    interval_s: float = Field(default=1.0, gt=0, description="Tick interval.")
    tick_cost_s: float = Field(
        default=0.0, ge=0, description="A woken tick starts this long after the wake (plan time)."
    )
    max_concurrent_loads: int = Field(default=4, ge=1, description="Loads in flight, whole fleet.")
    max_loads_per_server: int = Field(default=1, ge=1, description="Loads in flight per server.")
    backoff_base_s: float = Field(
        default=5.0, ge=0, description="First backoff after a failed load."
    )
    backoff_max_s: float = Field(default=600.0, ge=0, description="Longest backoff.")
    demand_ttl_s: float = Field(
        default=300.0, ge=0, description="A cold request keeps its model wanted."
    )
    drain_grace_s: float = Field(
        default=1.0, ge=0, description="Scale-in: out of routing this long."
    )


class PolicySpec(InputModel):
    autoscale: Literal["slo", "target-inflight", "static"] = Field(
        default="slo", description="controlplane.autoscale policy for every model."
    )
    keep_warm: Literal["histogram", "fixed", "lru"] = Field(
        default="histogram",
        description="histogram: controlplane.keepalive windows; fixed: idle_to_zero_s; "
        "lru: never unload when idle, evict least recently used when room is needed.",
    )
    placement: Literal["best-fit", "pack", "spread", "auto"] = Field(
        default="auto",
        description="controlplane.placement strategy: auto (the control plane's default: "
        "spread on a fixed-size fleet, which the simulated one is); best-fit (or pack): fill a "
        "server before the next; spread: each new replica on the live server with the most "
        "free memory.",
    )
    autopilot_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="Run the autopilot at most this often (None: every reconciler tick, as the "
        "live loop does); a coarser step trades fidelity for speed at fleet scale.",
    )
    stable_window_s: float = Field(default=30.0, gt=0, description="Autopilot stable window.")
    panic_window_s: float = Field(default=5.0, gt=0, description="Autopilot panic window.")


class ReportSpec(InputModel):
    interval_s: float = Field(default=60.0, gt=0, description="Width of one time-series bucket.")


class Scenario(InputModel):
    name: str = Field(default="scenario", description="Shown in reports.")
    seed: int = Field(default=1, description="Seed of every random stream.")
    duration_s: float = Field(
        default=600.0, gt=0, le=30 * 86_400, description="Arrivals stop then."
    )
    drain_s: float | None = Field(
        default=None,
        ge=0,
        description="Time after duration_s for requests to finish (cold_hold + 60).",
    )
    fleet: FleetSpec = Field(default_factory=FleetSpec)
    models: tuple[ModelGroup, ...] = Field(min_length=1, description="The models.")
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    reconciler: ReconcilerSpec = Field(default_factory=ReconcilerSpec)
    policies: PolicySpec = Field(default_factory=PolicySpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [g.name for g in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: names must be unique")
        n = self.fleet.servers
        for f in self.fleet.failures:
            if f.server >= n:
                raise ValueError(f"fleet.failures: server {f.server} is not below servers={n}")
        for s in self.fleet.slow_servers:
            if s >= n:
                raise ValueError(f"fleet.slow_servers: {s} is not below servers={n}")
        return self

    def model_names(self) -> list[str]:
        out: list[str] = []
        for g in self.models:
            out += [g.name] if g.count == 1 else [f"{g.name}-{i}" for i in range(g.count)]
        return out
