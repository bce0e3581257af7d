"""Gateway auth per tenant, and per-tenant rate limits: one check per request, no I/O.

With `auth: tenants`, a model route needs `Authorization: Bearer <token>` (HTTP) or
`authorization` metadata (gRPC). The doors hash the token once per distinct request head
(the HTTP head cache, the gRPC header block) and ask `check()` with the hash:

- no token, a malformed one, or one that is no live tenant's (nor the admin's): 401;
- a tenant's token for a model of another tenant: the same 404 as a model that does not exist
  (never 403: the gateway does not confirm that another tenant's model exists);
- a tenant over its rate limit (token bucket: `requests_per_s`, `burst`): 429, Retry-After.

Models of no tenant (registered by the admin) are open to every valid token. The admin token
calls everything and is never rate-limited. Tenants and token hashes come from the replica
directory (in-process: the control plane's tenant index; apart: `GET /v1/replicas`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from controlplane.replicas import ModelRouting, TenantLookup

BEARER = b"bearer "
MAX_TOKEN_BYTES = 512


def only_authorization(values: Iterable[bytes | str]) -> bytes | str | None:
    """The request's one Authorization value; None without one, and a malformed value (a 401)
    for several: which one counts would be a guess, and a proxy that appends its own must not
    turn a caller into someone else (the control API refuses them the same way)."""
    found: bytes | str | None = None
    for value in values:
        if found is not None:
            return b""
        found = value
    return found


def token_hash(authorization: bytes | str | None) -> str | None:
    """SHA-256 (hex) of a bearer token from an Authorization value; "" for a malformed one,
    None when there is none."""
    if authorization is None:
        return None
    raw = (
        authorization.encode("latin-1", "replace")
        if isinstance(authorization, str)
        else authorization
    )
    raw = raw.strip()
    if len(raw) > MAX_TOKEN_BYTES + len(BEARER) or raw[:7].lower() != BEARER:
        return ""
    token = raw[7:].strip()
    return hashlib.sha256(token).hexdigest() if token else ""


@dataclass(frozen=True, slots=True)
class Denial:
    status: int  # 401, 404 or 429 (the doors map it to their own codes)
    message: str
    retry_after_s: int = 0


UNAUTHENTICATED = Denial(
    401,
    "this gateway needs 'Authorization: Bearer <token>' with a live tenant token "
    "(`tritonfleet tenants create`)",
)


def not_found(model: str) -> Denial:
    """Exactly the answer for a model that is not registered."""
    return Denial(404, f"model {model!r} is not registered with tritonfleet; register it first")


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class TenantGate:
    def __init__(
        self,
        enabled: bool,
        lookup: TenantLookup | None,
        *,
        admin_token_sha256: str | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.enabled = enabled
        self._lookup = lookup
        self._admin = admin_token_sha256
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, model: str, rt: ModelRouting | None, digest: str | None) -> Denial | None:
        """None: go ahead (an unknown model is then the door's usual 404)."""
        if not self.enabled:
            return None
        if not digest:
            return UNAUTHENTICATED
        if self._admin is not None and hmac.compare_digest(digest, self._admin):
            return None
        access = self._lookup.tenant_by_token(digest) if self._lookup is not None else None
        if access is None:
            return UNAUTHENTICATED
        if rt is not None and rt.tenant is not None and rt.tenant != access.name:
            return not_found(model)
        if access.requests_per_s is None:
            return None
        return self._take(access.name, access.requests_per_s, access.burst)

    def _take(self, tenant: str, rate: float, burst: int | None) -> Denial | None:
        size = float(burst) if burst is not None else max(1.0, rate)
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(size, now)
        else:
            bucket.tokens = min(size, bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        wait = math.ceil((1.0 - bucket.tokens) / rate)
        return Denial(
            429,
            f"tenant {tenant!r} is over its rate limit ({rate:g} requests/s, burst "
            f"{size:g}); retry after {wait}s or ask the admin to raise quota.requests_per_s",
            retry_after_s=max(1, wait),
        )
