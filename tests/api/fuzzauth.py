"""The token paths of the control API, fuzzed: who calls, with what header, and what must hold.

With auth on (`api_token` set, tenants in use) every fuzzed call carries one `Credential`: the
admin token, a tenant's token, no token, or a hostile header (wrong, overlong, non-ASCII, odd
spacing, another scheme, a revoked tenant's token). `Tenancy` seeds the world these calls meet
(tenants `alpha` and `beta` with one model each, an unowned model, a revoked tenant `gone`),
puts it back after a call changed it, and checks, besides schemathesis' own checks:

- a header the API must refuse is a 401, and a call without a token to an operation whose
  document requires one too; a tenant token on an admin-only operation is a 403; an optional
  token left out is not refused;
- a refused call changes nothing (registry and tenants compared before and after), and a
  tenant's call changes nothing outside its own models;
- a tenant (or a caller without a token) never sees a model it may not see: no such name in
  any answer it gets (unless it sent the name), and another tenant's model answers exactly as
  a missing one (the same status and error, the call replayed with a missing name).

Which operations read the header comes from the document's `security` (what clients see), so
these checks hold the document to the code as well. Used by tests/api/test_api_fuzz.py and
`python -m benchmarks.api_fuzz`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import strategies as st

from controlplane.tenants import check_tenant_name
from tests.support import python_spec

ADMIN_TOKEN = "fuzz-admin-token-3b9f0c1d7e2a4f68"
MiB = 1 << 20
REFUSED = "refused"  # a credential the API must answer 401
ANONYMOUS = "anonymous"
ADMIN = "admin"
TENANTS = ("alpha", "beta")
REVOKED = "gone"
# One model per tenant and one of no tenant: the names a leak would show.
SEEDED = {"alpha.secret-a1": "alpha", "beta.secret-b1": "beta", "plain-secret0": None}
MISSING = ("alpha.missing-x", "beta.missing-x", "plain-missing")


@dataclass(frozen=True)
class Credential:
    """One way to call: the Authorization header built from the live tokens (None: no header),
    and who the API must take it for (`admin`, a tenant, `anonymous` or `refused`)."""

    name: str
    header: Callable[[dict[str, str]], str | None]
    acts_as: str


def _bearer(who: str, fmt: str = "Bearer {}") -> Callable[[dict[str, str]], str]:
    return lambda tokens: fmt.format(tokens[who])


VALID = (
    Credential("admin", _bearer(ADMIN), ADMIN),
    # RFC 7235: the scheme is case-insensitive and 1*SP separates it from the token.
    Credential("admin, lowercase scheme", _bearer(ADMIN, "bearer {}"), ADMIN),
    Credential("admin, two spaces", _bearer(ADMIN, "Bearer  {}"), ADMIN),
    Credential("tenant alpha", _bearer("alpha"), "alpha"),
    Credential("tenant beta", _bearer("beta"), "beta"),
    Credential("no token", lambda _: None, ANONYMOUS),
)
HOSTILE = (
    Credential("wrong token", lambda _: "Bearer tft_" + "A" * 43, REFUSED),
    Credential("revoked tenant", _bearer(REVOKED), REFUSED),
    Credential("overlong", _bearer(ADMIN, "Bearer {}" + "x" * 8000), REFUSED),
    Credential("admin token as a prefix", _bearer(ADMIN, "Bearer {}0"), REFUSED),
    Credential("non-ASCII after the token", _bearer(ADMIN, "Bearer {}\u00e9"), REFUSED),
    Credential("NBSP after the token", _bearer(ADMIN, "Bearer {}\u00a0"), REFUSED),
    Credential("non-ASCII token", lambda _: "Bearer tft_\u00df\u00fc\u00f1\u00ff", REFUSED),
    Credential("tab after the scheme", _bearer(ADMIN, "Bearer\t{}"), REFUSED),
    Credential("no space after the scheme", _bearer(ADMIN, "Bearer{}"), REFUSED),
    Credential("scheme only", lambda _: "Bearer", REFUSED),
    Credential("two tokens", _bearer(ADMIN, "Bearer {0} {0}"), REFUSED),
    Credential("Basic scheme", _bearer(ADMIN, "Basic {}"), REFUSED),
)


def credentials() -> st.SearchStrategy[Credential]:
    """Half valid, half hostile; tenants and no token as often as the admin forms together."""
    valid = st.one_of(st.sampled_from(VALID[:3]), st.sampled_from(VALID[3:]))
    return st.one_of(valid, st.sampled_from(HOSTILE))


def _sees(who: str, owner: str | None) -> bool:
    if who == ADMIN:
        return True
    return owner == (None if who == ANONYMOUS else who)


def _tenant_specs(
    prefixes: tuple[str, ...] = ("alpha.", "beta.", ""),
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid specs named in the tenants' prefixes (the seeded ones by default) and outside, so
    tenant tokens' registrations and updates can succeed, and fail for the right reason."""
    prefix = st.sampled_from(prefixes)
    suffix = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)

    def spec(p: str, s: str, floor: int) -> dict[str, Any]:
        return {
            **python_spec(p + s),
            "policy": {"min_replicas": floor, "max_replicas": 2, "memory_bytes": 64 * MiB},
            "artifact": {"uri": "m"},
        }

    return st.builds(spec, prefix, suffix, st.integers(0, 2))


