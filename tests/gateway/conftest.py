"""Fixtures of the gateway tests (defined in `support`, which tests also import helpers from)."""

from tests.gateway.support import env

__all__ = ["env"]
