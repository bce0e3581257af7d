"""The `tritonfleet` parser, built from each command module's parsers, and `main`: it runs the
chosen command and turns every error into one message on stderr and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from adapters.cli import fleet, gateway, loadgen, models, sim, tenants, up, usage
from adapters.cli.core import EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from controlplane.errors import InvalidSpec, TritonfleetError
from controlplane.spec import field_errors

# The first line of the command line's description (the package docstring), as `--help` shows it.
DESCRIPTION = (
    "The `tritonfleet` command line: run a fleet, register models, inspect it, simulate it."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tritonfleet", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    # The order here is the order `tritonfleet --help` lists the commands in.
    up.add_up(sub)
    up.add_controlplane(sub)
    gateway.add_gateway(sub)
    models.add_models(sub)
    models.add_config(sub)
    fleet.add_fleet(sub)
    fleet.add_explain(sub)
    tenants.add_tenants(sub)
    usage.add_usage(sub)
    sim.add_sim(sub)
    loadgen.add_loadgen(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = loadgen.protect(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"tritonfleet: {exc}", file=sys.stderr)
        return exc.code
    except InvalidSpec as exc:
        print(f"tritonfleet: {exc.subject} is invalid:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p.field}: {p.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        print("tritonfleet: invalid model spec:", file=sys.stderr)
        for err in exc.errors():
            for field, message in field_errors(tuple(err["loc"]), str(err["msg"])):
                print(f"  {field}: {message}", file=sys.stderr)
        return EXIT_USAGE
    except TritonfleetError as exc:  # FleetError included
        print(f"tritonfleet: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
