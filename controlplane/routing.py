"""Replica choice: which ready replica of a model gets the next request.

Pure policies over a frozen view of each replica (`ReplicaStats`), the time `now` and an `rng`;
the gateway (`adapters/gateway`) keeps the live counters and only applies the choice, so the
policies can be tested exhaustively and simulated without servers.

- `RoundRobin`: the baseline; ignores load.
- `LeastRequest`: power-of-two-choices on requests in flight (Envoy's LEAST_REQUEST).
- `HotCold` (the default): Prequal's hot-cold lexicographic rule (Wydrowski et al., NSDI'24)
  over the gateway's own requests-in-flight (RIF) and a peak-EWMA latency (Finagle/Linkerd).
  A replica is *hot* when its RIF is above the `hot_quantile` of the candidates' RIFs; among the
  cold ones (never none: the lowest RIF is at or under any quantile) the lowest expected wait
  wins (peak-EWMA latency x (RIF + 1)). Triton's own signals (pending requests, queue time)
  raise a replica's RIF and latency when they are fresh (other clients load that server too);
  stale or missing signals fall back to the local view, never to an error. A stuck replica
  (SIGSTOP, GC pause) is caught twice: its RIF grows, and the age of its oldest outstanding
  request is taken as its latency as soon as that exceeds the EWMA.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ServerSignal:
    """What a Triton server's own metrics said about it, and when (`at`, monotonic seconds)."""

    at: float
    pending: float = 0.0  # nv_inference_pending_request_count, summed over models
    queue_s: float = 0.0  # mean queue time of recent requests (queue µs delta / count delta)
    latency_s: float = 0.0  # mean end-to-end time of recent requests on the server
    utilization: float = 0.0  # nv_cpu_utilization (0..1) or GPU utilization


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """One candidate replica as the gateway sees it at `now`."""

    key: str  # server id
    rif: int  # requests in flight from this gateway to the server (all models)
    latency_s: float | None  # peak-EWMA of this model's latency there; None before any reply
    oldest_inflight_s: float = 0.0  # age of the oldest request still outstanding there
    signal: ServerSignal | None = None


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    def choose(
        self, replicas: Sequence[ReplicaStats], *, now: float, rng: random.Random, seq: int
    ) -> int:
        """Index into `replicas` (never empty) of the replica to use; `seq` counts requests."""
        ...


def peak_ewma(prev: float | None, sample_s: float, dt_s: float, tau_s: float) -> float:
    """Finagle's peak-EWMA: jump up to a slow sample at once, decay towards fast ones over `tau_s`."""
    if prev is None or sample_s > prev:
        return sample_s
    w = math.exp(-max(dt_s, 0.0) / tau_s)
    return prev * w + sample_s * (1.0 - w)


@dataclass(frozen=True)
class RoundRobin:
    name: str = "round-robin"

    def choose(
        self, replicas: Sequence[ReplicaStats], *, now: float, rng: random.Random, seq: int
    ) -> int:
        return seq % len(replicas)


@dataclass(frozen=True)
class LeastRequest:
    """Two random choices, fewer requests in flight wins (all candidates when there are few)."""

    name: str = "least-request"
    choices: int = 2

    def choose(
        self, replicas: Sequence[ReplicaStats], *, now: float, rng: random.Random, seq: int
    ) -> int:
        n = len(replicas)
        if n == 1:
            return 0
        picks = rng.sample(range(n), min(self.choices, n))
        return min(picks, key=lambda i: replicas[i].rif)


@dataclass(frozen=True)
class HotCold:
    """Prequal's hot-cold lexicographic rule with a peak-EWMA latency; see the module doc."""

    name: str = "hot-cold"
    hot_quantile: float = 0.75  # RIF above this quantile of the candidates' RIFs is hot
    probes: int = 4  # candidates considered per request (all when there are fewer)
    signal_max_age_s: float = 5.0  # older Triton signals are ignored
    default_latency_s: float = 0.0  # latency assumed before a replica's first reply (optimistic)

    def effective(self, r: ReplicaStats, now: float) -> tuple[float, float]:
        """(RIF, latency) of `r` after folding in a fresh server signal and a stuck request."""
        rif = float(r.rif)
        lat = r.latency_s if r.latency_s is not None else self.default_latency_s
        if r.oldest_inflight_s > lat:
            lat = r.oldest_inflight_s
        s = r.signal
        if s is not None and 0.0 <= now - s.at <= self.signal_max_age_s:
            rif = max(rif, s.pending)
            lat = max(lat, s.latency_s, s.queue_s)
        return rif, lat

    def choose(
        self, replicas: Sequence[ReplicaStats], *, now: float, rng: random.Random, seq: int
    ) -> int:
        n = len(replicas)
        if n == 1:
            return 0
        idx = list(range(n)) if n <= self.probes else rng.sample(range(n), self.probes)
        eff = {i: self.effective(replicas[i], now) for i in idx}
        rifs = sorted(v[0] for v in eff.values())
        threshold = _quantile(rifs, self.hot_quantile)
        # The threshold is a quantile of these same RIFs, so the candidate with the lowest RIF
        # is always cold: Prequal's "all hot → lowest RIF" case cannot arise here (its probe
        # pool outlives a request; ours is the request's own candidates).
        cold = [i for i in idx if eff[i][0] <= threshold]
        # Ties go to a random candidate rather than the first, so equal replicas share load.
        rng.shuffle(cold)
        return min(cold, key=lambda i: eff[i][1] * (eff[i][0] + 1.0))


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty sorted sequence."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


POLICIES: dict[str, type[RoundRobin] | type[LeastRequest] | type[HotCold]] = {
    "round-robin": RoundRobin,
    "least-request": LeastRequest,
    "hot-cold": HotCold,
}


def make(name: str) -> Policy:
    """The policy called `name`; raises ValueError naming the known ones."""
    try:
        return POLICIES[name]()
    except KeyError as exc:
        raise ValueError(
            f"unknown routing policy {name!r}; choose one of {', '.join(sorted(POLICIES))}"
        ) from exc


@dataclass(frozen=True)
class OutlierRule:
    """Envoy-style consecutive-failure ejection: `failures` in a row eject for base x count."""

    failures: int = 3
    base_ejection_s: float = 5.0
    max_ejection_s: float = 60.0
    max_ejected_fraction: float = 0.5  # never eject more than this share of a model's replicas

    def ejection_s(self, times_ejected: int) -> float:
        return min(self.base_ejection_s * max(times_ejected, 1), self.max_ejection_s)


@dataclass(frozen=True)
class RetryBudget:
    """Finagle-style budget: retries may add `ratio` of recent requests, plus `min_per_s`."""

    ratio: float = 0.2
    min_per_s: float = 10.0
    window_s: float = 10.0

    def allows(self, requests_in_window: int, retries_in_window: int) -> bool:
        return retries_in_window < self.ratio * requests_in_window + self.min_per_s * self.window_s
