"""Keep-alive policies on a replayed skewed trace: cold starts against memory held.

    PYTHONPATH=. python -m benchmarks.keepalive_trace [--models 200] [--hours 24] [--seed 1]

A synthetic day of requests for `--models` scale-to-zero models (`min_replicas: 0`), shaped
like the Azure Functions trace that "Serverless in the Wild" (Shahrad et al., ATC'20)
characterised: Zipf-skewed popularity; about half the models driven by timers (a fixed period
from 1 to 60 minutes, with 2% jitter), a third bursty (ON spells of a few requests a second,
OFF gaps log-normal around 20 minutes), the rest Poisson. No real trace can be fetched here;
the generator is seeded and printed with the results. Every model has the same size, so
memory is counted in model-seconds.

Policies, side by side on the same trace (all through the same simulation loop):
- fixed-10m: keep a model loaded 10 minutes after its last request (a one-size keep-alive);
- lru-K: no timer; keep everything until the fleet's room (K models, sized to the hybrid
  policy's mean footprint) runs out, then evict the least recently used;
- hybrid: `controlplane.keepalive` (per-model idle-time histogram: pre-warm + keep-alive
  windows; the fixed keep-alive until the histogram is representative), exactly the function
  the autopilot calls.

Reported: cold starts per 10,000 requests, model-seconds loaded (and as a share of fixed-10m),
and the ratio of each to the hybrid policy.
"""

from __future__ import annotations

import argparse
import math
import random
from collections import OrderedDict
from dataclasses import dataclass

from controlplane import keepalive


def trace(models: int, hours: float, seed: int) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    horizon = hours * 3600
    events: list[tuple[float, int]] = []
    weights = [1 / (i + 1) ** 1.0 for i in range(models)]
    scale = 20000 / sum(weights)  # ~20k requests a day from the Poisson/bursty share
    for m in range(models):
        kind = rng.random()
        if kind < 0.5:  # timer
            period = rng.choice([60, 120, 300, 600, 900, 1800, 3600])
            t = rng.uniform(0, period)
            while t < horizon:
                events.append((t, m))
                t += period * rng.uniform(0.98, 1.02)
        elif kind < 0.83:  # bursty ON/OFF
            t = rng.uniform(0, 3600)
            while t < horizon:
                for _ in range(rng.randint(1, 20)):
                    events.append((t, m))
                    t += rng.expovariate(2.0)
                t += rng.lognormvariate(math.log(1200), 0.8)
        else:  # Poisson, by popularity
            rate = max(weights[m] * scale / horizon, 1 / 7200)
            t = rng.expovariate(rate)
            while t < horizon:
                events.append((t, m))
                t += rng.expovariate(rate)
    events.sort()
    return events


@dataclass
class Result:
    name: str
    requests: int = 0
    cold: int = 0
    model_seconds: float = 0.0

    @property
    def cold_per_10k(self) -> float:
        return self.cold / self.requests * 10_000 if self.requests else 0.0


def simulate_timed(events: list[tuple[float, int]], models: int, policy: str) -> Result:
    """Keep-alive policies decided per model after each request (fixed or hybrid)."""
    res = Result(policy)
    hists = [keepalive.IdleHistogram() for _ in range(models)]
    last: list[float | None] = [None] * models
    loaded_until: list[tuple[float, float] | None] = [None] * models  # (from, until)
    for t, m in events:
        res.requests += 1
        prev = last[m]
        window = loaded_until[m]
        warm = window is not None and window[0] <= t < window[1]
        if not warm:
            res.cold += 1
        # Memory held since the previous request, up to now or the window's end.
        if window is not None and prev is not None:
            start, end = window
            res.model_seconds += max(0.0, min(end, t) - start)
        if prev is not None and t - prev >= 2.0:
            hists[m].add(t - prev)
        last[m] = t
        if policy == "fixed-10m":
            w = keepalive.Windows(0.0, 600.0, "fixed")
        else:
            w = keepalive.windows(hists[m], 600.0)
        # Loaded from the request (or, with a pre-warm window, from the point it ends) until
        # the keep-alive runs out; the next request settles how much of that was used.
        loaded_until[m] = (t + w.prewarm_s, t + w.prewarm_s + w.keepalive_s)
    horizon = events[-1][0] if events else 0.0
    for m in range(models):
        window = loaded_until[m]
        if window is not None:
            res.model_seconds += max(0.0, min(window[1], horizon) - window[0])
    return res


def simulate_lru(events: list[tuple[float, int]], capacity: int) -> Result:
    res = Result(f"lru-{capacity}")
    loaded: OrderedDict[int, float] = OrderedDict()  # model -> loaded since
    for t, m in events:
        res.requests += 1
        if m in loaded:
            loaded.move_to_end(m)
            continue
        res.cold += 1
        if len(loaded) >= capacity:
            _, since = loaded.popitem(last=False)
            res.model_seconds += t - since
        loaded[m] = t
    horizon = events[-1][0] if events else 0.0
    res.model_seconds += sum(horizon - since for since in loaded.values())
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    events = trace(args.models, args.hours, args.seed)
    hours = args.hours
    fixed = simulate_timed(events, args.models, "fixed-10m")
    hybrid = simulate_timed(events, args.models, "hybrid")
    mean_loaded = max(1, round(hybrid.model_seconds / (hours * 3600)))
    lru = simulate_lru(events, mean_loaded)
    print(
        f"trace: {len(events)} requests, {args.models} models, {hours:g} h, seed {args.seed}; "
        f"LRU room = hybrid's mean loaded models ({mean_loaded})"
    )
    print(f"{'policy':<12}{'cold/10k':>10}{'model-hours':>13}{'vs hybrid: cold':>17}{'memory':>8}")
    for r in (fixed, lru, hybrid):
        print(
            f"{r.name:<12}{r.cold_per_10k:>10.1f}{r.model_seconds / 3600:>13.1f}"
            f"{r.cold_per_10k / max(hybrid.cold_per_10k, 1e-9):>17.2f}"
            f"{r.model_seconds / max(hybrid.model_seconds, 1e-9):>8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
