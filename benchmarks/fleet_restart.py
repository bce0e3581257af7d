"""Fleet-wide restart, measured: every server of a real local fleet SIGKILLed at once under
gateway traffic (tests/integration/fleet_restart.py does the work).

Reports, per round: the peak of loads in flight against the caps, the seconds until every floor
is READY again, what the gateway's clients got meanwhile (answers by status, the Retry-After of
each 503, the longest a cold request was held) and the answer to one request per floor after.

    .venv/bin/python -m benchmarks.fleet_restart [--servers 3] [--floors 6] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from tests.integration.fleet_restart import RestartReport, run_fleet_restart


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=3, help="Triton servers")
    parser.add_argument("--floors", type=int, default=6, help="models with a floor of 1")
    parser.add_argument("--clients", type=int, default=8, help="concurrent gateway clients")
    parser.add_argument("--max-concurrent-loads", type=int, default=2, help="fleet-wide cap")
    parser.add_argument("--cold-hold-s", type=float, default=3.0, help="gateway cold hold")
    parser.add_argument("--rounds", type=int, default=3, help="independent runs")
    parser.add_argument("--quick", action="store_true", help="2 servers, 3 floors, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.servers, args.floors, args.rounds = 2, 3, 1
    logging.basicConfig(level=logging.ERROR)
    reports: list[RestartReport] = []
    failed = 0
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            r = asyncio.run(
                run_fleet_restart(
                    Path(tmp),
                    servers=args.servers,
                    floors=args.floors,
                    clients=args.clients,
                    max_concurrent_loads=args.max_concurrent_loads,
                    cold_hold_s=args.cold_hold_s,
                )
            )
        reports.append(r)
        ok = (
            r.peak_loads <= r.max_concurrent_loads
            and r.peak_loads_per_server <= r.max_loads_per_server
            and not r.transport_errors
            and not r.unexpected
            and r.after_recovery == {200: r.floors}
            and "missing" not in r.retry_after
        )
        failed += not ok
        print(
            f"round {i}: {'ok' if ok else 'FAILED'}; floors READY {r.first_ready_s:.1f} s after "
            f"start, {r.recovery_s:.1f} s after the kill; loads after the kill "
            f"{r.loads_after_kill}, peak in flight {r.peak_loads} (cap {r.max_concurrent_loads}), "
            f"per server {r.peak_loads_per_server} (cap {r.max_loads_per_server})"
        )
        print(
            f"  clients: {dict(sorted(r.answers.items()))}; 503 Retry-After "
            f"{dict(r.retry_after)}; longest cold hold {r.longest_cold_hold_s:.2f} s "
            f"(limit {r.cold_hold_s} s); transport errors {len(r.transport_errors)}; "
            f"after recovery {dict(r.after_recovery)}"
        )
        for line in (r.transport_errors + r.unexpected)[:5]:
            print(f"  ! {line}")
    rec = [r.recovery_s for r in reports]
    print(
        f"{args.servers} servers, {args.floors} floors: recovery median "
        f"{statistics.median(rec):.1f} s, max {max(rec):.1f} s over {len(rec)} round(s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
