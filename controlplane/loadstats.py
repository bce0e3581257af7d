"""Per-model request statistics over sliding windows: what the autopilot reads about demand.

The gateway sees every request; it records each outcome here (`record`, `reject`) and the
autopilot asks for a `Window` over its stable and panic spans (`window`). Storage is a ring of
one-second slots per model, each with a log-linear latency histogram (8 buckets per doubling,
0.5 ms to ~65 s, so a quantile is within ~9% of the truth), so a query costs the same at 10 or
10,000 requests per second and memory is bounded by `horizon_s` x buckets x models.

Pure: no clock of its own (callers pass `now`), no I/O, no locks (one event loop writes it).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

_BASE_S = 0.0005
_PER_DOUBLING = 8
N_BUCKETS = _PER_DOUBLING * 17  # up to 0.5 ms x 2**17 ~ 65 s; slower lands in the last bucket
HORIZON_S = 120  # the longest window a query can ask for
BOUNDS_S = tuple(_BASE_S * 2 ** ((i + 1) / _PER_DOUBLING) for i in range(N_BUCKETS))


def bucket_of(latency_s: float) -> int:
    """The histogram bucket whose upper bound is the first at or above `latency_s`."""
    if latency_s <= _BASE_S:
        return 0
    i = math.ceil(math.log2(latency_s / _BASE_S) * _PER_DOUBLING) - 1
    return min(max(i, 0), N_BUCKETS - 1)


@dataclass(frozen=True, slots=True)
class Window:
    """One model's requests over the last `span_s` seconds, as of `at`."""

    at: float
    span_s: float
    completed: int = 0  # answered by a replica (any outcome)
    errors: int = 0  # failed: replica errors, timeouts, no replica (not admission refusals)
    rejected: int = 0  # refused by admission (429) before reaching a replica
    latency_sum_s: float = 0.0
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None

    @property
    def arrivals(self) -> int:
        return self.completed + self.rejected

    @property
    def rate_rps(self) -> float:
        """Offered load: everything that arrived, admitted or not."""
        return self.arrivals / self.span_s if self.span_s > 0 else 0.0

    @property
    def throughput_rps(self) -> float:
        return self.completed / self.span_s if self.span_s > 0 else 0.0

    @property
    def mean_s(self) -> float | None:
        return self.latency_sum_s / self.completed if self.completed else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.completed if self.completed else 0.0

    @property
    def mean_inflight(self) -> float:
        """Little's law: throughput x mean latency."""
        return self.latency_sum_s / self.span_s if self.span_s > 0 else 0.0


class _Slot:
    __slots__ = ("completed", "counts", "errors", "rejected", "sec", "total_s")

    def __init__(self) -> None:
        self.reset(-1)

    def reset(self, sec: int) -> None:
        self.sec = sec
        # 4-byte counters, allocated on the first completion of the second: a quiet model's
        # ring costs a few hundred bytes, a busy one's ~65 KB (120 s x 136 buckets).
        self.counts: array[int] | None = None
        self.completed = self.errors = self.rejected = 0
        self.total_s = 0.0


class _Ring:
    __slots__ = ("last_sec", "slots")

    def __init__(self, horizon: int) -> None:
        self.slots = [_Slot() for _ in range(horizon)]
        self.last_sec = -1

    def slot(self, now: float) -> _Slot:
        sec = int(now)
        s = self.slots[sec % len(self.slots)]
        if s.sec != sec:
            s.reset(sec)
        self.last_sec = max(self.last_sec, sec)
        return s


class RequestLog:
    """Sliding per-model request statistics; models come and go with `retain`."""

    def __init__(self, horizon_s: int = HORIZON_S) -> None:
        if horizon_s < 1:
            raise ValueError("horizon_s must be at least 1")
        self.horizon_s = horizon_s
        self._rings: dict[str, _Ring] = {}

    def _ring(self, model: str) -> _Ring:
        ring = self._rings.get(model)
        if ring is None:
            ring = self._rings[model] = _Ring(self.horizon_s)
        return ring

    def record(self, model: str, latency_s: float, ok: bool, now: float) -> None:
        s = self._ring(model).slot(now)
        if s.counts is None:
            s.counts = array("I", bytes(4 * N_BUCKETS))
        s.counts[bucket_of(latency_s)] += 1
        s.completed += 1
        s.total_s += latency_s
        if not ok:
            s.errors += 1

    def reject(self, model: str, now: float) -> None:
        self._ring(model).slot(now).rejected += 1

    def models(self) -> list[str]:
        return list(self._rings)

    def retain(self, models: Iterable[str]) -> None:
        """Forget every model not in `models` (the registry's names): memory stays bounded."""
        keep = set(models)
        for name in [m for m in self._rings if m not in keep]:
            del self._rings[name]

    def last_request_at(self, model: str) -> float | None:
        ring = self._rings.get(model)
        return float(ring.last_sec) if ring is not None and ring.last_sec >= 0 else None

    def window(self, model: str, span_s: float, now: float) -> Window:
        """Requests of the last `span_s` seconds (whole seconds, the current one included)."""
        span = max(1, min(math.ceil(span_s), self.horizon_s))
        ring = self._rings.get(model)
        if ring is None:
            return Window(at=now, span_s=float(span))
        top = int(now)
        counts = [0] * N_BUCKETS
        completed = errors = rejected = 0
        total = 0.0
        for s in ring.slots:
            if top - span < s.sec <= top:
                completed += s.completed
                errors += s.errors
                rejected += s.rejected
                total += s.total_s
                if s.counts is not None:
                    for i, n in enumerate(s.counts):
                        if n:
                            counts[i] += n
        # The current second is only partly over: count the span as elapsed time, not slots.
        elapsed = (span - 1) + (now - top)
        return Window(
            at=now,
            span_s=max(elapsed, 1e-3),
            completed=completed,
            errors=errors,
            rejected=rejected,
            latency_sum_s=total,
            p50_s=quantile(counts, completed, 0.50),
            p95_s=quantile(counts, completed, 0.95),
            p99_s=quantile(counts, completed, 0.99),
        )


def quantile(counts: list[int], total: int, q: float) -> float | None:
    """The upper bound of the bucket holding the `q` quantile; None without observations."""
    if total <= 0:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return BOUNDS_S[i]
    return BOUNDS_S[-1]
