"""The control REST API: the registry (`/v1/models`), fleet status and on-demand loads.

Built by `create_app(context)`; there is no module-level app. Mutating calls need
`Authorization: Bearer <token>` when a token is configured. Errors are mapped in `errors.py`.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import yaml
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.api import apidoc, errors
from controlplane.errors import FieldProblem, InvalidSpec, Unauthorized
from controlplane.registry import Registry
from controlplane.spec import ModelSpec, check_model_name
from controlplane.store import ModelRecord


class FleetView(Protocol):
    """What the API asks of the reconciler (status and on-demand loads)."""

    def fleet_status(self) -> dict[str, Any]: ...

    def model_status(self, name: str) -> dict[str, Any]: ...

    async def ensure_status(self, name: str, timeout_s: float) -> dict[str, Any]: ...

    def counters(self) -> dict[str, float]:
        """Monotonic counters and gauges to export on /metrics (name -> value)."""
        ...

    def directory(self) -> dict[str, Any]:
        """Ready replicas and routing facts per registered model (for a gateway apart)."""
        ...

    def decisions(self, name: str) -> list[dict[str, Any]]:
        """The autopilot's recent decisions for `name`, oldest first, with inputs and reasons."""
        ...

    def scaling_metrics(self) -> dict[str, dict[Any, int]]:
        """`actions`: {(model, action): count}; `desired`: {model: replicas wanted}."""
        ...


@dataclass
class ApiContext:
    registry: Registry
    fleet: FleetView | None = None
    api_token: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    ensure_timeout_s: float = 30.0


class BodyLimit:
    """413 before a too-large body is read: by Content-Length, or while streaming it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": f"request body exceeds {self.max_bytes} bytes; send a smaller spec "
                "(large model files belong in a repository 'uri')"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _FleetCollector(Collector):
    """Exports the reconciler's counters at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, fleet: FleetView) -> None:
        self._fleet = fleet

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self._fleet.counters().items()):
            family = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            yield family(name.removesuffix("_total"), name.replace("_", " "), value=value)
        scaling = self._fleet.scaling_metrics()
        actions = CounterMetricFamily(
            "tritonfleet_autopilot_actions",
            "Autopilot decisions that changed something, by model and action.",
            labels=["model", "action"],
        )
        for (model, action), n in sorted(scaling["actions"].items()):
            actions.add_metric([model, action], n)
        yield actions
        desired = GaugeMetricFamily(
            "tritonfleet_autopilot_desired_replicas",
            "Replicas the autopilot wants per model.",
            labels=["model"],
        )
        for model, n in sorted(scaling["desired"].items()):
            desired.add_metric([model], n)
        yield desired


def record_view(record: ModelRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "generation": record.generation,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "spec": record.spec.model_dump(mode="json", exclude={"artifact": {"files"}}),
        "inline_files": sorted(record.spec.artifact.files or {}) if record.spec.artifact else [],
    }


def _name(name: str) -> str:
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise InvalidSpec([FieldProblem("name", str(exc))]) from exc


