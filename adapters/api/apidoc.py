"""The control API's OpenAPI document: request bodies, every real status code, and links.

The routes read their bodies themselves (JSON or YAML, size-limited), so FastAPI cannot infer a
request schema; this module states it (`ModelSpec`, in its validation form), documents every
status code a route really answers with, and adds the OpenAPI links (register → read, update,
delete, ensure; tenant creation → quota, rotation, revocation) that stateful clients and
fuzzers (schemathesis) follow, and who may call each operation (the `bearer` security scheme;
every route states its requirement). The document is a contract the fuzz tests hold the app
to: an undocumented status code, or a token rule the code does not keep, is a finding.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from controlplane.spec import NAME_SCHEMA, ModelSpec
from controlplane.tenants import TENANT_NAME_SCHEMA, TenantCreate

_REF = "#/components/schemas/{model}"
Responses = dict[int | str, dict[str, Any]]  # what FastAPI's `responses=` takes

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
        "tenant": {"type": ["string", "null"], "description": "The owning tenant, if any"},
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

E401: Responses = {
    401: _error(
        "The call needs a token and has none, or the token is neither the admin's nor a live "
        "tenant's (Authorization: Bearer)"
    )
}
E403: Responses = {
    403: _error("The token may not do this (a tenant token, or over its tenant's quota)")
}
E404: Responses = {404: _error("No model of that name is registered")}
E409: Responses = {
    409: _error("The name is taken (POST) or the model changed meanwhile (PUT): retry")
}
E413: Responses = {413: _error("The body exceeds --max-body-bytes")}
E422: Responses = {422: _error("Invalid input; `detail` names each field and what to change")}
E501: Responses = {
    501: _error("The feature is not enabled in this embedding (tritonfleet always enables it)")
}
TENANT_404: Responses = {404: _error("No tenant of that name")}
_STREAM_503 = _error(
    "No fleet attached, or TRITONFLEET_UI_STREAM_MAX_CLIENTS streams are open: retry after "
    "Retry-After",
    _RETRY_AFTER,
)


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
REGISTER: Responses = {
    201: _record("Registered at generation 1", _ALL_LINKS),
    **E401,
    **E403,
    **E409,
    **E413,
    **E422,
}
READ: Responses = {200: _record("The registered record", _ALL_LINKS), **E401, **E404, **E422}
UPDATE: Responses = {
    200: _record("Stored as the next generation", _ALL_LINKS),
    **E401,
    **E403,
    **E404,
}
UPDATE |= {**E409, **E413, **E422}
DELETE: Responses = {
    200: _record("Removed; its replicas are unloaded within two ticks"),
    **E401,
    **E404,
}
DELETE |= E422
BY_NAME: Responses = {**E401, **E404, **E422}
READ_ANY: Responses = E401  # a token is optional on reads, but a wrong one is refused
GATEWAY_ONLY: Responses = {
    **E401,
    403: _error("The call needs the admin token (it is the gateway's)"),
}
RENDER: Responses = {**E413, **E422}
ENSURE: Responses = {
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

_TENANT_NAME = "$response.body#/name"
_TENANT_LINKS = {
    "GetTenant": {"operationId": "get_tenant", "parameters": {"name": _TENANT_NAME}},
    "SetQuota": {"operationId": "set_quota", "parameters": {"name": _TENANT_NAME}},
    "RotateToken": {"operationId": "rotate_token", "parameters": {"name": _TENANT_NAME}},
    "RevokeTenant": {"operationId": "revoke_tenant", "parameters": {"name": _TENANT_NAME}},
}


def _tenant_links(*names: str) -> dict[str, Any]:
    return {"links": {k: _TENANT_LINKS[k] for k in names}}


TENANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "prefix", "quota", "created_at", "revoked_at", "active"],
    "properties": {
        "name": {"type": "string", **TENANT_NAME_SCHEMA},
        "prefix": {"type": "string", "description": "Its models are named '<prefix>*'"},
        "quota": {"$ref": "#/components/schemas/Quota"},
        "created_at": {"type": "number"},
        "revoked_at": {"type": ["number", "null"]},
        "active": {"type": "boolean"},
        "holding": {
            "type": "object",
            "description": "What its models hold now (reads only)",
            "properties": {
                "models": {"type": "integer", "minimum": 0},
                "replicas": {"type": "integer", "minimum": 0},
                "memory_bytes": {"type": "integer", "minimum": 0},
            },
        },
        "token": {
            "type": "string",
            "description": "The tenant's token (create and rotate only; shown once)",
        },
    },
}
_TENANT = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tenant"}}}}
_ADMIN: Responses = {**E401, **E403, **E501}
CREATE_TENANT: Responses = {
    201: {
        "description": "Created; `token` is shown this once",
        **_TENANT,
        **_tenant_links(*_TENANT_LINKS),
    },
    **_ADMIN,
    409: _error("The tenant exists, or unowned models already use its prefix"),
    **E413,
    **E422,
}
LIST_TENANTS: Responses = {
    200: {
        "description": "Every tenant (revoked ones too) and what it holds",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["tenants"],
                    "properties": {
                        "tenants": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Tenant"},
                        }
                    },
                }
            }
        },
    },
    **_ADMIN,
}
GET_TENANT: Responses = {200: {"description": "The tenant and what it holds", **_TENANT}, **_ADMIN}
GET_TENANT |= {**TENANT_404, **E422}
SET_QUOTA: Responses = {
    200: {
        "description": "The new quota applies at once",
        **_TENANT,
        **_tenant_links("GetTenant", "RevokeTenant"),
    },
    **_ADMIN,
}
SET_QUOTA |= {**TENANT_404, **E413, **E422}
ROTATE: Responses = {
    200: {
        "description": "A new token (the old one stops working)",
        **_TENANT,
        **_tenant_links("GetTenant", "SetQuota", "RevokeTenant"),
    },
    **_ADMIN,
}
ROTATE |= {**TENANT_404, **E422}
REVOKE: Responses = {
    200: {
        "description": "Revoked: its token stops working at once. The tenant stays (GET shows "
        "it with `active: false`); its models keep serving and stay its own; a token rotation "
        "makes it active again",
        **_TENANT,
        **_tenant_links("GetTenant", "RotateToken"),
    },
    **_ADMIN,
}
REVOKE |= {**TENANT_404, **E422}

WHOAMI: Responses = {
    200: {
        "description": "Who the token acts as",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["admin", "tenant", "role"],
                    "properties": {
                        "admin": {"type": "boolean"},
                        "tenant": {"type": ["string", "null"]},
                        "role": {"type": "string"},
                    },
                }
            }
        },
    },
    **E401,
}

_USAGE_ROW: dict[str, Any] = {
    "type": "object",
    "required": ["replica_s", "memory_gib_h", "gpu_s", "requests", "compute_s"],
    "properties": {
        "replica_s": {"type": "number", "minimum": 0},
        "memory_gib_h": {"type": "number", "minimum": 0},
        "gpu_s": {"type": ["number", "null"], "minimum": 0},
        "requests": {"type": "integer", "minimum": 0},
        "compute_s": {"type": "number", "minimum": 0},
    },
    "description": "One group; its key is named after `by` (tenant, tag or model)",
}
USAGE: Responses = {
    200: {
        "description": "Usage per group over [from, to): JSON, or CSV with ?format=csv or "
        "Accept: text/csv",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["from", "to", "by", "bucket_s", "tenant", "rows"],
                    "properties": {
                        "from": {"type": "number"},
                        "to": {"type": "number"},
                        "by": {"type": "string", "enum": ["tenant", "model", "tag"]},
                        "bucket_s": {"type": "number"},
                        "tenant": {"type": ["string", "null"]},
                        "rows": {"type": "array", "items": _USAGE_ROW},
                    },
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    },
    **E401,
    **E422,
    **E501,
}

_LATENCY: dict[str, Any] = {
    "description": "Per visible model: state, SLO targets and measurements as rows in "
    "`columns` order (values finite or null)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["autopilot", "columns", "models"],
                "properties": {
                    "autopilot": {"type": "boolean"},
                    "window_s": {"type": "number"},
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "models": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "required": ["state", "slo", "points"],
                            "properties": {
                                "state": {"type": "string"},
                                "slo": {"type": "object"},
                                "points": {"type": "array", "items": {"type": "array"}},
                            },
                        },
                    },
                },
            }
        }
    },
}
LATENCY: Responses = {
    200: _LATENCY,
    **E401,
    404: _error("`model` is not a model this token may see"),
    **E422,
}
MODEL_LATENCY: Responses = {200: _LATENCY, **E401, **E404, **E422}


def _event(name: str, data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """One server-sent event as the stream parser reads it: `data` is a JSON document."""
    return {
        "type": "object",
        "required": ["event", "data", *fields],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"type": "object", **data},
            },
            **fields,
        },
    }


# Per event (OpenAPI before 3.2 reads `schema` of an event stream as one event's schema).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _event(
            "hello",
            {
                "required": ["last_seq", "heartbeat_s"],
                "properties": {
                    "last_seq": {"type": "integer", "minimum": 0},
                    "heartbeat_s": {"type": "number", "exclusiveMinimum": 0},
                },
            },
            retry={"type": "integer", "minimum": 0},
        ),
        _event(
            "decision",
            {
                "required": ["seq", "at", "kind", "model", "summary", "detail"],
                "properties": {
                    "seq": {"type": "integer", "minimum": 1},
                    "at": {"type": "number"},
                    "kind": {"enum": ["autopilot", "placement", "replica", "fleet"]},
                    "model": {"type": ["string", "null"]},
                    "summary": {"type": "string"},
                    "detail": {"type": "object"},
                },
            },
            id={"type": "string", "pattern": "^[0-9]+$"},
        ),
        _event(
            "gap",
            {"required": ["missed"], "properties": {"missed": {"type": "integer", "minimum": 1}}},
        ),
        _event("bye", {"required": ["reason"], "properties": {"reason": {"type": "string"}}}),
    ]
}
EVENTS: Responses = {
    200: {
        "description": "Server-sent events (`hello`, `decision` with an id, `gap`, `bye`) and "
        "keepalive comments, until the client leaves or TRITONFLEET_UI_STREAM_MAX_S",
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
    },
    **E401,
    **E422,
    503: _STREAM_503,
}

SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A model spec, as JSON (or YAML with Content-Type: application/yaml)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelSpec"}}},
    }
}


def _body(ref: str, description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
        }
    }


# Who may call: the bearer scheme and each operation's requirement (OpenAPI 3.1 lets an HTTP
# scheme's requirement name roles: `admin` marks the admin-only routes, where a tenant token
# gets 403). Every route states one (`install` refuses a document where one does not), taken
# from the route's dependency in control.py: `writer` and `admin` need a token, `caller` takes
# one optionally (a wrong one is still a 401), and a route without one ignores the header.
BEARER = "bearer"
SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`: the admin token (`api_token`, "
        "TRITONFLEET_API_TOKEN) sees and changes everything and alone manages tenants (the "
        "`admin` role); a tenant token (`tft_...`) sees and changes only its tenant's models "
        "(another tenant's model is a 404, as a missing one). An unknown, malformed or revoked "
        "token is a 401 wherever the header is read. Without an `api_token` the API is open: "
        "a call without a token acts as the admin.",
    }
}
TOKEN: dict[str, Any] = {"security": [{BEARER: []}]}  # the admin token or a tenant token
ADMIN_TOKEN: dict[str, Any] = {"security": [{BEARER: ["admin"]}]}
TOKEN_OPTIONAL: dict[str, Any] = {"security": [{BEARER: []}, {}]}  # none: no tenant's models
NO_TOKEN: dict[str, Any] = {"security": []}  # the header is not read


TENANT_BODY = _body("TenantCreate", "The tenant's name (a DNS label) and, optionally, its quota")
QUOTA_BODY = _body("Quota", "The whole quota (a field left out is unlimited)")


def install(app: FastAPI, token_required: bool = True) -> None:
    """Build the document once, with the spec's schemas and the shared ones as components.

    `token_required`: whether an admin token is set. Without one the API is open (a call
    without a token acts as the admin), and the document says so: every operation's token is
    optional (`{}` among its requirements)."""

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
        tenant = TenantCreate.model_json_schema(ref_template=_REF)
        components.update(tenant.pop("$defs", {}))
        components["TenantCreate"] = tenant
        components["Tenant"] = TENANT_SCHEMA
        for route, path in doc["paths"].items():
            names = TENANT_NAME_SCHEMA if route.startswith("/v1/tenants/") else NAME_SCHEMA
            for op in path.values():
                for param in op.get("parameters", []):
                    if (param["in"], param["name"]) in (("path", "name"), ("query", "model")):
                        # a `model` query is optional: its schema is anyOf [string, null]
                        schema = param["schema"]
                        target = next(
                            (s for s in schema.get("anyOf", []) if s.get("type") == "string"),
                            schema,
                        )
                        target.pop("maxLength", None)
                        target.update(names if param["in"] == "path" else NAME_SCHEMA)
                # FastAPI adds its own 422 (HTTPValidationError) to routes with parameters; our
                # handler answers with the Error shape instead.
                if "422" in op.get("responses", {}):
                    op["responses"]["422"] = E422[422]
            for method, op in path.items():
                if "security" not in op:
                    raise RuntimeError(
                        f"{method.upper()} {route} states no security requirement: give its "
                        "route openapi_extra=apidoc.TOKEN, ADMIN_TOKEN, TOKEN_OPTIONAL or NO_TOKEN"
                    )
                if not token_required and op["security"] and {} not in op["security"]:
                    op["security"] = [*op["security"], {}]
        doc["components"]["securitySchemes"] = SECURITY_SCHEMES
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
