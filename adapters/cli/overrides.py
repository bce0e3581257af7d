"""Parsed flags → Settings: a flag given overrides its TRITONFLEET_* variable, and a bad value
is one line naming the flag and the variable."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from adapters.cli.core import CliError
from adapters.cli.flags import GATEWAY_SETTINGS
from adapters.settings import FleetKind, Settings


def to_settings(args: argparse.Namespace) -> Settings:
    """The Settings of this process: TRITONFLEET_* variables, overridden by the flags given."""
    overrides: dict[str, Any] = {}
    for key in (
        "data_dir",
        "api_host",
        "api_port",
        "api_token",
        "base_port",
        "min_servers",
        "max_servers",
        "fleet_config",
        "admin_key",
        "tritonserver",
        "model_root",
        "autopilot_stable_window_s",
        "autopilot_panic_window_s",
        "slo_p95_ms",
        "slo_p99_ms",
        "server_idle_s",
        "placement_strategy",
        "ui_stream_max_clients",
        "usage_flush_interval_s",
        "usage_retention_days",
        *GATEWAY_SETTINGS,
    ):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    servers = getattr(args, "servers", None)
    if servers is not None:
        if servers.strip().lstrip("-").isdigit():
            overrides["servers"] = int(servers)
        else:  # `--servers URL,URL`: manage servers someone else runs
            overrides["static_servers"] = [u for u in servers.split(",") if u.strip()]
            overrides["fleet"] = FleetKind.STATIC
    if getattr(args, "capacity_bytes", None) is not None:
        overrides["server_capacity_bytes"] = args.capacity_bytes
    if getattr(args, "fleet", None) is not None:
        overrides["fleet"] = args.fleet
    if getattr(args, "static_servers", None):
        overrides["static_servers"] = [u for u in args.static_servers.split(",") if u.strip()]
    if getattr(args, "no_examples", False):
        overrides["register_examples"] = False
    if getattr(args, "no_gateway", False):
        overrides["gateway_enabled"] = False
    if getattr(args, "keep_servers", False):
        overrides["keep_servers"] = True
    if getattr(args, "no_autopilot", False):
        overrides["autopilot"] = False
    if getattr(args, "no_ui", False):
        overrides["ui_enabled"] = False
    if getattr(args, "controlplane_url", None):
        overrides["controlplane_url"] = args.controlplane_url
    prefix = _gateway_prefix(args)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise CliError(_setting_error(exc, prefix)) from exc
    if settings.gateway_enabled:
        try:
            settings.gateway_config()
        except ValidationError as exc:  # the gateway's own checks, named by its setting
            raise CliError(_setting_error(exc, prefix, "gateway_")) from exc
    return settings


def _gateway_prefix(args: argparse.Namespace) -> str:
    """`tritonfleet gateway --max-body-bytes` is `tritonfleet up --gateway-max-body-bytes`."""
    return "" if args.command == "gateway" else "gateway-"


def _setting_error(exc: ValidationError, gateway_prefix: str, field_prefix: str = "") -> str:
    """One line naming the flag and the environment variable of the first bad setting."""
    first = exc.errors()[0]
    field = field_prefix + ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:  # a check across fields (sizes out of order): no single flag to name
        return message
    if field in ("gateway_prometheus_url", "gateway_prometheus_bearer_token"):
        field = field.removeprefix("gateway_")
    short = gateway_prefix + field.removeprefix("gateway_")
    flag = short if field in GATEWAY_SETTINGS else field
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
    return f"--{flag.replace('_', '-')}: {message}{shown} [env TRITONFLEET_{field.upper()}]"
