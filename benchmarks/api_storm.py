"""Storms of concurrent lifecycle calls on one model and on 50, and the long lifecycle
state machine: the control plane's concurrency proof at full size.

Storms: `--ops` register/update/delete/ensure calls from `--clients` HTTP clients against the
real control API (uvicorn, SQLite, registry, reconciler loop) over the instrumented in-memory
fleet (tests/api/storm.py lists the checks). The state machine: `--machine-examples` runs of up
to 40 steps of tests/unit/lifecycle.py over the in-memory ports.

    .venv/bin/python -m benchmarks.api_storm [--ops 1000] [--clients 50] [--machine-examples 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.api.storm import run_storm
from tests.unit.lifecycle import LifecycleMachine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000, help="calls per storm")
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients")
    parser.add_argument("--seeds", type=int, default=3, help="storms per size, one seed each")
    parser.add_argument("--machine-examples", type=int, default=1000, help="state machine runs")
    parser.add_argument("--quick", action="store_true", help="200 calls, 1 seed, 100 runs")
    args = parser.parse_args()
    if args.quick:
        args.ops, args.seeds, args.machine_examples = 200, 1, 100
    failed = 0
    for models in (1, 50):
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    r = asyncio.run(
                        run_storm(
                            Path(tmp), ops=args.ops, models=models, clients=args.clients, seed=seed
                        )
                    )
                except AssertionError as exc:
                    failed += 1
                    print(f"storm models={models} seed={seed}: FAILED {exc}")
                    continue
            acked = sum(len(a) for a in r.acks.values())
            print(
                f"storm models={models} seed={seed}: {r.ops} calls in {r.seconds:.1f} s "
                f"({r.ops / r.seconds:.0f}/s), {acked} acknowledged changes, "
                f"errors {len(r.errors)}, settled in {r.settle_s:.2f} s"
            )
            print(f"  answers {dict(sorted(r.by_status.items()))}")
            print(f"  fleet {r.control}")
            print(f"  checks {dict(r.checks)}")
            failed += bool(r.errors)
    LifecycleMachine.stats.clear()
    start = time.monotonic()
    try:
        run_state_machine_as_test(
            LifecycleMachine,
            settings=settings(
                max_examples=args.machine_examples,
                stateful_step_count=40,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
        verdict = "passed"
    except Exception as exc:
        failed += 1
        verdict = f"FAILED {exc}"
    stats = LifecycleMachine.stats
    ops = {k[3:]: v for k, v in sorted(stats.items()) if k.startswith("op ")}
    checks = {k[6:]: v for k, v in sorted(stats.items()) if k.startswith("check ")}
    print(
        f"state machine: {args.machine_examples} runs x up to 40 steps in "
        f"{time.monotonic() - start:.0f} s: {verdict}"
    )
    print(f"  operations {sum(ops.values())} {ops}")
    print(f"  invariants checked {sum(checks.values())} {checks}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
