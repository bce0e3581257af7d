"""loadgen's errors: usage problems (exit 2, name the flag) and run failures (exit 3).

loadgen stands alone (it measures any KServe v2 server, tritonfleet's or not), so its errors
derive from nothing of the control plane's; an import contract keeps it that way.
"""

from __future__ import annotations


class LoadgenError(Exception):
    """The run could not be set up or carried out; the message says what to change."""


class UsageError(Exception):
    """A command-line value is wrong; `flag` names it so the CLI can point at it."""

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {message}")


class TargetError(LoadgenError):
    """The server or model could not be reached or described (metadata, config)."""
