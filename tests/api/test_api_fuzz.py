"""The control API fuzzed from its own OpenAPI document (schemathesis), over real HTTP, plus
one regression test per finding the fuzzing made.

The suite runs a bounded, derandomized sample (tens of seconds); `python -m
benchmarks.api_fuzz` runs the long form. The fleet behind the API is the in-memory `FakeFleet`
(an emulation, see tests/api/fuzzing.py); the app, store, registry and reconciler are real, and
tenants, chargeback and the dashboard's feed are wired as `adapters.runtime` wires them. The
event stream is fuzzed whole: the served app ends each stream after `STREAM_MAX_S`, and every
event is checked against the document's per-event schema.

Twice: the API open (no admin token), and with auth on (an admin token, tenants), where each
call carries admin, tenant, missing or hostile credentials and the linked scenarios include
the tenant routes (tests/api/fuzzauth.py states the properties).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from adapters.api.control import ApiContext, create_app
from controlplane.spec import ModelSpec
from tests.api.fuzzauth import ADMIN_TOKEN, SEEDED, Tenancy, TenantScenarios, with_names
from tests.api.fuzzing import (
    STREAM_MAX_S,
    FuzzReport,
    ServedApi,
    fuzz_lifecycle,
    fuzz_operations,
    lifecycle_schema,
    load_schema,
    operations,
    tenant_lifecycle_schema,
)
from tests.api.test_control_api import Api
from tests.api.test_tenants import ADMIN_TOKEN as TENANT_ADMIN_TOKEN
from tests.api.test_tenants import TenantApi
from tests.support import python_spec


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    api = ServedApi(tmp_path_factory.mktemp("fuzz")).start()
    yield api
    api.stop()


def test_every_operation_holds_to_its_document(served: ServedApi) -> None:
    report = FuzzReport()
    schema = load_schema(served.url)
    n_ops = sum(1 for _ in operations(schema))
    assert n_ops >= 25  # the tenant, usage and dashboard routes are in the document
    failures = fuzz_operations(schema, 25, report)
    assert not failures, "\n\n".join(f"{op}: {exc}" for op, exc in failures)
    assert report.calls >= n_ops * 25 * 0.5  # every operation ran (a dead fuzzer fails here)
    # No 5xx at all, 501 included: the served app enables every feature, as the runtime does.
    assert all(code < 500 for code in report.by_status)


def test_lifecycle_sequences_follow_the_links(served: ServedApi) -> None:
    report = FuzzReport()
    fuzz_lifecycle(lifecycle_schema(served.url), 40, report)
    # The links were followed: registrations succeeded and were read, changed and deleted.
    assert report.by_status.get(201, 0) > 5 and report.by_status.get(200, 0) > 20


# --- regressions: one per finding ---------------------------------------------------------


def _doc(api: Api) -> dict[str, Any]:
    doc: dict[str, Any] = api("GET", "/openapi.json").json()
    return doc


def test_metrics_is_documented_as_text(api: Api) -> None:
    """Finding: /metrics answered text/plain (Prometheus) while the document said JSON."""
    op = _doc(api)["paths"]["/metrics"]["get"]
    assert list(op["responses"]["200"]["content"]) == ["text/plain"]
    assert api("GET", "/metrics").headers["content-type"].startswith("text/plain")


def test_names_are_constrained_in_the_document(api: Api) -> None:
    """Finding: the document allowed any string as a model name (body and path), so clients
    generated from it sent names the API refuses with 422."""
    doc = _doc(api)
    pattern = doc["components"]["schemas"]["ModelSpec"]["properties"]["name"]
    param = doc["paths"]["/v1/models/{name}"]["get"]["parameters"][0]["schema"]
    for schema in (pattern, param):
        validator = jsonschema.Draft202012Validator(schema)
        assert validator.is_valid("resnet50.v2-int8")
        for bad in ("", "a..b", "../x", "-x", "a b", "x" * 129, "a%2Fb"):
            assert not validator.is_valid(bad), bad
            if bad:  # ("/v1/models/" redirects to the list)
                r = api("GET", f"/v1/models/{bad}")
                assert r.status_code in (404, 422), (bad, r.status_code)


def test_kserve_datatypes_are_documented(api: Api) -> None:
    """Finding: the API accepts KServe's FP32/BYTES (and KIND-less CPU), the document listed
    only TYPE_FP32 / KIND_CPU, so a spec the API takes failed validation against its schema."""
    doc = _doc(api)
    schema = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/ModelSpec", "components": doc["components"]}
    )
    spec = {**python_spec("m"), "instance_groups": [{"count": 1, "kind": "CPU"}]}
    errors = [e.message for e in schema.iter_errors(spec)]
    assert errors == []
    ModelSpec.model_validate(spec)  # and the API takes it


def test_ensure_503_names_why_and_keeps_the_status(tmp_path: Path) -> None:
    """Finding: a 503 from ensure had no `error` (its documented shape) and said nothing of
    why; it now carries the model's status, the reason and Retry-After."""

    class Cold:
        def model_status(self, name: str) -> dict[str, Any]:
            return {"name": name, "replicas": [], "unplaced_reason": "no server has 64 MiB free"}

        async def ensure_status(self, name: str, timeout_s: float) -> dict[str, Any]:
            await asyncio.sleep(0)
            return self.model_status(name)

    api = Api(tmp_path)
    try:
        app = create_app(ApiContext(registry=api.registry, fleet=Cold()))  # type: ignore[arg-type]
        api.use(app)
        assert api("POST", "/v1/models", json=python_spec("m")).status_code == 201
        r = api("POST", "/v1/models/m/ensure?timeout_s=0")
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        body = r.json()
        assert "no READY replica" in body["error"] and "64 MiB free" in body["error"]
        assert body["name"] == "m" and body["replicas"] == []
    finally:
        api.close()


