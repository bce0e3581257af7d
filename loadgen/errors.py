"""loadgen's errors: usage problems (exit 2, name the flag) and run failures (exit 3)."""

from __future__ import annotations

from controlplane.errors import PermanentError, TritonfleetError


class LoadgenError(TritonfleetError):
    """The run could not be set up or carried out; the message says what to change."""


class UsageError(PermanentError):
    """A command-line value is wrong; `flag` names it so the CLI can point at it."""

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {message}")


class TargetError(LoadgenError):
    """The server or model could not be reached or described (metadata, config)."""
