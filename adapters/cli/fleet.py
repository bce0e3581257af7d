"""`tritonfleet fleet status` and `tritonfleet explain`: what the fleet runs where, and why the
autopilot gave a model the replicas it has."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from adapters.cli.core import api_opts, call, gib, table

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers


def cmd_fleet_status(args: argparse.Namespace) -> int:
    fleet = call(args, "GET", "/v1/fleet").json()
    if args.json:
        print(json.dumps(fleet, indent=2))
        return 0
    rows = [
        [
            s["id"],
            s["health"],
            s["http_url"],
            gib(s["used_bytes"]),
            gib(s["capacity_bytes"]),
            ", ".join(f"{m['name']}({m['state'].lower()})" for m in s["models"]) or "-",
        ]
        for s in fleet["servers"]
    ]
    placement = fleet.get("placement")
    how = f", placement: {placement['strategy']} ({placement['setting']})" if placement else ""
    print(f"fleet driver: {fleet['driver']}{how}")
    print(table(rows, ["SERVER", "HEALTH", "URL", "USED", "CAPACITY", "MODELS"]))
    for model, why in sorted(fleet.get("unplaced", {}).items()):
        print(f"unplaced {model}: {why}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """The autopilot's recent decisions for one model, as a table (newest last)."""
    rows = call(args, "GET", f"/v1/models/{args.name}/decisions").json()["decisions"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no autopilot decision for {args.name} yet (autopilot off, or no tick yet)")
        return 0
    decisions = [
        [
            time.strftime("%H:%M:%S", time.localtime(d["at"])),
            d["policy"],
            d["mode"],
            str(d["ready"]),
            "-" if d["previous"] is None else str(d["previous"]),
            str(d["desired"]),
            "-" if d["admission_limit"] is None else str(d["admission_limit"]),
            d["reason"],
        ]
        for d in rows[-args.last :]
    ]
    print(
        table(
            decisions, ["TIME", "POLICY", "MODE", "READY", "FROM", "TO", "MAX_INFLIGHT", "REASON"]
        )
    )
    last = rows[-1]["inputs"]
    print("inputs of the last decision: " + ", ".join(f"{k}={v}" for k, v in last.items()))
    return 0


def add_fleet(sub: Subparsers) -> None:
    fleet = sub.add_parser("fleet", help="fleet status").add_subparsers(
        dest="fleet_command", required=True
    )
    status = fleet.add_parser("status")
    status.add_argument("--json", action="store_true", help="print JSON")
    api_opts(status)
    status.set_defaults(func=cmd_fleet_status)


def add_explain(sub: Subparsers) -> None:
    explain = sub.add_parser("explain", help="why a model has the replicas it has")
    explain.add_argument("name")
    explain.add_argument("--last", type=int, default=20, help="rows to show (default 20)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    api_opts(explain)
    explain.set_defaults(func=cmd_explain)
