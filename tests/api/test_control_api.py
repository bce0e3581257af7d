"""The control API in-process (httpx ASGI transport) over a real SQLite store.

Covers the registry's REST surface and every kind of bad input the issue names: each answer is
a 4xx naming the field, and nothing already stored changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
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
from tests.support import python_spec


class Api:
    def __init__(self, tmp_path: Path, token: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.store = self.loop.run_until_complete(SqliteStore(tmp_path / "db.sqlite").open())
        root = tmp_path / "models"
        (root / "good" / "1").mkdir(parents=True, exist_ok=True)
        (root / "good" / "1" / "model.py").write_text("# ok\n")
        registry = Registry(
            self.store,
            Renderer(ProtobufSchema(), TemplateFiles()),
            ArtifactPolicy(PurePosixPath(str(root))),
            time.time,
        )
        self.registry = registry
        self.root = root
        self.use(create_app(ApiContext(registry=registry, api_token=token, max_body_bytes=1 << 20)))

    def use(self, app: Any) -> None:
        """Talk to `app` (one built over this registry) from now on."""
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        )

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, path, **kw))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path)
    yield a
    a.close()


def _fields(r: httpx.Response) -> list[str]:
    return [d["field"] for d in r.json()["detail"]]


def test_register_list_get_update_config_delete(api: Api) -> None:
    r = api("POST", "/v1/models", json=python_spec("m1"))
    assert r.status_code == 201, r.text
    assert r.json()["generation"] == 1
    assert r.json()["inline_files"] == ["1/model.py"]
    assert api("GET", "/v1/models").json()["models"][0]["name"] == "m1"
    assert api("GET", "/v1/models/m1").json()["spec"]["backend"] == "python"
    cfg = api("GET", "/v1/models/m1/config")
    assert cfg.headers["content-type"].startswith("text/plain")
    assert 'name: "m1"' in cfg.text and 'backend: "python"' in cfg.text

    changed = python_spec("m1", min_replicas=1)
    r = api("PUT", "/v1/models/m1", json=changed)
    assert r.status_code == 200 and r.json()["generation"] == 2
    assert api("GET", "/v1/models/m1").json()["spec"]["policy"]["min_replicas"] == 1

    assert api("POST", "/v1/models", json=python_spec("m1")).status_code == 409
    assert api("DELETE", "/v1/models/m1").status_code == 200
    assert api("GET", "/v1/models/m1").status_code == 404
    assert api("DELETE", "/v1/models/m1").status_code == 404
    assert api("PUT", "/v1/models/m1", json=changed).status_code == 404


def test_yaml_body_and_docs_and_metrics(api: Api) -> None:
    body = (
        "name: y1\nbackend: python\nmax_batch_size: 0\ninputs: [{name: A, datatype: FP32, dims: [1]}]\n"
        "outputs: [{name: B, datatype: FP32, dims: [1]}]\nartifact: {files: {'1/model.py': 'x = 1'}}\n"
    )
    r = api("POST", "/v1/models", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert api("GET", "/docs").status_code == 200
    assert "/v1/models" in api("GET", "/openapi.json").json()["paths"]
    metrics = api("GET", "/metrics").text
    assert "tritonfleet_models_registered 1.0" in metrics
    assert 'tritonfleet_api_requests_total{code="201",method="POST",route="/v1/models"}' in metrics
    assert api("GET", "/healthz").json() == {"status": "ok"}


BAD_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    ("traversal name", {"name": "../etc/passwd"}, "name", "no '/', '..'"),
    ("dotdot name", {"name": "a..b"}, "name", "'..'"),
    ("percent name", {"name": "a%2Fb"}, "name", "'%'"),
    ("nul name", {"name": "a\x00b"}, "name", "letters, digits"),
    ("5 MB name", {"name": "x" * (5 * 1024 * 1024)}, "", ""),  # 413: over the body limit
    ("long name", {"name": "x" * 300}, "name", "at most 128"),
    ("unknown backend", {"backend": "caffe2"}, "backend", "unknown backend 'caffe2'"),
    (
        "dims rank 0",
        {"inputs": [{"name": "I", "datatype": "FP32", "dims": []}]},
        "inputs.0.dims",
        "rank 0",
    ),
    (
        "zero dim",
        {"outputs": [{"name": "O", "datatype": "FP32", "dims": [0]}]},
        "outputs.0.dims",
        "positive or -1",
    ),
    (
        "batching without batch",
        {"max_batch_size": 0},
        "dynamic_batching",
        "needs max_batch_size > 0",
    ),
    (
        "priority out of range",
        {"dynamic_batching": {"priority_levels": 2, "default_priority_level": 3}},
        "dynamic_batching",
        "must be in [1, priority_levels=2]",
    ),
    (
        "file uri outside root",
        {"artifact": {"uri": "file:///etc"}},
        "artifact.uri",
        "outside the local model root",
    ),
    (
        "relative escape",
        {"artifact": {"uri": "../../etc"}},
        "artifact.uri",
        "outside the local model root",
    ),
    (
        "http uri",
        {"artifact": {"uri": "http://evil.example/m"}},
        "artifact.uri",
        "scheme 'http' is not supported",
    ),
    (
        "inline traversal",
        {"artifact": {"files": {"../model.py": "x"}}},
        "artifact",
        "must be relative",
    ),
    ("trailing newline name", {"name": "abc\n"}, "name", "letters, digits"),
    (
        "ensemble with batching",
        {
            "backend": "ensemble",
            "artifact": None,
            "ensemble_steps": [
                {"model_name": "a", "input_map": {"IN": "INPUT0"}, "output_map": {"OUT": "OUTPUT0"}}
            ],
            "instance_groups": [],
        },
        "dynamic_batching",
        "an ensemble is scheduled by its steps",
    ),
    (
        "float correlation id",
        {
            "dynamic_batching": None,
            "sequence_batching": {"control": {"corrid": "C", "corrid_datatype": "FP32"}},
        },
        "sequence_batching.control.corrid_datatype",
        "must be UINT64, INT64",
    ),
    ("slo p95 above p99", {"slo": {"p95_ms": 300, "p99_ms": 200}}, "slo", "p95_ms (300) exceeds"),
    ("slo zero", {"slo": {"p95_ms": 0}}, "slo.p95_ms", "greater than 0"),
    ("slo absurd", {"slo": {"p99_ms": 10**9}}, "slo.p99_ms", "less than or equal to 600000"),
    ("slo empty", {"slo": {}}, "slo", "give p95_ms, p99_ms or both"),
    (
        "slo error rate",
        {"slo": {"p99_ms": 100, "max_error_rate": 1.5}},
        "slo.max_error_rate",
        "less than 1",
    ),
    (
        "admission zero",
        {"admission": {"max_inflight": 0}},
        "admission.max_inflight",
        "out of range",
    ),
    ("admission word", {"admission": {"max_inflight": "lots"}}, "admission.max_inflight", "auto"),
    (
        "utilization over 1",
        {"autoscaling": {"target_utilization": 2}},
        "autoscaling.target_utilization",
        "less than or equal to 1",
    ),
    ("unknown scaling policy", {"autoscaling": {"policy": "magic"}}, "autoscaling.policy", "slo"),
    (
        "batching bounds reversed",
        {"autoscaling": {"batching": {"min_queue_delay_us": 9000, "max_queue_delay_us": 100}}},
        "autoscaling.batching",
        "min_queue_delay_us (9000) exceeds",
    ),
    (
        "batching without a batcher",
        {"dynamic_batching": None, "autoscaling": {"batching": {}}},
        "autoscaling.batching",
        "add dynamic_batching",
    ),
    ("unknown field", {"flavour": "spicy"}, "flavour", "Extra inputs are not permitted"),
    ("wrong type", {"max_batch_size": "lots"}, "max_batch_size", "valid integer"),
    # pydantic alone reads `true` as 1: a spec that says `max_batch_size: true` is a mistake.
    ("boolean as a number", {"max_batch_size": True}, "max_batch_size", "write the number"),
    (
        "boolean in a list of numbers",
        {"dynamic_batching": {"preferred_batch_sizes": [4, True]}},
        "dynamic_batching.preferred_batch_sizes",
        "write the number",
    ),
    (
        "boolean in the fleet policy",
        {"policy": {"min_replicas": False}},
        "policy.min_replicas",
        "write the number",
    ),
]


@pytest.mark.parametrize("case", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_specs_are_refused_clearly_and_change_nothing(
    api: Api, case: tuple[str, dict[str, Any], str, str]
) -> None:
    _, patch, field, text = case
    assert api("POST", "/v1/models", json=python_spec("keep")).status_code == 201
    before = api("GET", "/v1/models").json()
    spec = {**python_spec("newcomer"), **patch}
    for method, path in (("POST", "/v1/models"), ("PUT", "/v1/models/keep")):
        body = {**spec, "name": spec["name"] if method == "POST" or "name" in patch else "keep"}
        r = api(method, path, json=body)
        assert 400 <= r.status_code < 500, r.text
        assert len(r.content) < 10_000  # the offending input is never echoed back
        if r.status_code == 413:
            assert "exceeds" in r.json()["error"]
            continue
        assert r.status_code == 422, r.text
        details = r.json()["detail"]
        if field:
            assert any(d["field"].startswith(field) for d in details), details
        assert any(text in d["message"] for d in details), details
    assert api("GET", "/v1/models").json() == before


def test_bad_names_in_urls_and_bodies(api: Api) -> None:
    assert api("GET", "/v1/models/..%2F..%2Fetc").status_code in (404, 422)
    r = api("GET", "/v1/models/a..b")
    assert r.status_code == 422 and _fields(r) == ["name"]
    r = api(
        "POST", "/v1/models", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and _fields(r) == ["body"]
    r = api("POST", "/v1/models", json=[1, 2])
    assert r.status_code == 422 and "JSON object" in r.json()["detail"][0]["message"]
    r = api("PUT", "/v1/models/other", json=python_spec("m2"))
    assert r.status_code == 422 and "differs from the URL" in r.json()["detail"][0]["message"]


def test_local_path_under_root_is_accepted(api: Api) -> None:
    spec = {**python_spec("good"), "artifact": {"uri": "good"}}
    assert api("POST", "/v1/models", json=spec).status_code == 201
    spec2 = {**python_spec("good2"), "artifact": {"uri": f"file://{api.root}/good"}}
    assert api("POST", "/v1/models", json=spec2).status_code == 201


def test_mutations_need_the_token(tmp_path: Path) -> None:
    a = Api(tmp_path, token="s3cret")
    try:
        r = a("POST", "/v1/models", json=python_spec("m"))
        assert r.status_code == 401 and "Bearer" in r.json()["error"]
        r = a("POST", "/v1/models", json=python_spec("m"), headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        ok = a(
            "POST", "/v1/models", json=python_spec("m"), headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 201
        assert a("GET", "/v1/models").status_code == 200  # reads stay open
        assert a("DELETE", "/v1/models/m").status_code == 401
    finally:
        a.close()


def test_ensure_timeout_must_be_a_finite_number(api: Api) -> None:
    assert api("POST", "/v1/models", json=python_spec("m")).status_code == 201
    for bad in ("nan", "inf", "-1", "601", "soon"):
        r = api("POST", f"/v1/models/m/ensure?timeout_s={bad}")
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"][0]["field"].endswith("timeout_s")


def test_decisions_of_unknown_and_fleetless_models(api: Api) -> None:
    assert api("GET", "/v1/models/nobody/decisions").status_code == 404
    assert api("POST", "/v1/models", json=python_spec("m")).status_code == 201
    r = api("GET", "/v1/models/m/decisions")
    assert r.status_code == 200 and r.json() == {"name": "m", "decisions": []}


def test_generations_of_a_name_never_repeat_across_delete(tmp_path: Path) -> None:
    """A name deleted and registered again continues after its last generation (SQLite keeps
    it across restarts), so the generation orders every acknowledged change of a name and the
    reconciler never mistakes the new registration for the old one it still serves."""
    for run, first in enumerate((1, 4)):
        api = Api(tmp_path)  # the second run reopens the same database: a restart
        try:
            r = api("POST", "/v1/models", json=python_spec("m"))
            assert r.json()["generation"] == first, (run, r.text)
            changed = python_spec("m", min_replicas=1)
            assert api("PUT", "/v1/models/m", json=changed).json()["generation"] == first + 1
            assert api("DELETE", "/v1/models/m").json()["generation"] == first + 1
            assert (
                api("POST", "/v1/models", json=python_spec("m")).json()["generation"] == first + 2
            )
            assert api("DELETE", "/v1/models/m").status_code == 200
        finally:
            api.close()
