"""The control REST API: the registry (`/v1/models`), fleet status and on-demand loads.

Built by `create_app(context)`; there is no module-level app. Errors are mapped in `errors.py`.

Who calls (`Authorization: Bearer <token>`): the admin token (`api_token`) sees and changes
everything and manages tenants; a tenant token sees and changes only that tenant's models (any
other model is a 404); no token reads the models of no tenant and changes nothing. Without an
`api_token` the API is open: a call without a token acts as the admin (a local `up`).
The dashboard (`/ui`, `/v1/latency`, `/v1/events`) is added by `dashboard.install`, with the
same answer to who is calling.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import yaml
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.api import apidoc, dashboard, errors
from adapters.api.dashboard import UiConfig
from controlplane import visibility
from controlplane.errors import FieldProblem, InvalidSpec, NotSupported, Unauthorized
from controlplane.events import EventFeed
from controlplane.registry import Registry
from controlplane.spec import ModelSpec, check_model_name
from controlplane.store import ModelRecord
from controlplane.tenants import (
    ADMIN,
    ANONYMOUS,
    Forbidden,
    Holding,
    Principal,
    Quota,
    TenantCreate,
    TenantRegistry,
    check_tenant_name,
)
from controlplane.usage import BUCKET_S, GroupBy, UsageRow
from controlplane.views import LatencyJson


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

    def latency_json(
        self, sees: Callable[[str], bool], since: float | None, limit: int
    ) -> LatencyJson:
        """Per visible model: state, SLO targets, measurements after `since` (newest `limit`),
        as the JSON text of the latency routes, model by model."""
        ...

    @property
    def events(self) -> EventFeed:
        """The decision feed the dashboard streams."""
        ...


class UsageSource(Protocol):
    """What the API asks of chargeback (`adapters.usagerecorder.UsageRecorder`)."""

    async def report(
        self, from_s: float, to_s: float, by: GroupBy, tenant: str | None
    ) -> list[dict[str, object]]: ...

    def totals(self) -> dict[str, UsageRow]: ...


@dataclass
class ApiContext:
    registry: Registry
    fleet: FleetView | None = None
    api_token: str | None = None
    tenants: TenantRegistry | None = None
    usage: UsageSource | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    ensure_timeout_s: float = 30.0
    ui: UiConfig = field(default_factory=UiConfig)


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


class _UsageCollector(Collector):
    """Chargeback counters since this process started, by tenant and model (both bounded:
    tags are not labels, a tag set is unbounded)."""

    _FAMILIES: tuple[tuple[str, str, Callable[[UsageRow], float | None]], ...] = (
        ("replica_seconds", "Seconds of READY replicas", lambda r: r.replica_s),
        ("memory_byte_seconds", "Replica memory (bytes) times seconds", lambda r: r.memory_byte_s),
        ("gpu_seconds", "GPU-seconds, split by memory share on GPU servers", lambda r: r.gpu_s),
        ("requests", "Successful inference requests (Triton)", lambda r: r.requests),
        ("compute_seconds", "Triton compute time", lambda r: r.compute_us / 1e6),
    )

    def __init__(self, usage: UsageSource) -> None:
        self._usage = usage

    def collect(self) -> Iterator[Metric]:
        totals = sorted(self._usage.totals().items())
        for name, doc, value in self._FAMILIES:
            family = CounterMetricFamily(
                f"tritonfleet_usage_{name}",
                doc + ", by tenant and model",
                labels=["tenant", "model"],
            )
            for model, row in totals:
                v = value(row)
                if v is not None:
                    family.add_metric([row.tenant or "", model], v)
            yield family


def _instant(raw: str | None, field: str, default: float) -> float:
    """Seconds since the epoch from epoch seconds or an ISO-8601 time (UTC unless it says)."""
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw[:64].replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidSpec(
                [FieldProblem(field, "must be seconds since the epoch or an ISO-8601 time")],
                subject="usage query",
            ) from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise InvalidSpec(
            [FieldProblem(field, "must be a time between 1970 and the year 5000")],
            subject="usage query",
        )
    return value


def _csv(rows: list[dict[str, object]], key: str) -> str:
    out = io.StringIO()
    columns = [key, "replica_s", "memory_gib_h", "gpu_s", "requests", "compute_s"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return out.getvalue()


def record_view(record: ModelRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "tenant": record.tenant,
        "generation": record.generation,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "spec": record.spec.model_dump(mode="json", exclude={"artifact": {"files"}}),
        "inline_files": sorted(record.spec.artifact.files or {}) if record.spec.artifact else [],
    }


def _fleet_for(status: dict[str, Any], visible: set[str]) -> dict[str, Any]:
    """The fleet as a tenant (or an anonymous reader) may see it: servers and their memory,
    but only its own models on them."""
    out = dict(status)
    out["servers"] = [
        {**s, "models": [m for m in s.get("models", []) if m.get("name") in visible]}
        for s in status.get("servers", [])
    ]
    out["unplaced"] = {m: why for m, why in status.get("unplaced", {}).items() if m in visible}
    return out


def _tenant_view(view: dict[str, Any], records: list[ModelRecord]) -> dict[str, Any]:
    mine = [r.spec for r in records if r.tenant == view["name"]]
    held = Holding.of(mine)
    return {
        **view,
        "holding": {
            "models": held.models,
            "replicas": held.replicas,
            "memory_bytes": held.memory_bytes,
        },
    }


def _name(name: str) -> str:
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise InvalidSpec([FieldProblem("name", str(exc))]) from exc


def _tenant(name: str) -> str:
    """A tenant name from a path, checked before any lookup (a 404 would echo a 1 MB name)."""
    try:
        return check_tenant_name(name)
    except ValueError as exc:
        raise InvalidSpec([FieldProblem("name", str(exc))], subject="tenant name") from exc


async def _json_object(request: Request, what: str) -> dict[str, Any]:
    data = await _body(request)
    if not isinstance(data, dict):
        raise InvalidSpec([FieldProblem("body", f"must be a JSON object ({what})")], subject=what)
    return data


async def _body(request: Request) -> Any:
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
    return data


async def _spec_from(request: Request) -> ModelSpec:
    data = await _body(request)
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
    apidoc.install(app, token_required=ctx.api_token is not None)
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
    if ctx.usage is not None:
        metrics.register(_UsageCollector(ctx.usage))

    @app.middleware("http")
    async def _count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        requests_total.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, max_bytes=ctx.max_body_bytes)

    def caller(request: Request) -> Principal:
        """Who this request acts as; 401 for a token that is neither the admin's nor a live
        tenant's (a revoked token included)."""
        values = request.headers.getlist("authorization")
        if not values or values == [""]:
            return ADMIN if ctx.api_token is None else ANONYMOUS
        if len(values) > 1:
            # Not a list-valued field (RFC 9110): which one counts would be a guess, and a
            # proxy that appends its own must not turn a caller into someone else.
            raise Unauthorized("send one Authorization header, not several")
        scheme, _, token = values[0].partition(" ")
        # Only the HTTP whitespace (SP, HTAB): str.strip() would also take a trailing NBSP
        # (0xA0, legal obs-text in a header) off, and the admin token plus it still worked.
        token = token.strip(" \t")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        if ctx.api_token is not None and hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), ctx.api_token.encode()
        ):
            return ADMIN
        tenant = ctx.tenants.index.authenticate(token) if ctx.tenants is not None else None
        if tenant is not None:
            return Principal(tenant=tenant.name)
        if ctx.api_token is None and ctx.tenants is None:
            return ADMIN  # no auth configured at all: any token is accepted, as before
        raise Unauthorized(
            "unknown or revoked token; use the admin token or a tenant token from "
            "`tritonfleet tenants create`"
        )

    def writer(who: Principal = Depends(caller)) -> Principal:
        if who == ANONYMOUS:
            raise Unauthorized(
                "this call changes state and needs 'Authorization: Bearer <token>' "
                "(the admin token tritonfleet was started with, or a tenant token)"
            )
        return who

    def member(who: Principal = Depends(caller)) -> Principal:
        """A token is needed (the admin's or a tenant's), though nothing changes."""
        if who == ANONYMOUS:
            raise Unauthorized("this call needs a token: the admin token or a tenant token")
        return who

    def admin(who: Principal = Depends(caller)) -> Principal:
        if who == ANONYMOUS:
            raise Unauthorized("this call needs the admin token ('Authorization: Bearer <token>')")
        if not who.admin:
            raise Forbidden("this call needs the admin token; a tenant token cannot manage tenants")
        return who

    def tenants() -> TenantRegistry:
        if ctx.tenants is None:
            raise NotSupported("tenants are not enabled in this control plane")
        return ctx.tenants

    registry = ctx.registry

    @app.get("/healthz", openapi_extra=apidoc.NO_TOKEN)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, openapi_extra=apidoc.NO_TOKEN)
    async def prometheus_metrics() -> Response:
        models_gauge.set(len(await registry.list()))
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/whoami", responses=apidoc.WHOAMI, openapi_extra=apidoc.TOKEN_OPTIONAL)
    async def whoami(who: Principal = Depends(caller)) -> dict[str, Any]:
        """Who the given token acts as (the dashboard asks this to know what it may show)."""
        return {"admin": who.admin, "tenant": who.tenant, "role": who.label}

    @app.post(
        "/v1/models",
        status_code=201,
        responses=apidoc.REGISTER,
        openapi_extra={**apidoc.SPEC_BODY, **apidoc.TOKEN},
    )
    async def register(request: Request, who: Principal = Depends(writer)) -> dict[str, Any]:
        return record_view(await registry.register(await _spec_from(request), who))

    @app.get("/v1/models", responses=apidoc.READ_ANY, openapi_extra=apidoc.TOKEN_OPTIONAL)
    async def list_models(who: Principal = Depends(caller)) -> dict[str, Any]:
        return {"models": [record_view(r) for r in await registry.list(who)]}

    @app.get("/v1/models/{name}", responses=apidoc.READ, openapi_extra=apidoc.TOKEN_OPTIONAL)
    async def get_model(name: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        return record_view(await registry.get(_name(name), who))

    @app.put(
        "/v1/models/{name}",
        responses=apidoc.UPDATE,
        openapi_extra={**apidoc.SPEC_BODY, **apidoc.TOKEN},
    )
    async def update_model(
        name: str, request: Request, who: Principal = Depends(writer)
    ) -> dict[str, Any]:
        return record_view(await registry.update(_name(name), await _spec_from(request), who))

    @app.delete("/v1/models/{name}", responses=apidoc.DELETE, openapi_extra=apidoc.TOKEN)
    async def delete_model(name: str, who: Principal = Depends(writer)) -> dict[str, Any]:
        return record_view(await registry.delete(_name(name), who))

    @app.get(
        "/v1/models/{name}/config",
        response_class=PlainTextResponse,
        responses=apidoc.BY_NAME,
        openapi_extra=apidoc.TOKEN_OPTIONAL,
    )
    async def model_config(name: str, who: Principal = Depends(caller)) -> str:
        return (await registry.get(_name(name), who)).config_pbtxt

    @app.post(
        "/v1/config/render",
        response_class=PlainTextResponse,
        responses=apidoc.RENDER,
        openapi_extra={**apidoc.SPEC_BODY, **apidoc.NO_TOKEN},
    )
    async def render(request: Request) -> str:
        return registry.render(await _spec_from(request)).pbtxt

    @app.get("/v1/fleet", responses=apidoc.READ_ANY, openapi_extra=apidoc.TOKEN_OPTIONAL)
    async def fleet(who: Principal = Depends(caller)) -> JSONResponse:
        if ctx.fleet is None:
            return JSONResponse({"servers": [], "note": "no fleet attached"})
        status = ctx.fleet.fleet_status()
        if not who.admin:
            status = _fleet_for(status, {r.name for r in await registry.list(who)})
        return JSONResponse(status)

    @app.get("/v1/replicas", responses=apidoc.GATEWAY_ONLY, openapi_extra=apidoc.ADMIN_TOKEN)
    async def replicas(who: Principal = Depends(caller)) -> JSONResponse:
        """Where each registered model is ready now: what a separate gateway polls (with the
        admin token when one is set: it carries the tenants' token hashes)."""
        if who == ANONYMOUS:
            raise Unauthorized("GET /v1/replicas needs the admin token (it is the gateway's)")
        if not who.admin:
            raise Forbidden("GET /v1/replicas needs the admin token (it is the gateway's)")
        tenants = {
            digest: {"name": a.name, "requests_per_s": a.requests_per_s, "burst": a.burst}
            for digest, a in (ctx.tenants.index.access if ctx.tenants else {}).items()
        }
        if ctx.fleet is None:
            return JSONResponse({"models": {}, "tenants": tenants})
        return JSONResponse({**ctx.fleet.directory(), "tenants": tenants})

    @app.get(
        "/v1/models/{name}/status", responses=apidoc.BY_NAME, openapi_extra=apidoc.TOKEN_OPTIONAL
    )
    async def model_status(name: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        await registry.get(_name(name), who)
        if ctx.fleet is None:
            return {"name": name, "replicas": [], "note": "no fleet attached"}
        return ctx.fleet.model_status(name)

    @app.get(
        "/v1/models/{name}/decisions",
        responses=apidoc.BY_NAME,
        openapi_extra=apidoc.TOKEN_OPTIONAL,
    )
    async def decisions(name: str, who: Principal = Depends(caller)) -> dict[str, Any]:
        await registry.get(_name(name), who)
        rows = ctx.fleet.decisions(name) if ctx.fleet is not None else []
        return {"name": name, "decisions": rows}

    @app.post("/v1/models/{name}/ensure", responses=apidoc.ENSURE, openapi_extra=apidoc.TOKEN)
    async def ensure(
        name: str,
        timeout_s: float | None = Query(
            None, ge=0, le=600, allow_inf_nan=False, description="How long to hold (seconds)"
        ),
        who: Principal = Depends(writer),
    ) -> JSONResponse:
        await registry.get(_name(name), who)
        if ctx.fleet is None:
            return JSONResponse({"error": "no fleet attached"}, status_code=503)
        wait = timeout_s if timeout_s is not None else ctx.ensure_timeout_s
        status = await ctx.fleet.ensure_status(name, wait)
        if any(r.get("state") == "READY" for r in status.get("replicas", [])):
            return JSONResponse(status)
        why = status.get("last_error") or status.get("unplaced_reason") or "still loading"
        status["error"] = f"model {name!r} has no READY replica after {wait:g}s ({why}); retry"
        return JSONResponse(status, status_code=503, headers={"Retry-After": "2"})

    # --- chargeback ---------------------------------------------------------------------------
    @app.get("/v1/usage", response_model=None, responses=apidoc.USAGE, openapi_extra=apidoc.TOKEN)
    async def usage(
        request: Request,
        from_: str | None = Query(
            None, alias="from", max_length=64, description="Start: epoch seconds or ISO-8601"
        ),
        to: str | None = Query(None, max_length=64, description="End (default: now)"),
        by: GroupBy = Query(GroupBy.TENANT, description="Group by tenant, tag or model"),
        format: str | None = Query(None, pattern="^(json|csv)$", description="json or csv"),
        who: Principal = Depends(member),
    ) -> Response:
        """Usage per tenant, tag or model over [from, to), in one-minute buckets (a bucket
        counts when it starts in the range). A tenant token sees its own models' usage only."""
        now = time.time()
        to_s = _instant(to, "to", now)
        from_s = _instant(from_, "from", to_s - 86400)
        if from_s >= to_s:
            raise InvalidSpec(
                [FieldProblem("from", f"must be before 'to' (from={from_s:.0f}, to={to_s:.0f})")],
                subject="usage query",
            )
        if to_s - from_s > 400 * 86400:
            raise InvalidSpec(
                [FieldProblem("from", "the range may span at most 400 days")],
                subject="usage query",
            )
        if ctx.usage is None:
            raise NotSupported("usage accounting is not enabled in this control plane")
        start = math.floor(from_s / BUCKET_S) * BUCKET_S
        rows = await ctx.usage.report(start, to_s, by, None if who.admin else who.tenant)
        wants_csv = format == "csv" or (
            format is None and "text/csv" in request.headers.get("accept", "")
        )
        if wants_csv:
            return Response(_csv(rows, by.value), media_type="text/csv; charset=utf-8")
        return JSONResponse(
            {
                "from": start,
                "to": to_s,
                "by": by.value,
                "bucket_s": BUCKET_S,
                "tenant": None if who.admin else who.tenant,
                "rows": rows,
            }
        )

    # --- tenants (admin only) --------------------------------------------------------------
    @app.post(
        "/v1/tenants",
        status_code=201,
        dependencies=[Depends(admin)],
        responses=apidoc.CREATE_TENANT,
        openapi_extra={**apidoc.TENANT_BODY, **apidoc.ADMIN_TOKEN},
    )
    async def create_tenant(request: Request) -> dict[str, Any]:
        body = TenantCreate.model_validate(await _json_object(request, "tenant"))
        unowned = [r.name for r in await registry.list() if r.tenant is None]
        tenant, token = await tenants().create(body, unowned)
        return {**tenant.view(), "token": token}

    @app.get(
        "/v1/tenants",
        dependencies=[Depends(admin)],
        responses=apidoc.LIST_TENANTS,
        openapi_extra=apidoc.ADMIN_TOKEN,
    )
    async def list_tenants() -> dict[str, Any]:
        records = await registry.list()
        return {"tenants": [_tenant_view(t.view(), records) for t in tenants().list()]}

    @app.get(
        "/v1/tenants/{name}",
        dependencies=[Depends(admin)],
        responses=apidoc.GET_TENANT,
        openapi_extra=apidoc.ADMIN_TOKEN,
    )
    async def get_tenant(name: str) -> dict[str, Any]:
        return _tenant_view(tenants().get(_tenant(name)).view(), await registry.list())

    @app.put(
        "/v1/tenants/{name}/quota",
        dependencies=[Depends(admin)],
        responses=apidoc.SET_QUOTA,
        openapi_extra={**apidoc.QUOTA_BODY, **apidoc.ADMIN_TOKEN},
    )
    async def set_quota(name: str, request: Request) -> dict[str, Any]:
        quota = Quota.model_validate(await _json_object(request, "quota"))
        return (await tenants().set_quota(_tenant(name), quota)).view()

    @app.post(
        "/v1/tenants/{name}/token",
        dependencies=[Depends(admin)],
        responses=apidoc.ROTATE,
        openapi_extra=apidoc.ADMIN_TOKEN,
    )
    async def rotate_token(name: str) -> dict[str, Any]:
        tenant, token = await tenants().rotate(_tenant(name))
        return {**tenant.view(), "token": token}

    @app.delete(
        "/v1/tenants/{name}",
        dependencies=[Depends(admin)],
        responses=apidoc.REVOKE,
        openapi_extra=apidoc.ADMIN_TOKEN,
    )
    async def revoke_tenant(name: str) -> dict[str, Any]:
        return (await tenants().revoke(_tenant(name))).view()

    # --- the dashboard ------------------------------------------------------------------------
    async def viewer(request: Request) -> visibility.Viewer:
        """The caller as the set of models the dashboard's routes may show it."""
        who = caller(request)
        if who.admin:
            return visibility.EVERYONE
        return visibility.Owner(frozenset(r.name for r in await registry.list(who)))

    dashboard.install(app, ctx, viewer)
    return app
