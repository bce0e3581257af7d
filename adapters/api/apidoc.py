"""The control API's OpenAPI document: request bodies, every real status code, and links.

The routes read their bodies themselves (JSON or YAML, size-limited), so FastAPI cannot infer a
request schema; this module states it (`ModelSpec`, in its validation form), documents every
status code a route really answers with, and adds the OpenAPI links (register → read, update,
delete, ensure) that stateful clients and fuzzers (schemathesis) follow. The document is a
contract the fuzz tests hold the app to: an undocumented status code is a finding.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from controlplane.spec import NAME_SCHEMA, ModelSpec

_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What was wrong and what to change"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "generation", "created_at", "updated_at", "spec", "inline_files"],
    "properties": {
        "name": {"type": "string", **NAME_SCHEMA},
        "generation": {
            "type": "integer",
            "minimum": 1,
            "description": "Grows by one with every accepted PUT: orders acknowledgements",
        },
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
        "spec": {"$ref": "#/components/schemas/ModelSpec"},
        "inline_files": {"type": "array", "items": {"type": "string"}},
    },
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds"}}

E401 = {401: _error("A token is configured and the request lacks it (Authorization: Bearer)")}
E404 = {404: _error("No model of that name is registered")}
E409 = {409: _error("The name is taken (POST) or the model changed meanwhile (PUT): retry")}
E413 = {413: _error("The body exceeds --max-body-bytes")}
E422 = {422: _error("Invalid input; `detail` names each field and what to change")}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_NAME = "$response.body#/name"
_LINKS = {
    "GetModel": {"operationId": "get_model", "parameters": {"name": _NAME}},
    "UpdateModel": {
        "operationId": "update_model",
        "parameters": {"name": _NAME},
        "requestBody": "$response.body#/spec",
    },
    "DeleteModel": {"operationId": "delete_model", "parameters": {"name": _NAME}},
    "EnsureModel": {"operationId": "ensure", "parameters": {"name": _NAME}},
    "ModelStatus": {"operationId": "model_status", "parameters": {"name": _NAME}},
    "ModelConfig": {"operationId": "model_config", "parameters": {"name": _NAME}},
}


def _record(description: str, links: tuple[str, ...] = ()) -> dict[str, Any]:
    out = _json("ModelRecord", description)
    if links:
        out["links"] = {k: _LINKS[k] for k in links}
    return out


_ALL_LINKS = tuple(_LINKS)
REGISTER = {
    201: _record("Registered at generation 1", _ALL_LINKS),
    **E401,
    **E409,
    **E413,
    **E422,
}
READ = {200: _record("The registered record", _ALL_LINKS), **E404, **E422}
UPDATE = {200: _record("Stored as the next generation", _ALL_LINKS), **E401, **E404}
UPDATE |= {**E409, **E413, **E422}
DELETE = {200: _record("Removed; its replicas are unloaded within two ticks"), **E401, **E404}
DELETE |= E422
BY_NAME = {**E404, **E422}
RENDER = {**E413, **E422}
ENSURE = {
    200: {"description": "A replica is READY; the body is the model's status"},
    503: _error(
        "No replica READY within the timeout: the body is the model's status plus `error` "
        "(why); retry after Retry-After",
        _RETRY_AFTER,
    ),
    **E401,
    **E404,
    **E422,
}

SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A model spec, as JSON (or YAML with Content-Type: application/yaml)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelSpec"}}},
    }
}


def install(app: FastAPI) -> None:
    """Build the document once, with the spec's schemas and the shared ones as components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        spec = ModelSpec.model_json_schema(ref_template=_REF)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(spec.pop("$defs", {}))
        components["ModelSpec"] = spec
        components["Error"] = ERROR_SCHEMA
        components["ModelRecord"] = RECORD_SCHEMA
        for path in doc["paths"].values():
            for op in path.values():
                for param in op.get("parameters", []):
                    if param["in"] == "path" and param["name"] == "name":
                        param["schema"].update(NAME_SCHEMA)
                # FastAPI adds its own 422 (HTTPValidationError) to routes with parameters; our
                # handler answers with the Error shape instead.
                if "422" in op.get("responses", {}):
                    op["responses"]["422"] = E422[422]
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