def test_fuzzed_app_is_wired_like_the_runtime(served: ServedApi) -> None:
    """Finding: the fuzzed app had no tenants, usage or event feed, so those routes answered
    501 (and the fuzzer tested nothing behind them). They answer as in production now."""
    url = served.url
    assert httpx.get(f"{url}/v1/tenants", timeout=30).status_code == 200
    usage = httpx.get(f"{url}/v1/usage", params={"format": "csv"}, timeout=30)
    assert usage.status_code == 200 and usage.text.startswith("tenant,replica_s,")
    assert httpx.get(f"{url}/v1/latency", timeout=30).json()["columns"]


def test_event_stream_ends_and_each_event_matches_its_schema(served: ServedApi) -> None:
    """GET /v1/events is fuzzed whole: the served app ends each stream after STREAM_MAX_S
    (TRITONFLEET_UI_STREAM_MAX_S, 600 s by default), and schemathesis checks every event
    against the per-event schema. Here: the stream really ends with `bye`, within seconds."""
    with httpx.stream("GET", f"{served.url}/v1/events", timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert text.startswith("retry: ") and "event: hello" in text
    assert text.rstrip().endswith('event: bye\ndata: {"reason":"max stream time"}')
    assert STREAM_MAX_S < 5


def test_disabled_features_document_501_for_embedders(api: Api) -> None:
    """An embedder's ApiContext may leave tenants and usage out: their routes answer 501 with
    the Error shape, and the document says so (tritonfleet itself always enables them)."""
    doc = _doc(api)
    for path, method in (
        ("/v1/tenants", "post"),
        ("/v1/tenants", "get"),
        ("/v1/tenants/{name}", "get"),
        ("/v1/tenants/{name}", "delete"),
        ("/v1/tenants/{name}/token", "post"),
        ("/v1/tenants/{name}/quota", "put"),
        ("/v1/usage", "get"),
    ):
        assert "501" in doc["paths"][path][method]["responses"], (method, path)
    r = api("GET", "/v1/tenants")
    assert r.status_code == 501 and "not enabled" in r.json()["error"]
    r = api("GET", "/v1/usage")
    assert r.status_code == 501 and "not enabled" in r.json()["error"]


def test_usage_documents_json_and_csv(api: Api) -> None:
    """Finding: /v1/usage answered text/csv (format=csv or Accept: text/csv) undocumented."""
    content = _doc(api)["paths"]["/v1/usage"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/csv"}


def test_tenant_paths_state_the_tenant_name_rule(api: Api) -> None:
    """Finding: tenant path names took the model-name schema (dots, capitals, 128 chars) while
    the API takes DNS labels of at most 32; the document now states the tenant rule."""
    doc = _doc(api)
    param = doc["paths"]["/v1/tenants/{name}"]["get"]["parameters"][0]["schema"]
    body = doc["components"]["schemas"]["TenantCreate"]["properties"]["name"]
    for schema in (param, body):
        validator = jsonschema.Draft202012Validator(schema)
        assert validator.is_valid("team-a")
        for bad in ("Team", "a.b", "-a", "a-", "x" * 33, ""):
            assert not validator.is_valid(bad), bad


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path)
    yield a
    a.close()


# --- token paths: auth on (an admin token, tenants), credentials drawn per call -----------


@pytest.fixture(scope="module")
def served_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    api = ServedApi(tmp_path_factory.mktemp("fuzzauth"), api_token=ADMIN_TOKEN).start()
    yield api
    api.stop()


def test_every_operation_holds_to_its_token_rules(served_auth: ServedApi) -> None:
    """Admin, tenant, missing and hostile tokens on every operation: 401/403 as documented,
    refused calls change nothing, no tenant sees or changes another's models (fuzzauth.py)."""
    report = FuzzReport()
    tenancy = Tenancy(served_auth.url)
    schema = with_names(load_schema(served_auth.url))
    try:
        failures = fuzz_operations(schema, 25, report, tenancy=tenancy)
    finally:
        tenancy.close()
    assert not failures, "\n\n".join(f"{op}: {exc}" for op, exc in failures)
    # The credentials really varied and met other tenants' models (a dead fuzzer fails here).
    assert tenancy.refused > 100 and tenancy.cross_tenant >= 3, (tenancy, report.by_status)
    assert report.by_status.get(401, 0) > 100 and report.by_status.get(200, 0) > 50


def test_the_document_states_who_may_call(tmp_path: Path) -> None:
    """The bearer scheme and each operation's requirement, as the code enforces them: changes
    need a token, tenant routes and /v1/replicas the admin's (role `admin`), reads take one
    optionally, health, metrics and render ignore it. Without an admin token every token is
    optional (the API is open)."""
    api = TenantApi(tmp_path)
    try:
        doc = api("GET", "/openapi.json").json()
    finally:
        api.close()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    token, admin, optional = [{"bearer": []}], [{"bearer": ["admin"]}], [{"bearer": []}, {}]
    want = {
        ("post", "/v1/models"): token,
        ("put", "/v1/models/{name}"): token,
        ("delete", "/v1/models/{name}"): token,
        ("post", "/v1/models/{name}/ensure"): token,
        ("get", "/v1/usage"): token,
        ("get", "/v1/replicas"): admin,
        ("post", "/v1/tenants"): admin,
        ("get", "/v1/tenants/{name}"): admin,
        ("delete", "/v1/tenants/{name}"): admin,
        ("get", "/v1/models"): optional,
        ("get", "/v1/models/{name}"): optional,
        ("get", "/v1/events"): optional,
        ("get", "/v1/whoami"): optional,
        ("get", "/healthz"): [],
        ("get", "/metrics"): [],
        ("post", "/v1/config/render"): [],
    }
    for (method, path), security in want.items():
        assert doc["paths"][path][method]["security"] == security, (method, path)
    ops = [op for path in doc["paths"].values() for op in path.values()]
    assert all("security" in op for op in ops)

    open_api = TenantApi(tmp_path / "open", api_token=None)
    try:
        doc = open_api("GET", "/openapi.json").json()
    finally:
        open_api.close()
    for path in doc["paths"].values():
        for op in path.values():
            assert op["security"] == [] or {} in op["security"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/usage?from=yesterday",
        "/v1/latency?limit=0",
        "/v1/models/m/latency?limit=0",
        "/v1/events?after=-1",
    ],
)
def test_a_wrong_token_is_refused_before_any_parameter_is_read(tmp_path: Path, path: str) -> None:
    """Finding (token fuzzing): usage and the dashboard's routes read their parameters before
    the token, so a wrong token with a bad parameter got a 422 naming the field, and usage
    without a token too; a wrong token is a 401 first now, as on every other route."""
    api = TenantApi(tmp_path)
    try:
        assert api("GET", path, "tft_wrong").status_code == 401
        if path.startswith("/v1/usage"):
            assert api("GET", path).status_code == 401
        assert api("GET", path, TENANT_ADMIN_TOKEN).status_code == 422  # the parameter is bad
    finally:
        api.close()


