"""Request arrivals: seeded generators and a replayed trace, as (time_s, model, tenant) tuples.

Every generator is a (possibly time-varying) Poisson stream over the whole fleet whose arrivals
pick a model by popularity: a superposition of per-model Poisson streams, generated lazily so a
day of 10,000 models never sits in memory.

- rate process: `poisson` (constant), `mmpp` (a two-state Markov-modulated Poisson process:
  bursts of `burst_factor` x the calm rate, exponential spells of `burst_mean_s` and
  `calm_mean_s`, mean rate kept at `rate_rps`), `diurnal` (1 + amplitude x sin over
  `period_s`); `steps` multiply any of them from given times on.
- timers: `timer_share` of the models (picked at random) fire on a fixed period (1 / their
  rate, 2% jitter, random phase) instead, like Azure Functions' timer triggers; rate changes
  (`mmpp`, `diurnal`, `steps`) apply to the Poisson part only.
- popularity: the groups' `weight`s, Zipf over models, or `azure`: the skew Shahrad et al.
  (ATC'20) measured on Azure Functions 2019: 45% of models invoked at most once an hour, the
  most popular 19% carrying ~99.6% of invocations (see `azure_rates`).

Trace format (`parse_trace`): CSV lines `timestamp_s,model[,tenant]`, seconds from the start of
the trace, non-decreasing; an optional header line starting with `timestamp`; `#` comments and
blank lines are skipped. Unknown models, bad numbers or time going backwards are errors naming
the line.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NoReturn

from controlplane.errors import FieldProblem, InvalidSpec
from controlplane.sim.scenario import WorkloadSpec

Arrival = tuple[float, int, int]  # (time_s, model index, tenant index)

RARE_SHARE = 0.45  # of models: invoked at most once an hour
TOP_SHARE = 0.19  # of models: carry nearly every invocation
MAX_TRACE_LINE = 1024
MAX_TENANTS = 100_000


def azure_rates(n: int, total_rps: float, rng: random.Random) -> list[float]:
    """Per-model rates (1/s) with the Azure Functions 2019 skew, shuffled over the models.

    The rarest 45% get a rate between once a day and once an hour; the middle 36% between once
    and four times an hour; the top 19% share what remains of `total_rps` in Zipf order. At
    `total_rps` of a few hundred or more the top 19% carry ~99.6% of requests, as in the trace;
    below that the fixed tail weighs more (the share is what it is, never forced).
    """
    if n <= 0:
        return []
    rare = round(RARE_SHARE * n)
    top = max(1, round(TOP_SHARE * n))
    middle = max(0, n - rare - top)
    rare = n - top - middle
    rates = [rng.uniform(1 / 86_400, 1 / 3_600) for _ in range(rare)]
    rates += [
        math.exp(rng.uniform(math.log(1 / 3_600), math.log(4 / 3_600))) for _ in range(middle)
    ]
    left = max(total_rps - sum(rates), 0.0)
    zipf = [1.0 / (k + 1) for k in range(top)]
    z = sum(zipf)
    floor = 4 / 3_600  # the top is never rarer than the middle
    rates += [max(left * w / z, floor) for w in zipf]
    rng.shuffle(rates)
    return rates


def weights_for(
    spec: WorkloadSpec, group_weights: Sequence[float], rng: random.Random
) -> list[float]:
    """Relative popularity of each model (any scale)."""
    n = len(group_weights)
    if spec.popularity == "zipf":
        w = [1.0 / (k + 1) ** spec.zipf_s for k in range(n)]
        rng.shuffle(w)
        return w
    if spec.popularity == "azure":
        return azure_rates(n, spec.rate_rps, rng)
    return list(group_weights)


class _RateProcess:
    """The fleet-wide arrival rate over time, with an upper bound for thinning."""

    __slots__ = ("_burst", "_next_switch", "_rng", "_steps", "base", "peak", "spec")

    def __init__(self, spec: WorkloadSpec, base_rps: float, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self._steps = sorted((s.at_s, s.factor) for s in spec.steps)
        peak_step = max([1.0, *(f for _, f in self._steps)])
        self.base = base_rps
        self._burst = False
        self._next_switch = math.inf
        if spec.kind == "mmpp":
            p = spec.burst_mean_s / (spec.burst_mean_s + spec.calm_mean_s)
            self.base = base_rps / (1 - p + p * spec.burst_factor)  # the calm rate
            self._next_switch = rng.expovariate(1 / spec.calm_mean_s)
            self.peak = self.base * spec.burst_factor * peak_step
        elif spec.kind == "diurnal":
            self.peak = base_rps * (1 + spec.amplitude) * peak_step
        else:
            self.peak = base_rps * peak_step

    def rate(self, t: float) -> float:
        spec = self.spec
        r = self.base
        if spec.kind == "mmpp":
            while t >= self._next_switch:
                self._burst = not self._burst
                mean = spec.burst_mean_s if self._burst else spec.calm_mean_s
                self._next_switch += self._rng.expovariate(1 / mean)
            if self._burst:
                r *= spec.burst_factor
        elif spec.kind == "diurnal":
            r *= 1 + spec.amplitude * math.sin(2 * math.pi * t / spec.period_s)
        if self._steps:
            i = bisect.bisect_right(self._steps, (t, math.inf))
            if i:
                r *= self._steps[i - 1][1]
        return r


def synthetic(
    spec: WorkloadSpec, weights: Sequence[float], duration_s: float, rng: random.Random
) -> Iterator[Arrival]:
    """Arrivals until `duration_s` at `spec.rate_rps` on average, split by `weights`; with
    `timer_share`, that share of models (picked by `rng`) fires periodically instead."""
    total = sum(weights)
    if spec.timer_share <= 0 or total <= 0 or spec.rate_rps <= 0:
        return _poisson(spec, weights, duration_s, rng)
    n = len(weights)
    timers = set(rng.sample(range(n), round(spec.timer_share * n)))
    periods = [(m, total / (weights[m] * spec.rate_rps)) for m in sorted(timers) if weights[m] > 0]
    rest = [0.0 if m in timers else w for m, w in enumerate(weights)]
    share = sum(rest) / total
    poisson_spec = spec.model_copy(update={"rate_rps": spec.rate_rps * share})
    timer_rng = random.Random(rng.random())
    return heapq.merge(
        _poisson(poisson_spec, rest, duration_s, rng),
        _timers(periods, duration_s, timer_rng, spec.tenants),
    )


def _timers(
    periods: Sequence[tuple[int, float]], duration_s: float, rng: random.Random, tenants: int
) -> Iterator[Arrival]:
    heap = [(rng.uniform(0, p), m, p) for m, p in periods]
    heapq.heapify(heap)
    while heap:
        t, m, p = heap[0]
        if t >= duration_s:
            return
        yield t, m, (int(rng.random() * tenants) if tenants > 1 else 0)
        heapq.heapreplace(heap, (t + p * rng.uniform(0.98, 1.02), m, p))


def _poisson(
    spec: WorkloadSpec, weights: Sequence[float], duration_s: float, rng: random.Random
) -> Iterator[Arrival]:
    cum = list(itertools.accumulate(weights))
    total_w = cum[-1] if cum else 0.0
    if total_w <= 0 or spec.rate_rps <= 0:
        return
    proc = _RateProcess(spec, spec.rate_rps, rng)
    peak = proc.peak
    if peak <= 0:
        return
    exact = spec.kind == "poisson" and not spec.steps
    tenants = spec.tenants
    expo, rnd, pick = rng.expovariate, rng.random, bisect.bisect_right
    last = len(cum) - 1
    t = 0.0
    while True:
        t += expo(peak)
        if t >= duration_s:
            return
        if not exact and rnd() * peak > proc.rate(t):
            continue  # thinning: a candidate the current rate does not keep
        m = pick(cum, rnd() * total_w)
        yield t, (m if m <= last else last), (int(rnd() * tenants) if tenants > 1 else 0)


def parse_trace(
    lines: Iterable[str], models: Mapping[str, int], source: str = "trace"
) -> Iterator[Arrival]:
    """Replay `timestamp_s,model[,tenant]` lines; see the module doc for the format."""
    tenants: dict[str, int] = {}
    prev = 0.0
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if no == 1 and line.lower().startswith("timestamp"):
            continue
        if len(line) > MAX_TRACE_LINE:
            _bad(source, no, f"line longer than {MAX_TRACE_LINE} characters")
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (2, 3):
            _bad(source, no, f"expected `timestamp_s,model[,tenant]`, got {len(parts)} fields")
        try:
            t = float(parts[0])
        except ValueError:
            _bad(source, no, f"timestamp {parts[0][:40]!r} is not a number of seconds")
        if not math.isfinite(t) or t < 0:
            _bad(source, no, f"timestamp {parts[0][:40]!r} must be a finite number >= 0")
        if t < prev:
            _bad(source, no, f"timestamp {t} goes back in time (previous {prev}); sort the trace")
        m = models.get(parts[1])
        if m is None:
            _bad(source, no, f"model {parts[1][:80]!r} is not in the scenario's models")
        tenant = 0
        if len(parts) == 3:
            tenant = tenants.setdefault(parts[2], len(tenants))
            if len(tenants) > MAX_TENANTS:
                _bad(source, no, f"more than {MAX_TENANTS} tenants")
        prev = t
        yield t, m, tenant


def _bad(source: str, no: int, message: str) -> NoReturn:
    raise InvalidSpec([FieldProblem(f"line {no}", message)], subject=source)