@dataclass
class Tenancy:
    """The tenants and models the credentials meet, kept in place between fuzzed calls."""

    url: str
    tokens: dict[str, str] = field(default_factory=lambda: {ADMIN: ADMIN_TOKEN})
    dirty: bool = True
    # The state as last read, while no admin change may have happened since (refused and
    # tenant calls are compared against it, then it becomes what they left): one read a call.
    known: dict[str, Any] | None = None
    refused: int = 0
    cross_tenant: int = 0
    # One client for the checks' own calls (a new one per call costs ~20 ms: TLS set-up).
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30), repr=False)

    def close(self) -> None:
        self.http.close()

    def _admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.http.request(method, self.url + path, headers=headers, **kwargs)

    def _tenant(self, name: str) -> None:
        """`name` exists, is active, has no quota, and `tokens[name]` is its live token."""
        token = self.tokens.get(name)
        if token is not None:
            me = self.http.get(
                f"{self.url}/v1/whoami", headers={"Authorization": f"Bearer {token}"}
            )
            if me.status_code == 200 and me.json()["tenant"] == name:
                self._admin("PUT", f"/v1/tenants/{name}/quota", json={})
                return
        r = self._admin("POST", "/v1/tenants", json={"name": name})
        if r.status_code == 409:  # it exists (rotated or revoked by a fuzzed admin call)
            r = self._admin("POST", f"/v1/tenants/{name}/token")
        assert r.status_code in (200, 201), r.text
        self.tokens[name] = r.json()["token"]
        self._admin("PUT", f"/v1/tenants/{name}/quota", json={})

    def prepare(self) -> None:
        """Put the seeded world back if the last call may have changed it."""
        if not self.dirty:
            return
        for name in TENANTS:
            self._tenant(name)
        if REVOKED not in self.tokens:
            self._tenant(REVOKED)
        gone = self._admin("GET", f"/v1/tenants/{REVOKED}").json()
        if gone["active"] or REVOKED not in self.tokens:
            # Rotated by a fuzzed call: the token we hold is dead either way; revoke again.
            self._admin("DELETE", f"/v1/tenants/{REVOKED}")
        names = {m["name"] for m in self._admin("GET", "/v1/models").json()["models"]}
        for name in SEEDED.keys() - names:
            spec = {**python_spec(name), "artifact": {"uri": "m"}}
            r = self._admin("POST", "/v1/models", json=spec)
            assert r.status_code == 201, r.text
        self.dirty = False
        self.known = None

    def before(self) -> dict[str, Any]:
        """The state before a call that must not change it (or only its tenant's models)."""
        if self.known is None:
            self.known = self.state()
        return self.known

    def state(self) -> dict[str, Any]:
        """Every model and tenant as stored (what a refused call must leave alone)."""
        models = self._admin("GET", "/v1/models").json()["models"]
        tenants = self._admin("GET", "/v1/tenants").json()["tenants"]
        return {
            "models": {m["name"]: m for m in models},
            # `holding` follows the models; the rest is the tenant as stored
            "tenants": {t["name"]: {**t, "holding": None} for t in tenants},
        }

    def apply(self, case: Any, cred: Credential) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        value = cred.header(self.tokens)
        if value is not None:
            headers["Authorization"] = value
        case.headers = headers

    def check(
        self, case: Any, cred: Credential, response: Any, before: dict[str, Any] | None
    ) -> None:
        """The credential's properties on one answer; `before`: the state before a change."""
        status = response.status_code
        method = case.method.upper()
        if method != "GET" and status < 300:
            self.dirty = True
        if method != "GET" and cred.acts_as == ADMIN:
            self.known = None  # whatever it answered, an admin's call may have changed things
        security = case.operation.definition.raw.get("security")
        assert security is not None, f"{case.operation.label}: no security in the document"
        if security == []:
            return  # the header is not read (health, metrics, render)
        required = {} not in security
        admin_only = any("admin" in req.get("bearer", []) for req in security)
        label = f"{case.operation.label} with {cred.name}"
        who = cred.acts_as
        unrouted = status in (404, 405) and response.text in (
            '{"error":"Not Found"}',
            '{"error":"Method Not Allowed"}',
        )
        if unrouted or status == 413:  # the router / body limit answered before any handler
            return
        if who == REFUSED or (who == ANONYMOUS and required):
            self.refused += 1
            assert status == 401, f"{label}: {status} (a refused token must be a 401)"
        elif admin_only and who != ADMIN:
            assert status == 403, f"{label}: {status} (admin-only, a tenant token: 403)"
        else:
            assert status not in (401, 403) or (status == 403 and method != "GET"), (
                f"{label}: {status} {response.text[:300]}"
            )
        if before is not None:
            after = self.known = self.state()
            if who == ADMIN:
                return
            for kind in ("models", "tenants"):
                for name in before[kind].keys() | after[kind].keys():
                    owner = name if kind == "tenants" else None
                    if kind == "models":
                        record = before[kind].get(name) or after[kind][name]
                        owner = record["tenant"]
                    if who in TENANTS and kind == "models" and owner == who:
                        continue  # its own models are its to change
                    assert before[kind].get(name) == after[kind].get(name), (
                        f"{label} changed {kind[:-1]} {name!r} ({status})"
                    )
        if who in (ADMIN, REFUSED):
            return
        self._no_leak(case, cred, response, label)

    def _no_leak(self, case: Any, cred: Credential, response: Any, label: str) -> None:
        request = response.request
        sent = str(request.url) + (
            request.body.decode("utf-8", "replace")
            if isinstance(request.body, bytes)
            else str(request.body or "")
        )
        hidden = [n for n, owner in SEEDED.items() if not _sees(cred.acts_as, owner)]
        for name in hidden:
            if name in sent:
                self._same_as_missing(case, cred, response, name, label)
            else:
                assert name not in response.text, f"{label}: the answer names {name!r}"

    def _same_as_missing(
        self, case: Any, cred: Credential, response: Any, name: str, label: str
    ) -> None:
        """`name` is a model `cred` may not see: the answer is a missing model's, word for word."""
        self.cross_tenant += 1
        status = response.status_code
        assert not 200 <= status < 300 and status not in (403, 409), (
            f"{label} reached {name!r}: {status}"
        )
        request = response.request
        missing = "plain-missing" if SEEDED[name] is None else f"{SEEDED[name]}.missing-x"
        body = request.body
        if isinstance(body, bytes):
            body = body.replace(name.encode(), missing.encode())
        elif isinstance(body, str):
            body = body.replace(name, missing)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        again = self.http.request(
            request.method,
            str(request.url).replace(name, missing),
            headers=headers,
            content=body,
        )
        assert again.status_code == status, (
            f"{label}: {status} for {name!r} but {again.status_code} for a missing model"
        )
        assert again.text.replace(missing, name) == response.text, (
            f"{label}: {response.text[:200]!r} for {name!r}, {again.text[:200]!r} when missing"
        )


