"""Planner at fleet scale: 10,000 models on 1,000 servers (pure, no servers needed).

Reports the time of a full plan (empty fleet → placed), of an incremental plan after 1% of the
models change (demand or footprint), the moves that change caused, and packing quality against a
first-fit baseline (replicas in registration order onto the first server with room).

    .venv/bin/python -m benchmarks.planner_scale [--models 10000] [--servers 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace

from controlplane.placement import ModelView, ServerView, Snapshot, plan

GiB = 1 << 30


def make_fleet(
    models: int, servers: int, seed: int, mix: str = "lognormal"
) -> tuple[list[ServerView], list[ModelView]]:
    rng = random.Random(seed)
    fleet = [ServerView(f"gpu-{i:04d}", 32 * GiB, labels={"gpu": "L40S"}) for i in range(servers)]
    out = []
    for i in range(models):
        if mix == "chunky":  # few large sizes: fragmentation-prone, where packing order matters
            mem = rng.choice([5, 7, 9, 11, 13, 17]) * GiB // 2
        else:
            mem = int(min(60, max(0.25, rng.lognormvariate(0.8, 0.9))) * GiB)
        floor = rng.choices([0, 1, 2], weights=[55, 38, 7])[0]
        out.append(
            ModelView(
                name=f"model-{i:05d}",
                memory_bytes=mem,
                min_replicas=floor,
                max_replicas=max(floor, 3),
                wanted=rng.choices([0, 1, 2], weights=[60, 30, 10])[0],
                priority=rng.choices([0, 1, 2], weights=[80, 15, 5])[0],
                last_used=rng.uniform(0, 86_400),
            )
        )
    return fleet, out


def first_fit(servers: list[ServerView], models: list[ModelView]) -> tuple[int, int]:
    """Replicas placed and bytes placed by first-fit in registration order (anti-affinity kept)."""
    free = [s.capacity_bytes for s in servers]
    placed = placed_bytes = 0
    for m in models:
        used: set[int] = set()
        for _ in range(m.target):
            for i, f in enumerate(free):
                if f >= m.memory_bytes and i not in used:
                    free[i] -= m.memory_bytes
                    used.add(i)
                    placed += 1
                    placed_bytes += m.memory_bytes
                    break
    return placed, placed_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--servers", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--mix", choices=["lognormal", "chunky"], default="lognormal")
    args = ap.parse_args()

    servers, models = make_fleet(args.models, args.servers, args.seed, args.mix)
    demand = sum(m.target * m.memory_bytes for m in models)
    capacity = sum(s.capacity_bytes for s in servers)
    print(
        f"{args.models} models, {args.servers} servers; demanded replicas "
        f"{sum(m.target for m in models)}, {demand / capacity:.0%} of fleet memory"
    )

    full_times, full = [], None
    for _ in range(args.repeat):
        t = time.perf_counter()
        full = plan(Snapshot(tuple(servers), tuple(models), {}, now=0.0))
        full_times.append(time.perf_counter() - t)
    assert full is not None

    rng = random.Random(args.seed + 1)
    inc_times, moves, changed_counts, collateral = [], [], [], []
    for _ in range(args.repeat):
        changed = rng.sample(range(len(models)), len(models) // 100)
        models2 = list(models)
        for i in changed:
            m = models2[i]
            if rng.random() < 0.5:
                models2[i] = replace(m, wanted=(m.wanted + 1) % 3)
            else:
                models2[i] = replace(m, memory_bytes=int(m.memory_bytes * rng.uniform(0.8, 1.2)))
        t = time.perf_counter()
        inc = plan(Snapshot(tuple(servers), tuple(models2), full.placement, now=0.0))
        inc_times.append(time.perf_counter() - t)
        names = {models2[i].name for i in changed}
        moves.append(len(inc.actions))
        changed_counts.append(len(names))
        # Collateral: models that did not change but were loaded or unloaded anyway.
        collateral.append(len({a.model for a in inc.actions} - names))

    ff_replicas, ff_bytes = first_fit(servers, models)
    bfd_replicas = sum(len(v) for v in full.placement.values())
    bfd_bytes = sum(full.used_bytes.values())
    floors_total = sum(m.min_replicas for m in models)
    floors_met = sum(min(len(full.placement.get(m.name, ())), m.min_replicas) for m in models)

    def ms(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1e3:.1f} ms (min {min(xs) * 1e3:.1f}, max {max(xs) * 1e3:.1f})"

    print(f"full plan:        {ms(full_times)}   goal < 1000 ms")
    print(f"incremental plan: {ms(inc_times)}   goal < 50 ms")
    print(
        f"moves per 1% change: {statistics.mean(moves):.0f} load/unload actions for "
        f"{statistics.mean(changed_counts):.0f} changed models; unchanged models touched: "
        f"{statistics.mean(collateral):.1f} (goal: moves <= changed)"
    )
    print(
        f"best-fit decreasing: {bfd_replicas} replicas, {bfd_bytes / capacity:.1%} of memory, "
        f"floors met {floors_met}/{floors_total}"
    )
    print(f"first-fit baseline:  {ff_replicas} replicas, {ff_bytes / capacity:.1%} of memory")
    print(
        f"ratio (BFD / first-fit): replicas {bfd_replicas / ff_replicas:.3f}, "
        f"bytes {bfd_bytes / ff_bytes:.3f}"
    )


if __name__ == "__main__":
    main()
