"""`tritonfleet tenants …` (create, list, revoke, rotate, quota): tenants, their tokens and
quotas, through the admin token."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from adapters.cli.core import api_opts, call, gib, table

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers


def _quota_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: value
        for key in ("memory_bytes", "replicas", "models", "requests_per_s", "burst")
        if (value := getattr(args, f"quota_{key}", None)) is not None
    }


def _print_token(body: dict[str, Any], verb: str) -> None:
    print(f"{verb} tenant {body['name']}; its models are named '{body['prefix']}<name>'")
    print("token (shown once; store it now, only its hash is kept):")
    print(body["token"])


def cmd_tenants_create(args: argparse.Namespace) -> int:
    body = call(
        args, "POST", "/v1/tenants", json={"name": args.name, "quota": _quota_body(args)}
    ).json()
    _print_token(body, "created")
    return 0


def cmd_tenants_rotate(args: argparse.Namespace) -> int:
    _print_token(call(args, "POST", f"/v1/tenants/{args.name}/token").json(), "new token for")
    return 0


def cmd_tenants_quota(args: argparse.Namespace) -> int:
    body = call(args, "PUT", f"/v1/tenants/{args.name}/quota", json=_quota_body(args)).json()
    print(f"quota of {body['name']}: {_quota_text(body['quota'])}")
    return 0


def cmd_tenants_revoke(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/v1/tenants/{args.name}")
    print(f"revoked {args.name}: its token no longer works; its models keep serving")
    return 0


def _quota_text(q: dict[str, Any]) -> str:
    parts = [f"{k}={gib(v) if k == 'memory_bytes' else v}" for k, v in q.items() if v is not None]
    return ", ".join(parts) or "unlimited"


def cmd_tenants_list(args: argparse.Namespace) -> int:
    tenants = call(args, "GET", "/v1/tenants").json()["tenants"]
    if args.json:
        print(json.dumps(tenants, indent=2))
        return 0
    rows = [
        [
            t["name"],
            "active" if t["active"] else "revoked",
            str(t["holding"]["models"]),
            str(t["holding"]["replicas"]),
            gib(t["holding"]["memory_bytes"]),
            _quota_text(t["quota"]),
        ]
        for t in tenants
    ]
    print(
        table(rows, ["TENANT", "STATE", "MODELS", "FLOOR", "FLOOR MEMORY", "QUOTA"])
        if rows
        else "no tenants"
    )
    return 0


def _quota_opts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--quota-memory-bytes", type=int, default=None, help="replica memory, fleet-wide"
    )
    sp.add_argument("--quota-replicas", type=int, default=None, help="replicas, fleet-wide")
    sp.add_argument("--quota-models", type=int, default=None, help="registered models")
    sp.add_argument(
        "--quota-requests-per-s",
        type=float,
        default=None,
        help="gateway rate limit, requests per second (needs gateway auth)",
    )
    sp.add_argument(
        "--quota-burst", type=int, default=None, help="gateway rate limit burst (requests)"
    )


def add_tenants(sub: Subparsers) -> None:
    tenants = sub.add_parser(
        "tenants", help="tenants, their tokens and quotas (admin token)"
    ).add_subparsers(dest="tenants_command", required=True)
    for name, fn, help_text in (
        ("create", cmd_tenants_create, "create a tenant and print its token once"),
        ("list", cmd_tenants_list, "tenants, what they hold and their quotas"),
        ("revoke", cmd_tenants_revoke, "revoke a tenant's token (its models keep serving)"),
        ("rotate", cmd_tenants_rotate, "issue a new token (the old one stops working)"),
        ("quota", cmd_tenants_quota, "replace a tenant's quota (unset fields: unlimited)"),
    ):
        sp = tenants.add_parser(name, help=help_text)
        if name != "list":
            sp.add_argument("name", help="tenant name (a DNS label: a-z, 0-9, '-')")
        if name in ("create", "quota"):
            _quota_opts(sp)
        if name == "list":
            sp.add_argument("--json", action="store_true", help="print JSON")
        api_opts(sp)
        sp.set_defaults(func=fn)