def with_names(schema: Any) -> Any:
    """The schema with the seeded names mixed into path names and spec bodies."""
    model_names = st.sampled_from([*SEEDED, *MISSING])
    tenant_names = st.sampled_from([*TENANTS, REVOKED, "nobody"])

    @schema.hook
    def before_generate_path_parameters(ctx: Any, strategy: Any) -> Any:
        op = ctx.operation
        if op is None or "{name}" not in op.path:
            return strategy
        names = tenant_names if op.path.startswith("/v1/tenants/") else model_names
        named = st.fixed_dictionaries({"name": names})
        return st.one_of(strategy, named, named)  # two in three: a seeded or missing name

    @schema.hook
    def before_generate_body(ctx: Any, strategy: Any) -> Any:
        op = ctx.operation
        if (
            op is not None
            and op.path.startswith("/v1/models")
            and op.method.upper()
            in (
                "POST",
                "PUT",
            )
        ):
            return st.one_of(strategy, _tenant_specs())
        return strategy

    return schema


SCENARIO_TENANTS = ("team-a", "team-b")


@dataclass
class TenantScenarios:
    """Tenant routes in the linked (stateful) fuzz: create a tenant → its token registers and
    changes models under its prefix → quota → rotate / revoke → its old token is refused.

    A tenant cannot be deleted (DELETE revokes it), so each scenario gets fresh tenant names
    (`team-a-<n>`): hypothesis replays a scenario and needs the same calls to get the same
    answers, and a second create of one name would be a 409. The generated bodies name
    `team-a`; `before_call` renames them for the scenario and picks the token: the admin's for
    tenant routes and unowned models, the owning tenant's (the last one issued) for its models.
    """

    url: str
    scenario: int = 0
    tokens: dict[str, str] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    tenant_calls: int = 0
    refused_after_revoke: int = 0
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30), repr=False)

    def setup(self) -> None:
        """A new scenario: fresh names; `team-a` is created first (the admin's call), so its
        token is in play from the first step; the fuzzer creates `team-b` through the API."""
        self.scenario += 1
        self.tokens.clear()
        self.revoked.clear()
        name = self._rename(SCENARIO_TENANTS[0])
        r = self.http.post(
            f"{self.url}/v1/tenants",
            json={"name": name},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 201, r.text
        self.tokens[name] = r.json()["token"]

    def _rename(self, text: str) -> str:
        for base in SCENARIO_TENANTS:
            if text == base or text.startswith(base + "."):
                return f"{base}-{self.scenario}{text[len(base) :]}"
        return text

    def close(self) -> None:
        self.http.close()

    def _fresh(self, name: str) -> str:
        """Any valid tenant name a create sends, made this scenario's (a replay of the
        scenario must not meet the tenant its first run created: a 409)."""
        try:
            check_tenant_name(name)
        except ValueError:
            return name  # invalid stays invalid
        suffix = f"-s{self.scenario}"
        return name[: 32 - len(suffix)] + suffix

    def before_call(self, case: Any) -> None:
        if isinstance(case.body, dict) and isinstance(case.body.get("name"), str):
            name = case.body["name"]
            if case.operation.path == "/v1/tenants" and name not in SCENARIO_TENANTS:
                name = self._fresh(name)
            case.body = {**case.body, "name": self._rename(name)}
        name = (case.path_parameters or {}).get("name")
        if isinstance(name, str):
            case.path_parameters = {**case.path_parameters, "name": self._rename(name)}
            name = case.path_parameters["name"]
        elif isinstance(case.body, dict):
            name = case.body.get("name")
        token = ADMIN_TOKEN
        owner = name.partition(".")[0] if isinstance(name, str) and "." in name else None
        if case.operation.path.startswith("/v1/models") and owner in self.tokens:
            # (a tenant's own model, or another's name in its prefix: the owner's token)
            token = self.tokens[owner]
            self.tenant_calls += 1
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, "Authorization": f"Bearer {token}"}

    def _whoami(self, token: str) -> httpx.Response:
        return self.http.get(f"{self.url}/v1/whoami", headers={"Authorization": f"Bearer {token}"})

    def after_call(self, response: Any, case: Any) -> None:
        """Follow the tokens; check at once that an issued one works and a revoked one not."""
        op = case.operation
        status = response.status_code
        sent = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
        if sent != ADMIN_TOKEN and sent in self.tokens.values():
            owner = next(n for n, t in self.tokens.items() if t == sent)
            if owner in self.revoked:
                self.refused_after_revoke += 1
                assert status == 401, f"{op.label} with {owner}'s revoked token: {status}"
            else:
                assert status != 401, f"{op.label} with {owner}'s live token: 401"
        if not op.path.startswith("/v1/tenants") or status >= 300:
            return
        body = response.json()
        if "name" not in body:  # the list
            return
        name = body["name"]
        if "token" in body:  # created or rotated: the new token works, the old one not
            old = self.tokens.get(name)
            self.tokens[name] = body["token"]
            self.revoked.discard(name)
            assert self._whoami(body["token"]).json()["tenant"] == name
            if old is not None:
                assert self._whoami(old).status_code == 401, f"{name}'s rotated token works"
        if case.method.upper() == "DELETE" and name in self.tokens:
            self.revoked.add(name)
            token = self.tokens[name]
            self.refused_after_revoke += 1
            assert self._whoami(token).status_code == 401, f"{name}'s token works after revoke"


def scenario_specs() -> st.SearchStrategy[dict[str, Any]]:
    """Valid specs named under the scenario tenants' prefixes or under none."""
    return _tenant_specs((f"{SCENARIO_TENANTS[0]}.", f"{SCENARIO_TENANTS[1]}.", ""))


def tenant_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"name": st.sampled_from(SCENARIO_TENANTS)})
