"""What every `tritonfleet` command shares: its error type and exit codes, the control API
client (`--api`, `--token`) and the table/size formatting of its output."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx

from adapters import specfile

if TYPE_CHECKING:
    # What each command module adds its parsers to (argparse's class is generic only when typed).
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def api_opts(sp: argparse.ArgumentParser) -> None:
    """`--api` and `--token`: how a command reaches a running control API."""
    sp.add_argument(
        "--api",
        default=os.environ.get("TRITONFLEET_API_URL", "http://127.0.0.1:8080"),
        help="control API URL",
    )
    sp.add_argument(
        "--token",
        default=os.environ.get("TRITONFLEET_API_TOKEN"),
        help="bearer token: the admin token, or a tenant's (env TRITONFLEET_API_TOKEN)",
    )


def _api(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.api, headers=headers, timeout=httpx.Timeout(60.0))


def call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> httpx.Response:
    """One control API request; an unreachable API or an error status is a CliError."""
    try:
        with _api(args) as client:
            r = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the control API at {args.api} ({exc}); start it with "
            "`tritonfleet up` or pass --api URL",
            EXIT_UNAVAILABLE,
        ) from exc
    if r.status_code >= 400:
        raise CliError(_error_text(r), EXIT_USAGE if r.status_code < 500 else EXIT_UNAVAILABLE)
    return r


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:500]}"
    lines = [f"HTTP {r.status_code}: {body.get('error', '')}"]
    for d in body.get("detail", []) or []:
        lines.append(f"  {d.get('field')}: {d.get('message')}")
    return "\n".join(lines)


def spec(path: str) -> dict[str, Any]:
    return specfile.load(Path(path))


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [header, *rows])


def gib(n: int | None) -> str:
    return (
        "-" if n is None else f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"
    )
