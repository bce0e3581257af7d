"""Tenants through the control API (in-process ASGI) over a real SQLite store.

Isolation: tenant B reads, updates, deletes, ensures and inspects tenant A's model and gets
404 every time (never a 403 that would confirm it exists), and nothing of A's changes. Bad
input (tenant names, quota values, unknown tenants) is a 4xx naming the field.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.api.control import ApiContext, create_app
from adapters.sqlitestore import SqliteStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.registry import Registry
from controlplane.tenants import TenantRegistry
from tests.support import python_spec

ADMIN_TOKEN = "admin-s3cret"


class TenantApi:
    """The control API with tenants enabled and an admin token, on a fresh SQLite file."""

    def __init__(self, tmp_path: Path, api_token: str | None = ADMIN_TOKEN) -> None:
        self.path = tmp_path / "db.sqlite"
        self.loop = asyncio.new_event_loop()
        self.api_token = api_token
        self._open()

    def _open(self) -> None:
        self.store = self.loop.run_until_complete(SqliteStore(self.path).open())
        self.tenants = self.loop.run_until_complete(TenantRegistry(self.store, time.time).load())
        registry = Registry(
            self.store,
            Renderer(ProtobufSchema(), TemplateFiles()),
            ArtifactPolicy(None),
            time.time,
            self.tenants,
        )
        app = create_app(
            ApiContext(registry=registry, api_token=self.api_token, tenants=self.tenants)
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        )

    def reopen(self) -> None:
        """A restarted control plane on the same file."""
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.store.close())
        self._open()

    def __call__(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.loop.run_until_complete(
            self.client.request(method, path, headers=headers, **kw)
        )

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self(method, path, ADMIN_TOKEN, **kw)

    def create_tenant(self, name: str, **quota: Any) -> str:
        r = self.admin("POST", "/v1/tenants", json={"name": name, "quota": quota})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TenantApi]:
    a = TenantApi(tmp_path)
    yield a
    a.close()


def _fields(r: httpx.Response) -> list[str]:
    return [d["field"] for d in r.json()["detail"]]


def test_tenant_b_gets_404_on_everything_of_a_and_nothing_changes(api: TenantApi) -> None:
    a = api.create_tenant("team-a")
    b = api.create_tenant("team-b")
    r = api("POST", "/v1/models", a, json=python_spec("team-a.m"))
    assert r.status_code == 201, r.text
    assert r.json()["tenant"] == "team-a"
    before = api("GET", "/v1/models/team-a.m", a).json()

    for method, suffix in (
        ("GET", ""),
        ("PUT", ""),
        ("DELETE", ""),
        ("POST", "/ensure"),
        ("GET", "/status"),
        ("GET", "/config"),
        ("GET", "/decisions"),
    ):
        answers = []
        # A's model, and a model that does not exist at all: nothing tells them apart.
        for name in ("team-a.m", "team-a.nope"):
            kw = {"json": python_spec(name, min_replicas=1)} if method == "PUT" else {}
            r = api(method, f"/v1/models/{name}{suffix}", b, **kw)
            assert r.status_code == 404, (method, suffix, r.status_code, r.text)
            answers.append(r.json()["error"].replace(name, "NAME"))
        assert answers[0] == answers[1]
    assert api("GET", "/v1/models", b).json() == {"models": []}
    # B cannot register into A's namespace either: refused as a bad name, existing or not.
    for name in ("team-a.m", "team-a.other"):
        r = api("POST", "/v1/models", b, json=python_spec(name))
        assert r.status_code == 422 and _fields(r) == ["name"], r.text
    # An ensemble of B's cannot reach A's model by name.
    ens = {
        "name": "team-b.ens",
        "backend": "ensemble",
        "inputs": [{"name": "I", "datatype": "FP32", "dims": [4]}],
        "outputs": [{"name": "O", "datatype": "FP32", "dims": [4]}],
        "ensemble_steps": [
            {
                "model_name": "team-a.m",
                "input_map": {"INPUT0": "I"},
                "output_map": {"OUTPUT0": "O"},
            }
        ],
    }
    r = api("POST", "/v1/models", b, json=ens)
    assert r.status_code == 422 and "ensemble_steps.0.model_name" in _fields(r), r.text

    after = api("GET", "/v1/models/team-a.m", a).json()
    assert after == before and after["generation"] == 1
    assert [m["name"] for m in api.admin("GET", "/v1/models").json()["models"]] == ["team-a.m"]


def test_tenant_changes_its_own_models_and_admin_sees_all(api: TenantApi) -> None:
    a = api.create_tenant("alpha")
    assert api("GET", "/v1/whoami", a).json() == {
        "admin": False,
        "tenant": "alpha",
        "role": "alpha",
    }
    assert api("POST", "/v1/models", a, json=python_spec("alpha.m")).status_code == 201
    r = api("PUT", "/v1/models/alpha.m", a, json=python_spec("alpha.m", max_replicas=2))
    assert r.status_code == 200 and r.json()["generation"] == 2
    assert api.admin("POST", "/v1/models", json=python_spec("shared")).json()["tenant"] is None
    # The admin registering in a tenant's prefix registers for that tenant.
    assert api.admin("POST", "/v1/models", json=python_spec("alpha.x")).json()["tenant"] == "alpha"
    assert [m["name"] for m in api("GET", "/v1/models", a).json()["models"]] == [
        "alpha.m",
        "alpha.x",
    ]
    # No token (when an admin token is set) reads the models of no tenant only.
    assert [m["name"] for m in api("GET", "/v1/models").json()["models"]] == ["shared"]
    assert api("GET", "/v1/models/alpha.m").status_code == 404
    assert api("DELETE", "/v1/models/alpha.m", a).status_code == 200
    assert api("GET", "/v1/models/alpha.m", a).status_code == 404


def test_tokens_are_hashed_revocable_and_rotatable(api: TenantApi) -> None:
    a = api.create_tenant("alpha")
    assert a.startswith("tft_") and len(a) > 40
    raw = api.path.read_bytes() + (api.path.parent / "db.sqlite-wal").read_bytes()
    assert a.encode() not in raw  # only the hash is stored
    listed = api.admin("GET", "/v1/tenants").json()["tenants"]
    assert [t["name"] for t in listed] == ["alpha"] and "token" not in listed[0]
    assert not any("sha" in k for k in listed[0])

    assert api.admin("DELETE", "/v1/tenants/alpha").json()["active"] is False
    r = api("GET", "/v1/models", a)
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    new = api.admin("POST", "/v1/tenants/alpha/token").json()["token"]
    assert new != a
    assert api("GET", "/v1/models", new).status_code == 200
    assert api("GET", "/v1/models", a).status_code == 401
    api.reopen()  # the hash survives a restart; the token still works, the old one does not
    assert api("GET", "/v1/whoami", new).json()["tenant"] == "alpha"
    assert api("GET", "/v1/models", a).status_code == 401


def test_tenant_management_is_admin_only(api: TenantApi) -> None:
    a = api.create_tenant("alpha")
    for method, path in (
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("DELETE", "/v1/tenants/alpha"),
        ("POST", "/v1/tenants/alpha/token"),
    ):
        assert api(method, path, a, json={"name": "zz"}).status_code == 403, path
        assert api(method, path, json={"name": "zz"}).status_code == 401, path
    assert api("GET", "/v1/replicas", a).status_code == 403
    assert api("GET", "/v1/replicas").status_code == 401
    assert api("GET", "/v1/models", "tft_not-a-token").status_code == 401
    assert api("GET", "/v1/models", a).status_code == 200


def test_bad_tenant_input_names_the_field(api: TenantApi) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "x" * 40}, "name"),
        ({"name": "ok", "quota": {"replicas": -1}}, "quota.replicas"),
        ({"name": "ok", "quota": {"memory_bytes": "lots"}}, "quota.memory_bytes"),
        ({"name": "ok", "quota": {"memory_bytes": 0}}, "quota.memory_bytes"),
        ({"name": "ok", "quota": {"requests_per_s": 0}}, "quota.requests_per_s"),
        ({"name": "ok", "quota": {"cpus": 3}}, "quota.cpus"),
        ({}, "name"),
    ]
    for body, field in cases:
        r = api.admin("POST", "/v1/tenants", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in _fields(r), (body, r.text)
    r = api.admin("POST", "/v1/tenants", content=b"[1]", headers={"content-type": "x/json"})
    assert r.status_code == 422
    assert api.admin("GET", "/v1/tenants").json() == {"tenants": []}
    for method, path in (
        ("GET", "/v1/tenants/ghost"),
        ("DELETE", "/v1/tenants/ghost"),
        ("POST", "/v1/tenants/ghost/token"),
        ("PUT", "/v1/tenants/ghost/quota"),
    ):
        r = api.admin(method, path, json={})
        assert r.status_code == 404 and "tenant 'ghost'" in r.json()["error"], (path, r.text)
    api.create_tenant("dup")
    assert api.admin("POST", "/v1/tenants", json={"name": "dup"}).status_code == 409
    # A tenant name whose prefix unowned models already use would adopt them: refused.
    api.admin("POST", "/v1/models", json=python_spec("legacy.m"))
    r = api.admin("POST", "/v1/tenants", json={"name": "legacy"})
    assert r.status_code == 409 and "legacy.*" in r.json()["error"]


def test_booleans_are_not_quotas(api: TenantApi) -> None:
    """Finding (schemathesis): `{"requests_per_s": true}` made a tenant with a rate of 1/s
    (`true` coerced to 1); a JSON boolean for any quota is now a 422 naming the field, on
    create and on a quota change, and nothing is stored."""
    for key in ("memory_bytes", "replicas", "models", "requests_per_s", "burst"):
        r = api.admin("POST", "/v1/tenants", json={"name": "b", "quota": {key: True}})
        assert r.status_code == 422 and f"quota.{key}" in _fields(r), (key, r.text)
    assert api.admin("GET", "/v1/tenants").json() == {"tenants": []}
    api.create_tenant("b", requests_per_s=5, burst=10)  # integers stay valid numbers
    r = api.admin("PUT", "/v1/tenants/b/quota", json={"requests_per_s": False})
    assert r.status_code == 422 and _fields(r) == ["requests_per_s"], r.text
    assert api.admin("GET", "/v1/tenants/b").json()["quota"]["requests_per_s"] == 5


def test_bad_tenant_names_in_paths_are_422_and_not_echoed(api: TenantApi) -> None:
    """Finding (schemathesis): tenant routes looked any path name up, so a 1,000-character
    name came back in the 404's message; the name is now checked first (422 naming `name`)."""
    long = "x" * 1000
    for method, path in (
        ("GET", f"/v1/tenants/{long}"),
        ("DELETE", "/v1/tenants/Bad_Name"),
        ("POST", f"/v1/tenants/{long}/token"),
        ("PUT", "/v1/tenants/-x/quota"),
    ):
        r = api.admin(method, path, json={})
        assert r.status_code == 422 and _fields(r) == ["name"], (path, r.text)
        assert long not in r.text