def test_tenant_lifecycle_sequences_follow_the_links(served_auth: ServedApi) -> None:
    """Linked scenarios with the tenant routes, auth on: create a tenant → its token registers
    and changes its models → quota → rotate / revoke → its old token is refused (401)."""
    report = FuzzReport()
    scenarios = TenantScenarios(served_auth.url)
    try:
        fuzz_lifecycle(tenant_lifecycle_schema(served_auth.url), 40, report, scenarios)
    finally:
        scenarios.close()
    assert scenarios.tenant_calls > 10, (scenarios, report.by_status)
    assert scenarios.refused_after_revoke > 0, (scenarios, report.by_status)
    assert report.by_status.get(201, 0) > 5 and report.by_status.get(200, 0) > 20


def test_every_named_operation_answers_for_a_hidden_model_as_for_a_missing_one(
    served_auth: ServedApi,
) -> None:
    """The sweep beside the fuzz: every documented operation on `/v1/models/{name}...`, called
    by each tenant and without a token on each model it may not see, answers exactly as for a
    missing name of the same owner (status and body), and changes nothing."""
    tenancy = Tenancy(served_auth.url)
    try:
        tenancy.prepare()
        doc = httpx.get(f"{served_auth.url}/openapi.json", timeout=30).json()
        ops = [
            (method.upper(), path)
            for path, item in doc["paths"].items()
            if path.startswith("/v1/models/{name}")
            for method in item
        ]
        assert len(ops) >= 8
        before = tenancy.state()
        checked = 0
        for who, header in (
            ("alpha", f"Bearer {tenancy.tokens['alpha']}"),
            ("beta", f"Bearer {tenancy.tokens['beta']}"),
            ("anonymous", None),
        ):
            headers = {"Authorization": header} if header else {}
            for name, owner in SEEDED.items():
                if owner == who or (owner is None and who == "anonymous"):
                    continue
                missing = "plain-missing" if owner is None else f"{owner}.missing-x"
                for method, path in ops:
                    answers = []
                    for n in (name, missing):
                        spec = {**python_spec(n), "artifact": {"uri": "m"}}
                        r = httpx.request(
                            method,
                            served_auth.url + path.replace("{name}", n),
                            headers=headers,
                            json=spec if method == "PUT" else None,
                            timeout=30,
                        )
                        answers.append((r.status_code, r.text.replace(n, "NAME")))
                    assert answers[0] == answers[1], (who, method, path, name, answers)
                    assert answers[0][0] in (401, 404), (who, method, path, answers[0])
                    checked += 1
        assert checked >= 8 * 6
        assert tenancy.state() == before
    finally:
        tenancy.close()


