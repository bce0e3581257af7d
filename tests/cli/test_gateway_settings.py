"""Every GatewayConfig field is reachable: environment, `up`/`gateway` flags, docs.

The list of fields comes from the model itself, so a field added to GatewayConfig without a
setting, a flag or a line in docs/gateway.md fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from adapters.cli import build_parser, to_settings
from adapters.gateway.config import GatewayConfig
from adapters.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"
SHARED = {"prometheus_url", "prometheus_bearer_token"}  # one Prometheus for the whole fleet
FIELDS = sorted(GatewayConfig.model_fields)


def setting(field: str) -> str:
    return field if field in SHARED else f"gateway_{field}"


def other_value(field: str) -> Any:
    """A valid value of `field` that is not its default."""
    info = GatewayConfig.model_fields[field]
    default, kind = info.default, info.annotation
    if field == "policy":
        return "round-robin"
    if field == "host":
        return "0.0.0.0"
    if get_origin(kind) is Literal:
        return next(c for c in get_args(kind) if c != default)
    kinds = set(get_args(kind)) or {kind}
    if int in kinds:
        return (default or 0) + 7
    if float in kinds:
        return (default if default is not None else 12.0) + 0.25
    if field == "prometheus_url":
        return "http://prometheus.test:9090"
    return f"x-{default or 'value'}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TRITONFLEET_"):
            monkeypatch.delenv(name)


def test_every_gateway_field_has_a_setting_with_the_same_default() -> None:
    values = Settings().gateway_values()
    assert sorted(values) == FIELDS
    assert Settings().gateway_config() == GatewayConfig()
    for field in FIELDS:
        assert setting(field) in Settings.model_fields, f"GatewayConfig.{field} has no setting"


@pytest.mark.parametrize("field", FIELDS)
def test_every_gateway_field_is_settable_from_the_environment(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = other_value(field)
    monkeypatch.setenv(f"TRITONFLEET_{setting(field).upper()}", str(value))
    assert getattr(Settings().gateway_config(), field) == value


@pytest.mark.parametrize("field", [f for f in FIELDS if f not in SHARED])
def test_every_gateway_field_has_a_flag_on_up_and_gateway(field: str) -> None:
    value = other_value(field)
    flag = field.replace("_", "-")
    on_up = to_settings(build_parser().parse_args(["up", f"--gateway-{flag}", str(value)]))
    assert getattr(on_up.gateway_config(), field) == value
    on_gateway = to_settings(build_parser().parse_args(["gateway", f"--{flag}", str(value)]))
    assert getattr(on_gateway.gateway_config(), field) == value


def test_optional_gateway_settings_take_none() -> None:
    s = to_settings(
        build_parser().parse_args(["gateway", "--grpc-port", "none", "--default-max-queue", "none"])
    )
    assert (s.gateway_grpc_port, s.gateway_default_max_queue) == (None, None)


def test_docs_table_names_every_setting() -> None:
    rows = [ln for ln in DOCS.read_text().splitlines() if ln.startswith("| `")]
    for field in FIELDS:
        env = f"`TRITONFLEET_{setting(field).upper()}`"
        assert any(r.startswith(f"| `{field}` | {env} |") for r in rows), (
            f"docs/gateway.md, Settings: no row for {field} with {env}"
        )


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["up", "--gateway-header-timeout-s", "0"],
            {},
            "tritonfleet: --gateway-header-timeout-s: Input should be greater than 0 (got 0.0) "
            "[env TRITONFLEET_GATEWAY_HEADER_TIMEOUT_S]",
        ),
        (
            ["gateway", "--max-body-bytes", "lots"],
            {},
            "tritonfleet: --max-body-bytes: Input should be a valid integer, unable to parse "
            "string as an integer (got 'lots') [env TRITONFLEET_GATEWAY_MAX_BODY_BYTES]",
        ),
        (
            ["gateway", "--controlplane-url", "http://127.0.0.1:9"],
            {"TRITONFLEET_GATEWAY_MAX_EJECTED_FRACTION": "2"},
            "tritonfleet: --max-ejected-fraction: Input should be less than or equal to 1 "
            "(got 2.0) [env TRITONFLEET_GATEWAY_MAX_EJECTED_FRACTION]",
        ),
        (
            ["up"],
            {"TRITONFLEET_GATEWAY_POLICY": "fastest"},
            "tritonfleet: --gateway-policy: unknown routing policy 'fastest'; choose one of "
            "hot-cold, least-request, round-robin (got 'fastest') "
            "[env TRITONFLEET_GATEWAY_POLICY]",
        ),
    ],
)
def test_bad_gateway_values_are_one_line_naming_flag_and_env(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    r = run(*args, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == expected


def test_entry_points_run_on_uvloop() -> None:
    from adapters.cli import run

    async def loop_module() -> int:
        import asyncio

        return int(type(asyncio.get_running_loop()).__module__.startswith("uvloop"))

    assert run(loop_module()) == 1
