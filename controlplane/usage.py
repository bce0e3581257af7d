"""Chargeback: what each model used, accumulated from the reconciler's observations.

Pure accounting with an explicit `now`. Each observation says which replicas are READY (and on
which server, with how many bytes) and, when a server was scraped, Triton's cumulative request
and compute-time counters. Between two observations every READY replica accrues

- replica-seconds (`replica_s`),
- memory byte-seconds (`memory_byte_s`; GiB-hours = / 2**30 / 3600),
- GPU-seconds on a GPU server, split between the models on it by their share of its used
  memory (`gpu_s`; None when no replica of the model ran on a GPU server in the bucket),

and Triton's counter deltas become `requests` and `compute_us` (a counter that went down means
the server restarted: the new value is the delta). Usage lands in per-minute buckets (split at
minute boundaries); `drain()` hands the changed rows to the store, which adds them up, so a
crash loses at most what accrued since the last flush. A gap between observations longer than
`max_gap_s` (the control plane was down) accrues nothing: no one knows what ran then.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

BUCKET_S = 60
GIB = 1 << 30


@dataclass
class UsageRow:
    """One model's usage in one bucket (`bucket` = the bucket's start, seconds since epoch)."""

    bucket: int
    model: str
    tenant: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    replica_s: float = 0.0
    memory_byte_s: float = 0.0
    gpu_s: float | None = None
    requests: float = 0.0
    compute_us: float = 0.0

    def add(self, other: UsageRow) -> None:
        self.tenant, self.tags = other.tenant, other.tags
        self.replica_s += other.replica_s
        self.memory_byte_s += other.memory_byte_s
        if other.gpu_s is not None:
            self.gpu_s = (self.gpu_s or 0.0) + other.gpu_s
        self.requests += other.requests
        self.compute_us += other.compute_us


@dataclass(frozen=True)
class ReplicaObs:
    model: str
    server: str
    memory_bytes: int


@dataclass(frozen=True)
class ModelMeta:
    tenant: str | None
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Counters:
    """Triton's cumulative counters of one model on one server."""

    requests: float
    compute_us: float


@dataclass(frozen=True)
class Observation:
    now: float
    ready: Sequence[ReplicaObs]
    models: Mapping[str, ModelMeta]  # every registered model
    gpu_servers: frozenset[str] = frozenset()
    counters: Mapping[str, Mapping[str, Counters]] | None = None  # server -> model -> totals


