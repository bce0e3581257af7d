"""The `tritonfleet` command line: run a fleet, register models, inspect it, simulate it.

`up` runs everything in this process; the other commands talk to a running control API
(`--api`, default $TRITONFLEET_API_URL or http://127.0.0.1:8080). User mistakes print one clear
line on stderr and exit 2; unreachable services exit 1; never a traceback.

One module per command group: `up` (up, controlplane), `gateway`, `models` (models, config
render), `fleet` (fleet status, explain), `tenants`, `usage`, `sim`, `loadgen`; `entry` builds
the parser and maps errors to messages and exit codes, `core` is the control API client and
output helpers, `flags` and `overrides` are the long-running commands' flags and the Settings
they make, `process` their event loop and logging.
"""

from adapters.cli.core import EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from adapters.cli.entry import build_parser, main
from adapters.cli.overrides import to_settings
from adapters.cli.process import run

__all__ = [
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
    "run",
    "to_settings",
]