def test_open_mode_without_admin_token(tmp_path: Path) -> None:
    """No api_token (a local `up`): no token acts as the admin; a tenant token still scopes."""
    api = TenantApi(tmp_path, api_token=None)
    try:
        r = api("POST", "/v1/tenants", json={"name": "t1"})
        assert r.status_code == 201
        t1 = r.json()["token"]
        api("POST", "/v1/models", json=python_spec("plain"))
        assert api("GET", "/v1/models", t1).json() == {"models": []}
        assert api("GET", "/v1/models/plain", t1).status_code == 404
        assert api("GET", "/v1/models", "wrong").status_code == 401
    finally:
        api.close()


def test_tags_are_stored_and_bad_tags_are_422_naming_tags(api: TenantApi) -> None:
    tags = {"team": "search", "cost_center": "42"}
    r = api.admin("POST", "/v1/models", json={**python_spec("tagged"), "tags": tags})
    assert r.status_code == 201 and r.json()["spec"]["tags"] == tags
    r = api.admin("PUT", "/v1/models/tagged", json={**python_spec("tagged"), "tags": {"a b": "x"}})
    assert r.status_code == 422 and _fields(r) == ["tags"] and "'a b'" in r.text
    assert api.admin("GET", "/v1/models/tagged").json()["spec"]["tags"] == tags


