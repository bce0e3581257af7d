"""The flags of the long-running commands (`up`, `controlplane`, `gateway`): one per setting
in adapters/settings.py that a user may set on the command line; adapters/cli/overrides.py turns
them into Settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal, get_args, get_origin

from adapters.settings import FleetKind, Settings
from controlplane.placement import PlacementSetting
from controlplane.routing import POLICIES

# Every gateway setting has a flag: `--gateway-<name>` on `up`, `--<name>` on `gateway`.
GATEWAY_SETTINGS = tuple(
    n for n in Settings.model_fields if n.startswith("gateway_") and n != "gateway_enabled"
)


def _metavar(name: str) -> str:
    unit = "" if name.endswith("_per_s") else name.rsplit("_", 1)[-1]
    return {"s": "SECONDS", "bytes": "BYTES", "port": "PORT", "host": "ADDR"}.get(
        unit, "TEXT" if Settings.model_fields[name].annotation is str else "N"
    )


def gateway_opts(sp: argparse.ArgumentParser, prefix: str) -> None:
    """One flag per gateway setting, typed and checked by Settings (so errors name the flag)."""
    for name in GATEWAY_SETTINGS:
        info = Settings.model_fields[name]
        choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else None
        if name == "gateway_policy":
            choices = tuple(sorted(POLICIES))
        flag = f"--{prefix}{name.removeprefix('gateway_').replace('_', '-')}"
        sp.add_argument(
            flag,
            dest=name,
            default=None,
            choices=choices,
            metavar=None if choices else _metavar(name),
            help=f"{info.description} (env TRITONFLEET_{name.upper()})",
        )


def fleet_opts(sp: argparse.ArgumentParser) -> None:
    """Where the Triton servers come from and how the control plane runs them (`up`,
    `controlplane`)."""
    sp.add_argument(
        "--fleet",
        choices=[k.value for k in FleetKind],
        default=None,
        help="where Triton servers come from (default local: processes started here)",
    )
    sp.add_argument(
        "--servers",
        default=None,
        metavar="N|URL,...",
        help="local fleet size (default 2), or Triton HTTP URLs to manage (implies --fleet static)",
    )
    sp.add_argument(
        "--min-servers",
        type=int,
        default=None,
        metavar="N",
        help="smallest size the fleet may shrink to (default: --servers); "
        "with --fleet kubernetes, the StatefulSet's floor",
    )
    sp.add_argument(
        "--max-servers",
        type=int,
        default=None,
        metavar="N",
        help="largest size the fleet may grow to (default: --servers, i.e. fixed size); "
        "with --fleet kubernetes, the StatefulSet's ceiling",
    )
    sp.add_argument(
        "--fleet-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML `servers:` list of static servers (url, grpc, metrics, capacity_bytes, "
        "admin_key, labels)",
    )
    sp.add_argument("--static-servers", default=None, metavar="URL,...", help=argparse.SUPPRESS)
    sp.add_argument(
        "--tritonserver",
        default=None,
        metavar="PATH",
        help="tritonserver binary (default: PATH, then the nvidia-pytriton wheel)",
    )
    sp.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="SQLite store, server logs and records (default .tritonfleet)",
    )
    sp.add_argument(
        "--api-token",
        default=None,
        help="the admin token: required on changes, manages tenants (env TRITONFLEET_API_TOKEN)",
    )
    sp.add_argument(
        "--admin-key",
        default=None,
        help="key for Triton's restricted repository/config APIs (local: generated)",
    )
    sp.add_argument(
        "--base-port",
        type=int,
        default=None,
        metavar="PORT",
        help="local fleet: first port, 3 per server (default: free ports)",
    )
    sp.add_argument(
        "--capacity-bytes",
        type=int,
        default=None,
        help="memory each server offers to models when NVML cannot tell (CPU mode)",
    )
    sp.add_argument(
        "--model-root",
        type=Path,
        default=None,
        help="local directory that model artifact paths must stay under",
    )
    sp.add_argument(
        "--keep-servers",
        action="store_true",
        help="local fleet: servers outlive this process; the next start adopts them",
    )
    sp.add_argument(
        "--no-autopilot",
        action="store_true",
        help="keep warm floors only; no load-driven replicas, admission or fleet size",
    )
    sp.add_argument("--slo-p95-ms", type=float, default=None, help="fleet-wide P95 target")
    sp.add_argument("--slo-p99-ms", type=float, default=None, help="fleet-wide P99 target")
    sp.add_argument(
        "--autopilot-stable-window-s",
        type=float,
        default=None,
        help="autopilot: demand averaged over this window (default 30, at most 120)",
    )
    sp.add_argument(
        "--autopilot-panic-window-s",
        type=float,
        default=None,
        help="autopilot: bursts judged over this window (default 5)",
    )
    sp.add_argument(
        "--server-idle-s",
        type=float,
        default=None,
        help="stop an empty highest-ordinal server after this long (elastic fleet)",
    )
    sp.add_argument(
        "--placement",
        "--placement-strategy",
        dest="placement_strategy",
        choices=[k.value for k in PlacementSetting],
        default=None,
        help="where new replicas go: pack (fill servers; lets an elastic fleet stop empty "
        "ones), spread (most free memory: less GPU sharing, parallel cold loads), auto "
        "(default: spread on a fixed-size fleet, pack on an elastic one)",
    )
    sp.add_argument(
        "--no-ui",
        action="store_true",
        help="do not serve the dashboard at /ui (its JSON and event routes stay)",
    )
    sp.add_argument(
        "--ui-stream-max-clients",
        type=int,
        default=None,
        metavar="N",
        help="dashboard: event streams (/v1/events) open at once (default 16)",
    )
    sp.add_argument(
        "--usage-flush-interval-s",
        type=float,
        default=None,
        help="chargeback: write accrued usage to SQLite this often (default 5)",
    )
    sp.add_argument(
        "--usage-retention-days",
        type=float,
        default=None,
        help="chargeback: prune per-minute usage older than this (default 400)",
    )
    sp.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
