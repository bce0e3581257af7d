"""Who sees which models, as the dashboard's read routes ask it before they answer.

Every read the dashboard makes (`/v1/latency`, `/v1/events`; `/v1/fleet` filters the same way
in the control API) is filtered on the server by the `Viewer` the request's token resolves to;
the page never filters. The admin token (or an API without one) is `EVERYONE`; a tenant token
is an `Owner` of its models, and so is a caller without a token when an admin token is set
(the models of no tenant), as `controlplane.tenants.Principal` decides. Fleet-wide events
carry no model and stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


__all__ = ["EVERYONE", "Everyone", "Owner", "Viewer"]
