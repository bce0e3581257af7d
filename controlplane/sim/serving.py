"""What the simulated fleet is made of: requests, servers, replicas and models (state only).

Plain `__slots__` classes, mutated in place by the gateway and the reconciler: a run allocates
one object per request and per batch, nothing per event.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

from controlplane import keepalive
from controlplane.autoscale import Knobs, ScaleState
from controlplane.sim.scenario import MIB, ModelGroup


class Outcome(IntEnum):
    COMPLETED = 0
    FAILED = 1  # its server failed and no retry was left
    REFUSED = 2  # admission: the model's in-flight limit
    TIMED_OUT = 3  # cold hold ran out before a replica was ready


class Rep(IntEnum):
    LOADING = 0
    READY = 1
    DRAINING = 2  # out of routing, requests in flight finish, then unload
    UNLOADING = 3


class Request:
    __slots__ = ("attempts", "cold", "done", "held", "model", "replica", "sent_s", "t0", "tenant")

    def __init__(self, t0: float, model: ModelRt, tenant: int) -> None:
        self.t0 = t0
        self.model = model
        self.tenant = tenant
        self.attempts = 0
        self.sent_s = t0
        self.replica: Replica | None = None
        self.held = False
        self.cold = False
        self.done = False


class Server:
    __slots__ = (
        "capacity_bytes",
        "epoch",
        "executing",
        "id",
        "idx",
        "inflight",
        "live",
        "loads_active",
        "replicas",
        "rif",
        "slow",
        "used_bytes",
        "waiting",
    )

    def __init__(self, idx: int, capacity_bytes: int, slow: float) -> None:
        self.idx = idx
        self.id = f"triton-{idx}"
        self.capacity_bytes = capacity_bytes
        self.slow = slow
        self.live = True
        self.epoch = 0  # bumped on failure: events of the old incarnation are void
        self.rif = 0  # gateway requests in flight to this server (all models)
        self.inflight: dict[Request, float] = {}  # request -> sent at (oldest first)
        self.replicas: dict[int, Replica] = {}  # model index -> replica
        self.used_bytes = 0
        self.loads_active = 0
        self.executing = 0  # batches on the GPU now (gpu_slots)
        self.waiting: deque[Replica] = deque()  # replicas with a batch ready, waiting for a slot


class Replica:
    __slots__ = (
        "busy",
        "ewma_at",
        "ewma_s",
        "inflight",
        "model",
        "queue",
        "server",
        "since",
        "state",
        "timer_at",
    )

    def __init__(self, model: ModelRt, server: Server, now: float) -> None:
        self.model = model
        self.server = server
        self.state = Rep.LOADING
        self.since = now
        self.queue: deque[Request] = deque()
        self.busy = 0  # instances executing a batch
        self.inflight = 0  # requests routed here and not finished
        self.timer_at = -1.0  # the batcher's pending queue-delay wake-up, if any
        self.ewma_s: float | None = None
        self.ewma_at = 0.0


class ModelRt:
    """One model's runtime state: its config, replicas, held requests and autopilot state."""

    __slots__ = (
        "a_s",
        "b_s",
        "cold_starts",
        "delay_changed_at",
        "delay_s",
        "delay_us",
        "demand_until",
        "exponential",
        "failures",
        "group",
        "held",
        "hist",
        "idx",
        "inflight",
        "instances",
        "knobs",
        "last_request_at",
        "last_used",
        "load",
        "load_s",
        "max_batch",
        "memory_bytes",
        "name",
        "placed",
        "preferred",
        "quiet_idle",
        "ready",
        "replicas",
        "retry_at",
        "scale",
        "seen_at",
        "wanted",
    )

    def __init__(self, idx: int, name: str, group: ModelGroup) -> None:
        self.idx = idx
        self.name = name
        self.group = group
        self.memory_bytes = group.memory_mib * MIB
        self.load_s = group.load_s
        self.a_s = group.service_a_s
        self.b_s = group.service_b_s
        self.exponential = group.service == "exponential"
        self.max_batch = max(1, group.max_batch_size)
        self.preferred = tuple(
            sorted({p for p in group.preferred_batch_sizes if p <= self.max_batch})
        )
        self.delay_s = group.max_queue_delay_us / 1e6
        self.delay_us = group.max_queue_delay_us  # the autopilot's tuned delay (batching)
        self.delay_changed_at = float("-inf")
        self.instances = group.instances
        self.replicas: dict[int, Replica] = {}  # server index -> replica (any state)
        self.ready: list[Replica] = []  # routable replicas, in the order they became ready
        self.held: deque[Request] = deque()  # requests waiting for a first replica
        self.inflight = 0  # admitted and not finished (admission counts these)
        self.last_request_at: float | None = None
        self.last_used = 0.0
        self.seen_at: float | None = None  # last request time the autopilot saw (idle gaps)
        self.demand_until = -1.0  # a cold request wants a replica until then (ensure)
        self.wanted = 0  # the autopilot's desired replicas (None-like: see control)
        self.failures = 0
        self.retry_at = -1.0  # blocked (backoff) until then
        self.hist = keepalive.IdleHistogram()
        self.scale = ScaleState()
        self.knobs: Knobs | None = None
        self.load: int | None = None  # the autopilot's last desired replicas
        self.quiet_idle: bool | None = None  # last decision was on a quiet model: idle or not
        self.cold_starts = 0
        self.placed: tuple[str, ...] | None = None  # servers in the planner's view; None: stale