class Accountant:
    def __init__(self, max_gap_s: float = 30.0) -> None:
        self._max_gap_s = max_gap_s
        self._last: Observation | None = None
        self._seen: dict[tuple[str, str], Counters] = {}
        self._pending: dict[tuple[int, str], UsageRow] = {}
        # Since start, for Prometheus counters (monotonic): model -> row (bucket 0).
        self.totals: dict[str, UsageRow] = {}

    def observe(self, obs: Observation) -> None:
        last = self._last
        if last is not None and obs.now < last.now:
            return  # a clock step back: ignore this observation
        if last is not None and obs.now - last.now <= self._max_gap_s:
            self._accrue(last, obs)
        self._count(obs)
        self._last = obs

    def _accrue(self, last: Observation, obs: Observation) -> None:
        """What `last` saw READY ran from `last.now` to `obs.now` (the replicas that are still
        READY at `obs`: one that left meanwhile is counted until `last` only, which loses at
        most one interval, never charges for time it did not run)."""
        now_ready = {(r.model, r.server) for r in obs.ready}
        running = [r for r in last.ready if (r.model, r.server) in now_ready]
        if not running:
            return
        server_used: dict[str, int] = {}
        for r in running:
            server_used[r.server] = server_used.get(r.server, 0) + r.memory_bytes
        for start, end in _split(last.now, obs.now):
            dt = end - start
            bucket = int(start // BUCKET_S) * BUCKET_S
            for r in running:
                meta = obs.models.get(r.model) or last.models.get(r.model)
                if meta is None:
                    continue
                row = UsageRow(bucket, r.model, meta.tenant, meta.tags)
                row.replica_s = dt
                row.memory_byte_s = r.memory_bytes * dt
                if r.server in obs.gpu_servers:
                    used = server_used[r.server]
                    row.gpu_s = dt * (r.memory_bytes / used if used > 0 else 1.0)
                self._book(row)

    def _count(self, obs: Observation) -> None:
        if obs.counters is None:
            return
        bucket = int(obs.now // BUCKET_S) * BUCKET_S
        for server, models in obs.counters.items():
            for model, cur in models.items():
                key = (server, model)
                prev = self._seen.get(key)
                self._seen[key] = cur
                meta = obs.models.get(model)
                if prev is None or meta is None:
                    continue  # the first sight of a counter is its baseline
                requests = cur.requests - prev.requests
                compute = cur.compute_us - prev.compute_us
                if requests < 0 or compute < 0:  # the server restarted: counters began anew
                    requests, compute = cur.requests, cur.compute_us
                if requests == 0 and compute == 0:
                    continue
                row = UsageRow(bucket, model, meta.tenant, meta.tags)
                row.requests, row.compute_us = requests, compute
                self._book(row)

    def _book(self, row: UsageRow) -> None:
        key = (row.bucket, row.model)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = UsageRow(row.bucket, row.model, row.tenant, row.tags)
            pending = self._pending[key]
        pending.add(row)
        total = self.totals.get(row.model)
        if total is None:
            total = self.totals[row.model] = UsageRow(0, row.model, row.tenant, row.tags)
        total.add(row)

    def pending(self) -> list[UsageRow]:
        """What accrued since the last `drain()` (not yet stored)."""
        return list(self._pending.values())

    def drain(self) -> list[UsageRow]:
        rows, self._pending = list(self._pending.values()), {}
        return rows

    def restore(self, rows: Iterable[UsageRow]) -> None:
        """Put rows back after a failed flush (they are added to what accrued meanwhile)."""
        for row in rows:
            key = (row.bucket, row.model)
            pending = self._pending.get(key)
            if pending is None:
                self._pending[key] = row
            else:
                pending.add(row)


def _split(start: float, end: float) -> list[tuple[float, float]]:
    """[start, end) cut at bucket boundaries."""
    out = []
    while start < end:
        edge = (math.floor(start / BUCKET_S) + 1) * BUCKET_S
        out.append((start, min(edge, end)))
        start = edge
    return out


class GroupBy(StrEnum):
    MODEL = "model"
    TENANT = "tenant"
    TAG = "tag"


NO_TENANT = "(none)"


def aggregate(rows: Iterable[UsageRow], by: GroupBy) -> list[dict[str, object]]:
    """Usage summed per model, per tenant, or per tag (`key=value`; a model with two tags
    counts in both groups, and one without tags in `(untagged)`), largest replica-seconds
    first. Memory is reported in GiB-hours; gpu_s stays None for groups that never ran on a
    GPU server."""
    groups: dict[str, UsageRow] = {}
    for row in rows:
        if by is GroupBy.MODEL:
            keys = [row.model]
        elif by is GroupBy.TENANT:
            keys = [row.tenant or NO_TENANT]
        else:
            keys = [f"{k}={v}" for k, v in sorted(row.tags.items())] or ["(untagged)"]
        for key in keys:
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = UsageRow(0, key)
            acc.add(row)
    out: list[dict[str, object]] = []
    for key, acc in sorted(groups.items(), key=lambda kv: (-kv[1].replica_s, kv[0])):
        out.append(
            {
                by.value: key,
                "replica_s": round(acc.replica_s, 3),
                "memory_gib_h": round(acc.memory_byte_s / GIB / 3600, 6),
                "gpu_s": None if acc.gpu_s is None else round(acc.gpu_s, 3),
                "requests": int(acc.requests),
                "compute_s": round(acc.compute_us / 1e6, 6),
            }
        )
    return out


def merge(stored: Iterable[UsageRow], pending: Iterable[UsageRow]) -> list[UsageRow]:
    """Stored rows plus what is not flushed yet, as one list of rows (one per bucket, model)."""
    out: dict[tuple[int, str], UsageRow] = {}
    for row in (*stored, *pending):
        key = (row.bucket, row.model)
        acc = out.get(key)
        if acc is None:
            out[key] = UsageRow(row.bucket, row.model, row.tenant, row.tags)
            acc = out[key]
        acc.add(row)
    return list(out.values())


class UsageStore(Protocol):
    async def add_usage(self, rows: Sequence[UsageRow]) -> None: ...

    async def usage(
        self, from_s: float, to_s: float, tenant: str | None = None
    ) -> Sequence[UsageRow]: ...

    async def prune_usage(self, before_s: float) -> int: ...
