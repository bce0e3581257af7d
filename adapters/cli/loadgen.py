"""`tritonfleet loadgen …`: everything after `loadgen` goes to the load generator's own CLI
(loadgen/cli.py), `--help` included."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.cli.core import CliError

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers


def cmd_loadgen(args: argparse.Namespace) -> int:
    try:
        from loadgen.cli import main as loadgen_main
    except ImportError as exc:
        raise CliError(f"loadgen is not available in this install ({exc})") from exc
    rest = list(args.rest)
    return int(loadgen_main(rest[1:] if rest[:1] == ["--"] else rest))


def protect(argv: Sequence[str]) -> list[str]:
    """Everything after `loadgen` is loadgen's, `--help` included (argparse's REMAINDER would
    refuse a leading option)."""
    argv = list(argv)
    return ["loadgen", "--", *argv[1:]] if argv[:1] == ["loadgen"] else argv


def add_loadgen(sub: Subparsers) -> None:
    lg = sub.add_parser(
        "loadgen", help="load generator and SLO gate (see `loadgen --help`)", add_help=False
    )
    lg.add_argument("rest", nargs=argparse.REMAINDER)
    lg.set_defaults(func=cmd_loadgen)
