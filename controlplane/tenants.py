"""Tenants: who is calling, which models are theirs, and how much of the fleet they may hold.

A tenant is a name, the SHA-256 of its bearer token (the token itself is shown once, when it
is issued, and never stored), a quota and a revocation time. The admin token (the control
plane's `api_token`) is not a tenant: it sees and changes everything.

Model names are Triton's, so they are global. To keep one tenant from learning another's
model names, a tenant's models live under its own prefix: tenant `search` may only register
`search.<anything>`. A name outside the caller's prefix is refused as an invalid name (422),
whether or not a model of that name exists, so a registration never tells a tenant that a
name is taken by someone else; inside its prefix only the tenant (or the admin) can create
names, so no other tenant's model can be there. Models the admin registers belong to the
tenant whose prefix their name has, if such a tenant exists, and to no tenant otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controlplane.errors import Conflict, FieldProblem, InvalidSpec, NotFound, PermanentError
from controlplane.replicas import TenantAccess
from controlplane.spec import ModelSpec

TENANT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
_TENANT_RE = re.compile(TENANT_NAME_PATTERN)
TENANT_NAME_SCHEMA: dict[str, Any] = {
    "pattern": TENANT_NAME_PATTERN,
    "minLength": 1,
    "maxLength": 32,
}
TOKEN_PREFIX = "tft_"


def check_tenant_name(name: str) -> str:
    if len(name) > 32 or not _TENANT_RE.fullmatch(name):
        raise ValueError(
            "must be 1-32 characters of lowercase letters, digits and '-', starting and ending "
            "with a letter or digit (a DNS label)"
        )
    return name


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 (tokens are 256-bit random, so no salt)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def prefix_of(tenant: str) -> str:
    return f"{tenant}."


class Quota(BaseModel):
    """What one tenant may hold. `None` is unlimited.

    Strict: `true` is not a quota of 1 (JSON booleans are not numbers; an integer is still a
    valid `requests_per_s`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    memory_bytes: int | None = Field(
        default=None, ge=1, le=1 << 60, description="Bytes of replica memory, fleet-wide"
    )
    replicas: int | None = Field(default=None, ge=0, le=1 << 20, description="Replicas")
    models: int | None = Field(default=None, ge=0, le=1 << 20, description="Registered models")
    requests_per_s: float | None = Field(
        default=None,
        gt=0,
        le=1e7,
        description="Gateway rate limit (token bucket refill per second); needs gateway auth",
    )
    burst: int | None = Field(
        default=None, ge=1, le=1 << 24, description="Gateway bucket size (default: 1 s of rate)"
    )

    @field_validator("requests_per_s", mode="before")
    @classmethod
    def _finite(cls, v: object) -> object:
        if isinstance(v, float) and v != v:  # NaN
            raise ValueError("must be a number")
        return v


class TenantCreate(BaseModel):
    """`POST /v1/tenants`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="1-32 lowercase letters, digits and '-' (a DNS label); its models are "
        "named '<name>.*'",
        json_schema_extra=TENANT_NAME_SCHEMA,
    )
    quota: Quota = Field(default_factory=Quota)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_tenant_name(v)


@dataclass(frozen=True)
class Tenant:
    name: str
    token_sha256: str = field(repr=False)
    quota: Quota
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def view(self) -> dict[str, object]:
        return {
            "name": self.name,
            "prefix": prefix_of(self.name),
            "quota": self.quota.model_dump(),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
        }


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the admin, one tenant, or nobody (no or an unknown token)."""

    tenant: str | None = None
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether a model owned by `owner` exists for this caller."""
        if self.admin:
            return True
        return owner == self.tenant  # anonymous sees the unowned models only

    @property
    def label(self) -> str:
        return "admin" if self.admin else (self.tenant or "anonymous")


ADMIN = Principal(admin=True)
ANONYMOUS = Principal()


class TenantStore(Protocol):
    async def tenants(self) -> Sequence[Tenant]: ...

    async def put_tenant(self, tenant: Tenant, *, create: bool) -> Tenant:
        """Insert (`create`: raise `Conflict` when the name exists) or replace."""
        ...


class Forbidden(PermanentError):
    """A known caller asked for something its token does not allow (not about a model)."""


class QuotaExceeded(PermanentError):
    def __init__(self, tenant: str, problems: list[FieldProblem]) -> None:
        self.tenant = tenant
        self.problems = problems
        super().__init__(
            f"tenant {tenant!r} quota exceeded: " + "; ".join(str(p) for p in problems)
        )


class TenantIndex:
    """Tenants by name and by token hash, rebuilt from the store after every change."""

    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self.by_name: dict[str, Tenant] = {}
        self.by_hash: dict[str, Tenant] = {}
        self.access: dict[str, TenantAccess] = {}
        self.replace(tenants)

    def replace(self, tenants: Iterable[Tenant]) -> None:
        by_name = {t.name: t for t in tenants}
        self.by_name = by_name
        self.by_hash = {t.token_sha256: t for t in by_name.values() if t.active}
        self.access = {
            digest: TenantAccess(t.name, t.quota.requests_per_s, t.quota.burst)
            for digest, t in self.by_hash.items()
        }

    def tenant_by_token(self, token_sha256: str) -> TenantAccess | None:
        """`TenantLookup` for an in-process gateway: one dict lookup."""
        return self.access.get(token_sha256)

    def authenticate(self, token: str) -> Tenant | None:
        digest = hash_token(token)
        tenant = self.by_hash.get(digest)
        # The dict finds the candidate; the final comparison is constant-time anyway.
        if tenant is None or not hmac.compare_digest(tenant.token_sha256, digest):
            return None
        return tenant

    def owner_by_name(self, model: str) -> str | None:
        """The tenant whose prefix `model` has, if such a tenant exists (revoked or not)."""
        head, sep, _ = model.partition(".")
        return head if sep and head in self.by_name else None


def owner_for(spec: ModelSpec, principal: Principal, index: TenantIndex) -> str | None:
    """Who will own a model registered by `principal`; 422 names the field otherwise."""
    if principal.admin:
        return index.owner_by_name(spec.name)
    if principal.tenant is None:
        raise Forbidden("registering a model needs a tenant token or the admin token")
    prefix = prefix_of(principal.tenant)
    problems = []
    if not spec.name.startswith(prefix) or len(spec.name) == len(prefix):
        problems.append(
            FieldProblem(
                "name",
                f"a model of tenant {principal.tenant!r} must be named '{prefix}<name>' "
                "(model names are global; each tenant registers under its own prefix)",
            )
        )
    for i, step in enumerate(spec.ensemble_steps):
        if not step.model_name.startswith(prefix):
            problems.append(
                FieldProblem(
                    f"ensemble_steps.{i}.model_name",
                    f"an ensemble of tenant {principal.tenant!r} may only use models named "
                    f"'{prefix}<name>'",
                )
            )
    if problems:
        raise InvalidSpec(problems)
    return principal.tenant


@dataclass(frozen=True)
class Holding:
    """What a tenant's registered models commit it to: models, warm floors and their bytes."""

    models: int = 0
    replicas: int = 0
    memory_bytes: int = 0

    @classmethod
    def of(cls, specs: Iterable[ModelSpec]) -> Holding:
        models = replicas = memory = 0
        for spec in specs:
            models += 1
            replicas += spec.policy.min_replicas
            memory += spec.policy.min_replicas * spec.policy.memory_bytes
        return cls(models, replicas, memory)


def check_quota(tenant: Tenant, others: Iterable[ModelSpec], spec: ModelSpec) -> None:
    """Raise `QuotaExceeded` when registering (or updating to) `spec` breaks the quota.

    `others` are the tenant's other models. Registration checks what a model guarantees
    itself: its warm floor (`min_replicas`) and that floor's memory; replicas demand asks for
    above the floor are capped by the planner instead.
    """
    q = tenant.quota
    have = Holding.of(others)
    add = Holding.of([spec])
    problems = []
    if q.models is not None and have.models + 1 > q.models:
        problems.append(
            FieldProblem(
                "quota.models",
                f"{have.models} model(s) registered, the quota allows {q.models}; delete one "
                "or ask the admin to raise it",
            )
        )
    if q.replicas is not None and have.replicas + add.replicas > q.replicas:
        problems.append(
            FieldProblem(
                "policy.min_replicas",
                f"{have.replicas} warm-floor replica(s) held + {add.replicas} asked > quota.replicas "
                f"{q.replicas}; lower min_replicas or ask the admin to raise the quota",
            )
        )
    if q.memory_bytes is not None and have.memory_bytes + add.memory_bytes > q.memory_bytes:
        problems.append(
            FieldProblem(
                "policy.memory_bytes",
                f"{have.memory_bytes} bytes of warm floors held + {add.memory_bytes} asked > "
                f"quota.memory_bytes {q.memory_bytes}; lower min_replicas or memory_bytes, or "
                "ask the admin to raise the quota",
            )
        )
    if problems:
        raise QuotaExceeded(tenant.name, problems)


def quota_views(tenants: Mapping[str, Tenant]) -> dict[str, Quota]:
    return {name: t.quota for name, t in tenants.items()}


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TenantRegistry:
    """Creating, revoking and re-keying tenants; answers who a token belongs to from memory.

    One control plane writes the store, so the in-memory index is rebuilt from it after each
    change and never goes stale.
    """

    def __init__(
        self,
        store: TenantStore,
        clock: Callable[[], float],
        token_factory: Callable[[], str] = new_token,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_token = token_factory
        self.index = TenantIndex()
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener()` runs after each change (the reconciler: quotas feed the planner)."""
        self._listeners.append(listener)

    async def load(self) -> TenantRegistry:
        self.index.replace(await self._store.tenants())
        return self

    def list(self) -> list[Tenant]:
        return sorted(self.index.by_name.values(), key=lambda t: t.name)

    def get(self, name: str) -> Tenant:
        tenant = self.index.by_name.get(name)
        if tenant is None:
            raise NotFound("tenant", name)
        return tenant

    async def create(self, body: TenantCreate, model_names: Iterable[str]) -> tuple[Tenant, str]:
        """A new tenant and its token (shown once). `model_names`: every registered model."""
        if body.name in self.index.by_name:
            raise Conflict(
                f"tenant {body.name!r} exists; `tritonfleet tenants rotate {body.name}` issues "
                "a new token"
            )
        prefix = prefix_of(body.name)
        clash = sorted(n for n in model_names if n.startswith(prefix))
        if clash:
            raise Conflict(
                f"{len(clash)} model(s) not owned by any tenant are named '{prefix}*' (e.g. "
                f"{clash[0]!r}); delete them or choose another tenant name"
            )
        token = self._new_token()
        tenant = Tenant(body.name, hash_token(token), body.quota, self._clock())
        await self._store.put_tenant(tenant, create=True)
        await self._changed()
        return tenant, token

    async def revoke(self, name: str) -> Tenant:
        """Its token stops working at once; its models keep serving and stay its own."""
        tenant = self.get(name)
        if not tenant.active:
            return tenant
        return await self._put(replace(tenant, revoked_at=self._clock()))

    async def rotate(self, name: str) -> tuple[Tenant, str]:
        """A new token (the old one stops working); a revoked tenant becomes active again."""
        token = self._new_token()
        tenant = await self._put(
            replace(self.get(name), token_sha256=hash_token(token), revoked_at=None)
        )
        return tenant, token

    async def set_quota(self, name: str, quota: Quota) -> Tenant:
        return await self._put(replace(self.get(name), quota=quota))

    async def _put(self, tenant: Tenant) -> Tenant:
        await self._store.put_tenant(tenant, create=False)
        await self._changed()
        return tenant

    async def _changed(self) -> None:
        self.index.replace(await self._store.tenants())
        for listener in self._listeners:
            listener()
