"""Who sees which models: the one place the read endpoints ask before they answer.

Every read the dashboard makes (`/v1/fleet`, `/v1/latency`, `/v1/events`) is filtered here, on
the server, by the `Viewer` the request's token resolves to; the page never filters. Today
every caller is `EVERYONE` (the control API has one admin token and open reads); a tenant
token resolves to an `Owner` of its models, who sees only those (servers stay visible, with
other tenants' models left out of them; fleet-wide events carry no model and stay visible).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class Viewer(Protocol):
    def sees(self, model: str) -> bool: ...


@dataclass(frozen=True)
class Everyone:
    """The admin, or a control plane without tenants: every model."""

    def sees(self, model: str) -> bool:
        return True


@dataclass(frozen=True)
class Owner:
    """A tenant: only the models it registered."""

    models: frozenset[str]

    def sees(self, model: str) -> bool:
        return model in self.models


EVERYONE = Everyone()


def fleet(status: Mapping[str, Any], viewer: Viewer) -> dict[str, Any]:
    """`fleet_status` with the models `viewer` may not see left out of every server."""
    out = dict(status)
    out["servers"] = [
        {**s, "models": [m for m in s.get("models", []) if viewer.sees(m["name"])]}
        for s in status.get("servers", [])
    ]
    out["unplaced"] = {m: r for m, r in status.get("unplaced", {}).items() if viewer.sees(m)}
    return out


__all__ = ["EVERYONE", "Everyone", "Owner", "Viewer", "fleet"]