def test_registration_over_quota_is_refused_naming_the_quota(api: TenantApi) -> None:
    t = api.create_tenant("q", models=2, replicas=3, memory_bytes=200 << 20)
    r = api(
        "POST", "/v1/models", t, json=python_spec("q.a", min_replicas=2, max_replicas=2)
    )  # 128 MiB
    assert r.status_code == 201, r.text
    r = api("POST", "/v1/models", t, json=python_spec("q.b", min_replicas=2, max_replicas=2))
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "tenant 'q' quota exceeded"
    details = {d["field"]: d["message"] for d in body["detail"]}
    assert (
        "2 warm-floor replica(s) held + 2 asked > quota.replicas 3"
        in details["policy.min_replicas"]
    )
    assert f"> quota.memory_bytes {200 << 20}" in details["policy.memory_bytes"]
    assert api("GET", "/v1/models/q.b", t).status_code == 404  # nothing stored
    # An update is held to the quota too; the stored model is unchanged.
    r = api("PUT", "/v1/models/q.a", t, json=python_spec("q.a", min_replicas=4, max_replicas=4))
    assert r.status_code == 403 and "policy.min_replicas" in _fields(r)
    assert api("GET", "/v1/models/q.a", t).json()["generation"] == 1
    assert api("POST", "/v1/models", t, json=python_spec("q.b")).status_code == 201
    r = api("POST", "/v1/models", t, json=python_spec("q.c"))
    assert r.status_code == 403 and _fields(r) == ["quota.models"]
    assert "2 model(s) registered, the quota allows 2" in r.text
    # The admin raises the quota; the tenant can register again.
    r = api.admin("PUT", "/v1/tenants/q/quota", json={"models": 3})
    assert r.status_code == 200 and r.json()["quota"]["models"] == 3
    assert api("POST", "/v1/models", t, json=python_spec("q.c")).status_code == 201
    r = api.admin("PUT", "/v1/tenants/q/quota", json={"models": -3})
    assert r.status_code == 422 and _fields(r) == ["models"], r.text
    held = api.admin("GET", "/v1/tenants/q").json()["holding"]
    assert held == {"models": 3, "replicas": 2, "memory_bytes": 128 << 20}