async def _spec_from(request: Request) -> ModelSpec:
    raw = await request.body()
    ctype = request.headers.get("content-type", "application/json")
    try:
        data = yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw or b"null")
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidSpec(
            [
                FieldProblem(
                    "body", f"not valid {'YAML' if 'yaml' in ctype else 'JSON'}: {exc}"[:300]
                )
            ]
        ) from exc
    if not isinstance(data, dict):
        raise InvalidSpec([FieldProblem("body", "must be a JSON object (a model spec)")])
    return ModelSpec.model_validate(data)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="tritonfleet control API",
        version="0.1.0",
        description="Register models once; tritonfleet renders, places and keeps them warm.",
        generate_unique_id_function=lambda route: route.name,  # operationIds the links name
    )
    errors.install(app)
    apidoc.install(app)
    metrics = CollectorRegistry()
    requests_total = Counter(
        "tritonfleet_api_requests",
        "Control API requests",
        ["method", "route", "code"],
        registry=metrics,
    )
    latency = Histogram(
        "tritonfleet_api_request_seconds", "Control API latency", ["route"], registry=metrics
    )
    models_gauge = Gauge("tritonfleet_models_registered", "Registered models", registry=metrics)
    if ctx.fleet is not None:
        metrics.register(_FleetCollector(ctx.fleet))

    @app.middleware("http")
    async def _count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        requests_total.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, max_bytes=ctx.max_body_bytes)

    def authorize(request: Request) -> None:
        if ctx.api_token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token, ctx.api_token):
            raise Unauthorized(
                "this call changes state and needs 'Authorization: Bearer <token>' "
                "(the token tritonfleet was started with)"
            )

    mutating = [Depends(authorize)]
    registry = ctx.registry

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        models_gauge.set(len(await registry.list()))
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/models",
        status_code=201,
        dependencies=mutating,
        responses=apidoc.REGISTER,
        openapi_extra=apidoc.SPEC_BODY,
    )
    async def register(request: Request) -> dict[str, Any]:
        return record_view(await registry.register(await _spec_from(request)))

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [record_view(r) for r in await registry.list()]}

    @app.get("/v1/models/{name}", responses=apidoc.READ)
    async def get_model(name: str) -> dict[str, Any]:
        return record_view(await registry.get(_name(name)))

    @app.put(
        "/v1/models/{name}",
        dependencies=mutating,
        responses=apidoc.UPDATE,
        openapi_extra=apidoc.SPEC_BODY,
    )
    async def update_model(name: str, request: Request) -> dict[str, Any]:
        return record_view(await registry.update(_name(name), await _spec_from(request)))

    @app.delete("/v1/models/{name}", dependencies=mutating, responses=apidoc.DELETE)
    async def delete_model(name: str) -> dict[str, Any]:
        return record_view(await registry.delete(_name(name)))

    @app.get("/v1/models/{name}/config", response_class=PlainTextResponse, responses=apidoc.BY_NAME)
    async def model_config(name: str) -> str:
        return (await registry.get(_name(name))).config_pbtxt

    @app.post(
        "/v1/config/render",
        response_class=PlainTextResponse,
        responses=apidoc.RENDER,
        openapi_extra=apidoc.SPEC_BODY,
    )
    async def render(request: Request) -> str:
        return registry.render(await _spec_from(request)).pbtxt

    @app.get("/v1/fleet")
    async def fleet() -> JSONResponse:
        if ctx.fleet is None:
            return JSONResponse({"servers": [], "note": "no fleet attached"})
        return JSONResponse(ctx.fleet.fleet_status())

    @app.get("/v1/replicas")
    async def replicas() -> JSONResponse:
        """Where each registered model is ready now: what a separate gateway polls."""
        if ctx.fleet is None:
            return JSONResponse({"models": {}})
        return JSONResponse(ctx.fleet.directory())

    @app.get("/v1/models/{name}/status", responses=apidoc.BY_NAME)
    async def model_status(name: str) -> dict[str, Any]:
        await registry.get(_name(name))
        if ctx.fleet is None:
            return {"name": name, "replicas": [], "note": "no fleet attached"}
        return ctx.fleet.model_status(name)

    @app.get("/v1/models/{name}/decisions", responses=apidoc.BY_NAME)
    async def decisions(name: str) -> dict[str, Any]:
        await registry.get(_name(name))
        rows = ctx.fleet.decisions(name) if ctx.fleet is not None else []
        return {"name": name, "decisions": rows}

    @app.post("/v1/models/{name}/ensure", dependencies=mutating, responses=apidoc.ENSURE)
    async def ensure(
        name: str,
        timeout_s: float | None = Query(
            None, ge=0, le=600, allow_inf_nan=False, description="How long to hold (seconds)"
        ),
    ) -> JSONResponse:
        await registry.get(_name(name))
        if ctx.fleet is None:
            return JSONResponse({"error": "no fleet attached"}, status_code=503)
        wait = timeout_s if timeout_s is not None else ctx.ensure_timeout_s
        status = await ctx.fleet.ensure_status(name, wait)
        if any(r.get("state") == "READY" for r in status.get("replicas", [])):
            return JSONResponse(status)
        why = status.get("last_error") or status.get("unplaced_reason") or "still loading"
        status["error"] = f"model {name!r} has no READY replica after {wait:g}s ({why}); retry"
        return JSONResponse(status, status_code=503, headers={"Retry-After": "2"})

    return app
