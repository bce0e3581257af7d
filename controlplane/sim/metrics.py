"""What a run measured: outcomes, latencies, cold starts, memory and servers, over time.

Latency quantiles of the whole run are exact (every latency is kept in a float array, 8 bytes
a request); the time series uses the gateway's own log-linear buckets
(`controlplane.loadstats`, ~9% resolution) per `interval_s`. Memory and servers in use are
integrated exactly between changes, so byte-seconds do not depend on the sampling interval.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

from controlplane.loadstats import N_BUCKETS, bucket_of, quantile
from controlplane.sim.serving import Outcome


class _Bucket:
    __slots__ = ("arrivals", "cold", "counts", "done", "evictions", "loads", "outcomes")

    def __init__(self) -> None:
        self.arrivals = 0
        self.cold = 0
        self.loads = 0
        self.evictions = 0
        self.done = 0
        self.outcomes = [0, 0, 0, 0]
        self.counts = array("I", bytes(4 * N_BUCKETS))


class Metrics:
    def __init__(self, interval_s: float, duration_s: float) -> None:
        self.interval_s = interval_s
        self.buckets = [_Bucket() for _ in range(max(1, math.ceil(duration_s / interval_s)) + 1)]
        self.latencies = array("d")
        self.outcomes = [0, 0, 0, 0]
        self.arrivals = 0
        self.cold_holds = 0  # requests that found no ready replica and waited for a load
        self.loads = 0
        self.load_failures = 0
        self.unloads = 0
        self.evictions = 0
        self.server_failures = 0
        self.plans = 0
        self.plan_actions = 0
        self.ticks = 0
        self.retries = 0
        self.batching_changes = 0  # queue delays the autopilot retuned
        self.tenants: dict[int, list[int]] = {}
        self.per_tenant = False  # set when the workload names more than one tenant
        # exact integrals, updated on change
        self._at = 0.0
        self.used_bytes = 0
        self.servers_in_use = 0
        self.replicas = 0
        self.byte_s = 0.0
        self.server_s = 0.0
        self.replica_s = 0.0
        self.samples: list[tuple[float, int, int, int, float, float]] = []
        self._last_sample = (0.0, 0.0, 0.0)

    def bucket(self, now: float) -> _Bucket:
        i = int(now / self.interval_s)
        b = self.buckets
        return b[i] if i < len(b) else b[-1]

    # --- requests --------------------------------------------------------------------
    def arrived(self, now: float) -> None:
        self.arrivals += 1
        self.bucket(now).arrivals += 1

    def cold(self, now: float) -> None:
        self.cold_holds += 1
        self.bucket(now).cold += 1

    def ended(self, now: float, outcome: Outcome, latency_s: float, tenant: int) -> None:
        self.outcomes[outcome] += 1
        b = self.bucket(now)
        b.outcomes[outcome] += 1
        if outcome is Outcome.COMPLETED:
            self.latencies.append(latency_s)
            b.counts[bucket_of(latency_s)] += 1
            b.done += 1
        if self.per_tenant:
            self.tenants.setdefault(tenant, [0, 0, 0, 0])[outcome] += 1

    # --- fleet -----------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        dt = now - self._at
        if dt > 0:
            self.byte_s += self.used_bytes * dt
            self.server_s += self.servers_in_use * dt
            self.replica_s += self.replicas * dt
            self._at = now

    def memory(self, now: float, delta_bytes: int) -> None:
        self._advance(now)
        self.used_bytes += delta_bytes

    def servers(self, now: float, delta: int) -> None:
        self._advance(now)
        self.servers_in_use += delta

    def replica_count(self, now: float, delta: int) -> None:
        self._advance(now)
        self.replicas += delta

    def sample(self, now: float) -> None:
        """Close one time-series interval: values now and means over the interval."""
        self._advance(now)
        b0, s0, _r0 = self._last_sample
        span = self.interval_s
        self.samples.append(
            (
                now,
                self.used_bytes,
                self.servers_in_use,
                self.replicas,
                (self.byte_s - b0) / span,
                (self.server_s - s0) / span,
            )
        )
        self._last_sample = (self.byte_s, self.server_s, self.replica_s)

    # --- the report ------------------------------------------------------------------
    def report(self, now: float) -> dict[str, Any]:
        self._advance(now)
        lat = sorted(self.latencies)
        n = len(lat)

        def q(p: float) -> float | None:
            return round(lat[min(n - 1, max(0, math.ceil(p * n) - 1))] * 1000, 3) if n else None

        ended = sum(self.outcomes)
        series = []
        for i, b in enumerate(self.buckets[: len(self.samples)]):
            at, used, servers, replicas, mean_bytes, mean_servers = self.samples[i]
            done = b.done
            series.append(
                {
                    "t_s": round(at, 3),
                    "arrivals": b.arrivals,
                    "completed": b.outcomes[Outcome.COMPLETED],
                    "failed": b.outcomes[Outcome.FAILED],
                    "refused": b.outcomes[Outcome.REFUSED],
                    "timed_out": b.outcomes[Outcome.TIMED_OUT],
                    "cold_holds": b.cold,
                    "loads": b.loads,
                    "evictions": b.evictions,
                    "p50_ms": _ms(quantile(list(b.counts), done, 0.50)),
                    "p95_ms": _ms(quantile(list(b.counts), done, 0.95)),
                    "p99_ms": _ms(quantile(list(b.counts), done, 0.99)),
                    "memory_gib": round(used / (1 << 30), 3),
                    "mean_memory_gib": round(mean_bytes / (1 << 30), 3),
                    "servers_in_use": servers,
                    "mean_servers_in_use": round(mean_servers, 3),
                    "replicas": replicas,
                }
            )
        return {
            "requests": {
                "arrived": self.arrivals,
                "completed": self.outcomes[Outcome.COMPLETED],
                "failed": self.outcomes[Outcome.FAILED],
                "refused": self.outcomes[Outcome.REFUSED],
                "timed_out": self.outcomes[Outcome.TIMED_OUT],
                "unfinished": self.arrivals - ended,
                "retries": self.retries,
            },
            "latency_ms": {
                "mean": round(sum(lat) / n * 1000, 3) if n else None,
                "p50": q(0.50),
                "p95": q(0.95),
                "p99": q(0.99),
                "p999": q(0.999),
                "max": round(lat[-1] * 1000, 3) if n else None,
            },
            "cold_holds": self.cold_holds,
            "cold_holds_per_10k": round(self.cold_holds / self.arrivals * 10_000, 2)
            if self.arrivals
            else 0.0,
            "loads": self.loads,
            "load_failures": self.load_failures,
            "unloads": self.unloads,
            "evictions": self.evictions,
            "server_failures": self.server_failures,
            "memory_gib_s": round(self.byte_s / (1 << 30), 1),
            "server_s": round(self.server_s, 1),
            "replica_s": round(self.replica_s, 1),
            "mean_servers_in_use": round(self.server_s / now, 3) if now > 0 else 0.0,
            "reconciler": {"ticks": self.ticks, "plans": self.plans, "actions": self.plan_actions},
            "batching_changes": self.batching_changes,
            "tenants": {str(k): v for k, v in sorted(self.tenants.items())},
            "series": series,
        }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)
