"""`tritonfleet usage`: chargeback, usage per tenant, tag or model over a time range, as a
table, JSON or CSV."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from adapters.cli.core import api_opts, call, table

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers


def cmd_usage(args: argparse.Namespace) -> int:
    params = {"by": args.by}
    if args.from_:
        params["from"] = args.from_
    if args.to:
        params["to"] = args.to
    if args.format == "csv":
        print(call(args, "GET", "/v1/usage", params={**params, "format": "csv"}).text, end="")
        return 0
    body = call(args, "GET", "/v1/usage", params=params).json()
    if args.format == "json":
        print(json.dumps(body, indent=2))
        return 0
    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime(body["from"]))
    end = time.strftime("%Y-%m-%d %H:%M", time.gmtime(body["to"]))
    print(f"usage {start} .. {end} UTC, by {body['by']}")
    rows = [
        [
            str(r[body["by"]]),
            f"{r['replica_s'] / 3600:.3f}",
            f"{r['memory_gib_h']:.3f}",
            "-" if r["gpu_s"] is None else f"{r['gpu_s'] / 3600:.3f}",
            str(r["requests"]),
            f"{r['compute_s']:.1f}",
        ]
        for r in body["rows"]
    ]
    header = [body["by"].upper(), "REPLICA-H", "MEM GIB-H", "GPU-H", "REQUESTS", "COMPUTE S"]
    print(table(rows, header) if rows else "no usage in this range")
    return 0


def add_usage(sub: Subparsers) -> None:
    usage = sub.add_parser("usage", help="chargeback: usage per tenant, tag or model")
    usage.add_argument(
        "--from",
        dest="from_",
        default=None,
        help="start: epoch seconds or ISO-8601, UTC unless it says (default: 24 h before --to)",
    )
    usage.add_argument("--to", default=None, help="end (default: now)")
    usage.add_argument(
        "--by", choices=["tenant", "tag", "model"], default="tenant", help="group rows by"
    )
    usage.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="output format"
    )
    api_opts(usage)
    usage.set_defaults(func=cmd_usage)