def test_ambiguous_authorization_is_refused(served_auth: ServedApi) -> None:
    """Findings (token fuzzing, by hand beside it): two Authorization headers were taken as
    the first (the admin token and a bogus one: admin; a tenant's then the admin's: that
    tenant), and the admin token followed by a no-break space (0xA0, legal in a header) was
    the admin (str.strip took it off). Both are a 401 over real HTTP now; spaces between scheme
    and token and a lowercase scheme still work (RFC 7235), a tab after the scheme does not."""
    tenancy = Tenancy(served_auth.url)
    try:
        tenancy.prepare()
        tenant = tenancy.tokens["alpha"].encode()
        admin = ADMIN_TOKEN.encode()
        url = f"{served_auth.url}/v1/whoami"
        refused = [
            [(b"Authorization", b"Bearer " + admin), (b"Authorization", b"Bearer bogus")],
            [(b"Authorization", b"Bearer " + tenant), (b"Authorization", b"Bearer " + admin)],
            [(b"Authorization", b"Bearer " + admin + b"\xa0")],
            [(b"Authorization", b"Bearer \xa0" + admin)],
        ]
        for headers in refused:
            r = httpx.get(url, headers=headers, timeout=30)
            assert r.status_code == 401, (headers, r.text)
        for value in (b"Bearer  " + admin, b"bearer " + admin, b"Bearer\t " + admin):
            r = httpx.get(url, headers=[(b"Authorization", value)], timeout=30)
            want = 401 if value.startswith(b"Bearer\t") else 200
            assert r.status_code == want, (value, r.text)
            if want == 200:
                assert r.json()["admin"] is True
        # and a refused change stores nothing
        before = tenancy.state()
        r = httpx.post(
            f"{served_auth.url}/v1/models",
            headers=[(b"Authorization", b"Bearer " + tenant), (b"Authorization", b"Bearer x")],
            json={**python_spec("alpha.dup"), "artifact": {"uri": "m"}},
            timeout=30,
        )
        assert r.status_code == 401 and tenancy.state() == before
    finally:
        tenancy.close()
