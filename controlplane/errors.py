"""tritonfleet's own error hierarchy.

Errors carry enough to tell the user what was wrong and what to change; the front doors
(`adapters/api`, `adapters/cli`) map them to HTTP status codes or CLI messages. Retryable
failures derive from `TemporaryError`, permanent ones from `PermanentError`.
"""

from __future__ import annotations

from dataclasses import dataclass


class TritonfleetError(Exception):
    """Base class of every error tritonfleet raises on purpose."""


class PermanentError(TritonfleetError):
    """Retrying the same thing will fail the same way."""


class TemporaryError(TritonfleetError):
    """The same call may succeed later (a server restarting, a timeout)."""


@dataclass(frozen=True)
class FieldProblem:
    """One field-level problem: a dotted path into the input and what to change."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidSpec(PermanentError):
    """A model spec (or a config rendered from it) would be rejected; lists each field."""

    def __init__(self, problems: list[FieldProblem], *, subject: str = "model spec") -> None:
        self.problems = problems
        self.subject = subject
        joined = "; ".join(str(p) for p in problems)
        super().__init__(f"invalid {subject}: {joined}")


class NotFound(PermanentError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found")


class Conflict(PermanentError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class Unauthorized(PermanentError):
    pass


class FleetError(TritonfleetError):
    """The fleet could not be started or reached; the message says what to install or change."""


class ServerUnavailable(TemporaryError):
    """A Triton server did not answer (connection refused, timeout)."""


class ModelLoadFailed(PermanentError):
    """Triton refused to load a model; `reason` is Triton's own message."""

    def __init__(self, model: str, server: str, reason: str) -> None:
        self.model = model
        self.server = server
        self.reason = reason
        super().__init__(f"model {model!r} failed to load on {server}: {reason}")


class NotSupported(PermanentError):
    """The chosen driver cannot do this (e.g. scaling a static fleet)."""
