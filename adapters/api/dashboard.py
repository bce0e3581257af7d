"""The live fleet dashboard: the page at `/ui` and the read-only JSON and event routes it uses.

- `GET /ui/` (and `/ui/app.js`, `/ui/app.css`, `/ui/favicon.svg`): static files shipped in
  the package (`adapters/api/ui/`), read once at start; nothing comes from a CDN. Served with
  a strict Content-Security-Policy (scripts, styles and fetches from this origin only, no
  inline script or style), `X-Content-Type-Options: nosniff` and no framing.
- `GET /v1/latency`, `GET /v1/models/{name}/latency`: what the autopilot measured per model
  (rate, P50/P95/P99, errors, replicas) with its SLO targets; `since` asks only for newer
  points, so the page polls cheaply.
- `GET /v1/events`: the decision feed as server-sent events (`eventstream.py`).

Every route answers for the `Viewer` the request's token resolves to (`viewer`, from the
control API's `caller`, a dependency: a wrong token is a 401 before any parameter is read):
the admin sees every model, a tenant token its own models only, no token (with an admin token
configured) the models of no tenant; the page filters nothing.
The token travels in the `Authorization` header, the stream included (the page reads it with
`fetch`, not `EventSource`, which cannot send headers): never in a URL, where it would end
up in logs, history and `Referer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from adapters.api import apidoc
from adapters.api.eventstream import EventStream, StreamLimits, StreamSlots
from controlplane.errors import FieldProblem, InvalidSpec, NotFound, ServerUnavailable
from controlplane.events import Event
from controlplane.spec import check_model_name
from controlplane.visibility import Viewer

if TYPE_CHECKING:
    from adapters.api.control import ApiContext

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
}
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
MAX_LATENCY_POINTS = 10_000
# Text joined between two turns of the event loop while a latency answer is built (~1 ms).
LATENCY_SLICE_CHARS = 1 << 20


@dataclass(frozen=True)
class UiConfig:
    enabled: bool = True
    stream: StreamLimits = field(default_factory=StreamLimits)


def _assets() -> dict[str, bytes]:
    root = resources.files("adapters.api") / "ui"
    return {name: (root / name).read_bytes() for name in ASSETS}


def _model(name: str | None, field_name: str = "model") -> str | None:
    if name is None:
        return None
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise InvalidSpec([FieldProblem(field_name, str(exc))], subject="request") from exc


def _cursor(after: int | None, last_event_id: str | None, backlog: int, feed_recent: int) -> int:
    if after is not None:
        return after
    if last_event_id is not None:
        text = last_event_id.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 15:
            raise InvalidSpec(
                [
                    FieldProblem(
                        "Last-Event-ID",
                        "must be the decimal id of an event this stream sent (at most 15 "
                        "digits); drop the header to start from the latest events",
                    )
                ],
                subject="request",
            )
        return int(text)
    return feed_recent


class EncodedJSON(JSONResponse):
    """A JSON answer whose text is already encoded (the latency view's)."""

    def render(self, content: Any) -> bytes:
        if not isinstance(content, bytes):
            raise TypeError("EncodedJSON takes the encoded bytes")
        return content


def install(app: FastAPI, ctx: ApiContext, viewer: Callable[[Request], Awaitable[Viewer]]) -> None:
    """Add the dashboard's routes to the control API (the page only when `ctx.ui.enabled`)."""
    ui = ctx.ui
    slots = StreamSlots(ui.stream.max_clients)

    if ui.enabled:
        assets = _assets()

        @app.get("/ui", include_in_schema=False)
        async def ui_root() -> Response:
            return RedirectResponse("/ui/", status_code=308, headers=PAGE_HEADERS)

        @app.get("/ui/", include_in_schema=False)
        async def ui_index() -> Response:
            return Response(
                assets["index.html"], media_type=ASSETS["index.html"], headers=PAGE_HEADERS
            )

        @app.get("/ui/{asset}", include_in_schema=False)
        async def ui_asset(asset: str) -> Response:
            if asset not in assets:  # a fixed list: no path is ever built from the request
                return JSONResponse(
                    {"error": "no such dashboard file; the dashboard lives at /ui/"},
                    status_code=404,
                    headers={"X-Content-Type-Options": "nosniff"},
                )
            return Response(assets[asset], media_type=ASSETS[asset], headers=PAGE_HEADERS)

    async def _latency(
        who: Viewer, model: str | None, since: float | None, limit: int
    ) -> JSONResponse:
        # What the store holds now: the reconciler's view lags an acknowledged delete by up
        # to a tick, and a deleted model must be gone from every read at once.
        registered = {r.name for r in await ctx.registry.list()}
        if ctx.fleet is None:
            if model is not None:
                raise NotFound("model", model)
            return JSONResponse({"autopilot": False, "columns": [], "models": {}})
        doc = ctx.fleet.latency_json(
            lambda m: m in registered and who.sees(m) and (model is None or m == model),
            since,
            limit,
        )
        if model is not None and model not in doc.models:
            raise NotFound("model", model)
        # The rows were encoded when measured; this only joins text, and gives the loop (the
        # gateway's too) back between slices of a large answer.
        parts: list[str] = []
        pending = 0
        for chunk in doc.chunks:
            parts.append(chunk)
            pending += len(chunk)
            if pending >= LATENCY_SLICE_CHARS:
                pending = 0
                await asyncio.sleep(0)
        return EncodedJSON("".join(parts).encode())

    since_q = Query(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Only points measured after this time (epoch seconds)",
    )
    limit_q = Query(
        300, ge=1, le=MAX_LATENCY_POINTS, description="At most this many (the newest) per model"
    )

    @app.get("/v1/latency", responses=apidoc.LATENCY, openapi_extra=apidoc.TOKEN_OPTIONAL)
    async def latency(
        who: Viewer = Depends(viewer),
        since: float | None = since_q,
        limit: int = limit_q,
        model: str | None = Query(None, max_length=256, description="Only this model"),
    ) -> JSONResponse:
        """Per model: state, SLO targets and the autopilot's measurements over time."""
        return await _latency(who, _model(model), since, limit)

    @app.get(
        "/v1/models/{name}/latency",
        responses=apidoc.MODEL_LATENCY,
        openapi_extra=apidoc.TOKEN_OPTIONAL,
    )
    async def model_latency(
        name: str,
        who: Viewer = Depends(viewer),
        since: float | None = since_q,
        limit: int = limit_q,
    ) -> JSONResponse:
        return await _latency(who, _model(name, "name"), since, limit)

    @app.get(
        "/v1/events",
        response_class=Response,
        responses=apidoc.EVENTS,
        openapi_extra=apidoc.TOKEN_OPTIONAL,
    )
    async def events(
        who: Viewer = Depends(viewer),
        after: int | None = Query(
            None, ge=0, le=2**53, description="Resume after this event id (as Last-Event-ID)"
        ),
        backlog: int = Query(
            50, ge=0, le=1000, description="Without after/Last-Event-ID: recent events first"
        ),
        model: str | None = Query(None, max_length=256, description="Only this model's events"),
        last_event_id: str | None = Header(None, max_length=64),
    ) -> Response:
        """The control plane's decisions as server-sent events (text/event-stream)."""
        only = _model(model)
        if ctx.fleet is None:
            raise ServerUnavailable("no fleet attached: there are no decisions to stream")
        feed = ctx.fleet.events
        cursor = _cursor(after, last_event_id, backlog, feed.recent(backlog))

        def visible(e: Event) -> bool:
            if e.model is None:
                return only is None
            return who.sees(e.model) and (only is None or e.model == only)

        if not slots.acquire():
            return JSONResponse(
                {
                    "error": f"{slots.max_clients} event streams are open already (the limit, "
                    "TRITONFLEET_UI_STREAM_MAX_CLIENTS); retry later or raise it"
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return EventStream(feed, cursor, visible, ui.stream, slots)
