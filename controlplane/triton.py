"""The Triton-control port: load, unload and observe models on one server.

Implemented by `adapters.tritoncontrol` over Triton's gRPC repository API (control traffic on
gRPC keeps it off the HTTP inference path) and an in-memory fake for unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.fleet import Server


@dataclass(frozen=True)
class LoadedModel:
    """A model a server reports as loaded (from its statistics), with Triton's counters."""

    name: str
    version: str
    ready: bool
    inference_count: int = 0
    last_inference_ms: int = 0
    memory_bytes: int | None = None  # Triton's memory_usage, when the backend reports it


class TritonControl(Protocol):
    async def load(
        self, server: Server, model: str, config_json: str, files: Mapping[str, bytes]
    ) -> None:
        """Load (or reload) `model`; raise `ModelLoadFailed` with Triton's reason, or
        `ServerUnavailable` when the server did not answer."""
        ...

    async def unload(self, server: Server, model: str) -> None: ...

    async def loaded(self, server: Server) -> dict[str, LoadedModel]:
        """Models the server has loaded now (ready ones), by name."""
        ...

    async def config(self, server: Server, model: str) -> dict[str, Any] | None:
        """The config `model` is loaded with on `server` (Triton's JSON form), None if unknown."""
        ...

    async def close(self) -> None: ...
