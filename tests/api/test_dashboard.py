"""The dashboard's routes: the page's headers, the JSON shapes, hostile query input, the
viewer filter, and the event stream's bounds over a real uvicorn on a loopback port.

The fleet behind the API is the real reconciler and autopilot over the core's in-memory fakes
(`tests/fakes.py`: a fake fleet and Triton, fake load signals, fake time); the browser
test (tests/ui) runs the same page against a real `tritonfleet up`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.api.control import ApiContext, UsageSource, create_app
from adapters.api.dashboard import UiConfig
from adapters.api.eventstream import StreamLimits
from adapters.memstore import MemoryStore
from adapters.runtime import EmbeddedServer
from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from controlplane.artifacts import ArtifactPolicy
from controlplane.autopilot import Autopilot, FleetBounds
from controlplane.autoscale import ScalerConfig
from controlplane.configgen import Renderer
from controlplane.events import EventFeed, EventKind
from controlplane.reconciler import Reconciler
from controlplane.registry import Registry
from controlplane.spec import ModelSpec
from controlplane.tenants import TenantCreate, TenantRegistry
from controlplane.timeline import COLUMNS, Timeline, row
from tests.fakes import FakeFleet, FakeLoadSignals, FakeTritonControl, InlineArtifacts
from tests.support import eventually, python_spec
from tests.unit.test_autopilot_loop import load
from tests.unit.test_reconciler import Clock

UI = Path(__file__).resolve().parents[2] / "adapters" / "api" / "ui"
ADMIN = "admin-token"


class Rig:
    """A registry with models a and b, the reconciler over fakes, ticked so that there are
    placements, decisions and measurements; `app(...)` builds the control API over it. With
    `tenant`, tenants are on, `a` is `<tenant>.a` (the tenant's), `b` belongs to no tenant,
    and the API wants the admin token `ADMIN`."""

    def __init__(
        self,
        feed_capacity: int = 1000,
        tenant: str | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.tenant = tenant
        self.tenants: TenantRegistry | None = None
        self.tenant_token = ""
        self.names = (f"{tenant}.a" if tenant else "a", "b")
        self.registry = self._registry()
        self.fleet = FakeFleet(2, 512 << 20)
        self.signals = FakeLoadSignals()
        pilot = Autopilot(
            self.signals,
            ScalerConfig(),
            FleetBounds(2, 2),
            events=EventFeed(feed_capacity),
            timeline=timeline,
        )
        self.rec = Reconciler(
            self.fleet,
            FakeTritonControl(self.fleet),
            self.store,
            InlineArtifacts(),
            clock=self.clock,
            rng=random.Random(1),
            autopilot=pilot,
        )

    def _registry(self) -> Registry:
        return Registry(
            self.store,
            Renderer(ProtobufSchema(), TemplateFiles()),
            ArtifactPolicy(None),
            self.clock,
            self.tenants,
        )

    async def prepare(self, ticks: int = 3) -> None:
        if self.tenant is not None:
            self.tenants = await TenantRegistry(self.store, self.clock).load()
            _, self.tenant_token = await self.tenants.create(TenantCreate(name=self.tenant), [])
            self.registry = self._registry()
        for name in self.names:
            raw = python_spec(name, min_replicas=1, max_replicas=2)
            raw["slo"] = {"p95_ms": 100, "p99_ms": 200}
            await self.registry.register(ModelSpec.model_validate(raw))
            self.signals.readings[name] = load(5)
        for _ in range(ticks):
            self.clock.now += 1
            await self.rec.tick()
            await self.rec.wait_idle()

    def app(self, ui: UiConfig | None = None, usage: UsageSource | None = None) -> Any:
        ctx = ApiContext(
            registry=self.registry,
            fleet=self.rec,
            ui=ui or UiConfig(),
            tenants=self.tenants,
            usage=usage,
            api_token=ADMIN if self.tenants is not None else None,
        )
        return create_app(ctx)


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


# --- the page ---------------------------------------------------------------------------
def test_page_and_assets_carry_a_strict_policy() -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(1)
        async with _client(rig.app()) as c:
            r = await c.get("/ui")
            assert r.status_code == 308 and r.headers["location"] == "/ui/"
            r = await c.get("/ui/")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            for name, ctype in (
                ("app.js", "text/javascript"),
                ("app.css", "text/css"),
                ("favicon.svg", "image/svg+xml"),
            ):
                a = await c.get(f"/ui/{name}")
                assert a.status_code == 200 and a.headers["content-type"].startswith(ctype)
                assert a.headers["x-content-type-options"] == "nosniff"
            for bad in ("/ui/nope.js", "/ui/..%2Fcontrol.py", "/ui/%2e%2e", "/ui/index.html%00"):
                r = await c.get(bad)
                assert r.status_code == 404, bad
                assert "control" not in r.text
            # Every JSON answer is nosniff too (the API's middleware).
            assert (await c.get("/v1/fleet")).headers["x-content-type-options"] == "nosniff"

    run(scenario())


def test_the_page_has_no_inline_code_and_builds_no_html_from_data() -> None:
    html = (UI / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="app.js" defer>']
    assert "<style" not in html and " style=" not in html and " on" not in html.lower()
    js = (UI / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    assert "new Function" not in js
    # Nothing from elsewhere: the only absolute URL is the SVG namespace.
    for name in ("index.html", "app.js", "app.css", "favicon.svg"):
        urls = set(re.findall(r"https?://[^\s\"')]+", (UI / name).read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)


def test_ui_off_leaves_the_json_and_stream_routes() -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(1)
        async with _client(rig.app(UiConfig(enabled=False))) as c:
            assert (await c.get("/ui/")).status_code == 404
            assert (await c.get("/v1/latency")).status_code == 200

    run(scenario())


# --- JSON shapes --------------------------------------------------------------------------
def test_latency_shape_since_and_per_model() -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(3)
        async with _client(rig.app()) as c:
            body = (await c.get("/v1/latency")).json()
            assert body["autopilot"] is True and body["window_s"] == 5.0
            cols = body["columns"]
            assert cols[:5] == ["at", "rate_rps", "p50_s", "p95_s", "p99_s"]
            assert sorted(body["models"]) == ["a", "b"]
            a = body["models"]["a"]
            assert a["state"] == "READY"
            assert a["slo"] == {"p95_s": 0.1, "p99_s": 0.2, "max_error_rate": 0.001}
            assert len(a["points"]) == 3 and all(len(p) == len(cols) for p in a["points"])
            assert a["points"][-1][cols.index("rate_rps")] == pytest.approx(5, rel=0.01)
            last = a["points"][-1][0]
            newer = (await c.get("/v1/latency", params={"since": last - 0.5})).json()
            assert [len(m["points"]) for m in newer["models"].values()] == [1, 1]
            one = (await c.get("/v1/latency", params={"model": "b", "limit": 2})).json()
            assert list(one["models"]) == ["b"] and len(one["models"]["b"]["points"]) == 2
            per = (await c.get("/v1/models/a/latency")).json()
            assert list(per["models"]) == ["a"]
            assert (await c.get("/v1/models/zzz/latency")).status_code == 404
            assert (await c.get("/v1/latency", params={"model": "zzz"})).status_code == 404

    run(scenario())


class CountingTimeline(Timeline):
    """A real `Timeline` that counts reads of its points as objects and as encoded rows."""

    def __init__(self) -> None:
        super().__init__()
        self.point_reads = 0
        self.row_reads = 0

    def points(self, model: str, since: float | None = None, limit: int | None = None) -> Any:
        self.point_reads += 1
        return super().points(model, since, limit)

    def rows_json(self, model: str, since: float | None = None, limit: int | None = None) -> str:
        self.row_reads += 1
        return super().rows_json(model, since, limit)


def test_latency_reads_join_rows_encoded_once_per_tick() -> None:
    """Reading /v1/latency must not rebuild the timeline (it shares the gateway's event loop):
    the rows are encoded when the autopilot adds them, never per request, and a request reads
    each model's rows once; the text sent is exactly what encoding the view whole gives."""

    async def scenario() -> None:
        timeline = CountingTimeline()
        rig = Rig(timeline=timeline)
        await rig.prepare(3)
        encoded = timeline.rows_encoded
        assert encoded == 2 * 3  # two models, three ticks
        requests = 0
        async with _client(rig.app()) as c:
            for params in ({}, {"limit": 10_000}, {"since": 0}, {"model": "a", "limit": 1}):
                for _ in range(20):
                    r = await c.get("/v1/latency", params=params)
                    assert r.status_code == 200
                    assert r.headers["content-type"] == "application/json"
                    requests += 1
            assert timeline.rows_encoded == encoded
            assert timeline.point_reads == 0  # no per-request rebuilding from `Point`s
            assert timeline.row_reads == (requests - 20) * 2 + 20  # one per model shown
            # The reference: the document built from the timeline's points, encoded whole.
            pilot = rig.rec.autopilot
            models: dict[str, Any] = {}
            for name in pilot.timeline.models():
                t = pilot.timeline.targets(name)
                models[name] = {
                    "state": rig.rec.model_state(name).value,
                    "slo": {"p95_s": t.p95_s, "p99_s": t.p99_s, "max_error_rate": t.max_error_rate},
                    "points": [row(p) for p in pilot.timeline.points(name, None, 300)],
                }
            whole = {
                "autopilot": pilot.enabled,
                "window_s": pilot.config.panic_window_s,
                "columns": list(COLUMNS),
                "models": models,
            }
            expected = json.dumps(
                whole, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode()
            assert (await c.get("/v1/latency")).content == expected
            rig.clock.now += 1
            await rig.rec.tick()
            assert timeline.rows_encoded == encoded + 2  # one row per model per tick

    run(scenario())


def test_a_deleted_model_is_gone_from_latency_before_the_next_tick() -> None:
    """Found by the schemathesis link run: the reconciler's view lags an acknowledged delete by
    up to a tick; the latency routes read what the store holds."""

    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(3)
        async with _client(rig.app()) as c:
            assert (await c.delete("/v1/models/a")).status_code == 200
            # no tick has run: the reconciler still has "a"
            assert "a" in rig.rec.state.records
            assert (await c.get("/v1/models/a/latency")).status_code == 404
            assert sorted((await c.get("/v1/latency")).json()["models"]) == ["b"]
            assert (await c.get("/v1/latency", params={"model": "a"})).status_code == 404

    run(scenario())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "nan"}, "since"),
        ({"since": "inf"}, "since"),
        ({"since": "-1"}, "since"),
        ({"since": "1e400"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": str(10**12)}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"model": "../etc/passwd"}, "model"),
        ({"model": "<img src=x onerror=alert(1)>"}, "model"),
        ({"model": "m" * 300}, "model"),
    ],
)
def test_hostile_latency_parameters_are_a_422_naming_the_field(
    params: dict[str, str], field: str
) -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(1)
        async with _client(rig.app()) as c:
            r = await c.get("/v1/latency", params=params)
            assert r.status_code == 422, r.text
            assert field in {d["field"].split(".")[-1] for d in r.json()["detail"]}, r.text
            assert "onerror" not in r.text  # the input is not echoed back

    run(scenario())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    since=st.one_of(st.none(), st.text(max_size=40), st.floats(allow_nan=True)),
    limit=st.one_of(st.none(), st.text(max_size=12), st.integers()),
    model=st.one_of(st.none(), st.text(max_size=300)),
    after=st.one_of(st.none(), st.text(max_size=25), st.integers()),
)
def test_fuzzed_query_strings_never_fail_the_server(
    since: Any, limit: Any, model: Any, after: Any
) -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(1)
        params = {
            k: str(v)
            for k, v in {"since": since, "limit": limit, "model": model}.items()
            if v is not None
        }
        async with _client(rig.app(UiConfig(stream=StreamLimits(max_s=0.01)))) as c:
            r = await c.get("/v1/latency", params=params)
            assert r.status_code in (200, 404, 422), r.text
            json.loads(r.text)  # NaN-free JSON the browser can parse
            ev = {"after": str(after)} if after is not None else {}
            if model is not None:
                ev["model"] = str(model)
            r = await c.get("/v1/events", params=ev)
            assert r.status_code in (200, 422), r.text

    run(scenario())


def test_each_token_sees_its_own_models_on_every_read_route() -> None:
    """Filtering is the server's: the admin sees all, a tenant its own, no token the models
    of no tenant; a model the caller may not see is the same 404 as an unknown one."""

    async def scenario() -> None:
        rig = Rig(tenant="team")
        await rig.prepare(2)
        for t in range(3):  # a decision of each model, after the loads
            for name in rig.names:
                rig.rec.events.publish(EventKind.AUTOPILOT, name, f"d{t}", rig.clock.now)
        rig.rec.events.publish(EventKind.FLEET, None, "servers 2 → 3", rig.clock.now)
        app = rig.app(UiConfig(stream=StreamLimits(max_s=0.01)))
        async with _client(app) as c:

            async def seen(token: str | None) -> tuple[set[str], set[str], set[str | None]]:
                h = {"Authorization": f"Bearer {token}"} if token else {}
                fleet = (await c.get("/v1/fleet", headers=h)).json()
                on_servers = {m["name"] for s in fleet["servers"] for m in s["models"]}
                charted = set((await c.get("/v1/latency", headers=h)).json()["models"])
                r = await c.get("/v1/events", params={"after": 0}, headers=h)
                streamed = {e["model"] for e in _decisions(_blocks(r.text))}
                return on_servers, charted, streamed

            both = {"team.a", "b"}
            assert await seen(ADMIN) == (both, both, {*both, None})
            assert await seen(rig.tenant_token) == ({"team.a"}, {"team.a"}, {"team.a", None})
            assert await seen(None) == ({"b"}, {"b"}, {"b", None})
            h = {"Authorization": f"Bearer {rig.tenant_token}"}
            assert (await c.get("/v1/models/b/latency", headers=h)).status_code == 404
            assert (await c.get("/v1/models/nope/latency", headers=h)).status_code == 404
            r = await c.get("/v1/latency", params={"model": "b"}, headers=h)
            assert r.status_code == 404
            for path in ("/v1/latency", "/v1/events", "/v1/fleet"):
                bad = await c.get(path, headers={"Authorization": "Bearer not-a-token"})
                assert bad.status_code == 401, path

    run(scenario())


# --- the event stream over a real server ---------------------------------------------------
@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    server = EmbeddedServer(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), 10, 0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def _blocks(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                fields["comment"] = line[1:].strip()
            elif ": " in line:
                k, v = line.split(": ", 1)
                fields[k] = v
        if fields:
            out.append(fields)
    return out


async def _read_until(
    resp: httpx.Response, stop: Callable[[list[dict[str, str]]], bool]
) -> list[dict[str, str]]:
    buf = ""
    async with asyncio.timeout(20):
        async for chunk in resp.aiter_text():
            buf += chunk
            blocks = _blocks(buf.rsplit("\n\n", 1)[0] if "\n\n" in buf else "")
            if stop(blocks):
                return blocks
    return _blocks(buf)


def _decisions(blocks: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [json.loads(b["data"]) for b in blocks if b.get("event") == "decision"]


def test_stream_sends_backlog_then_live_events_and_resumes_after_an_id() -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(2)
        feed = rig.rec.events
        async with serving(rig.app()) as url, httpx.AsyncClient(base_url=url) as c:
            async with c.stream("GET", "/v1/events", params={"backlog": 2}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                assert r.headers["cache-control"] == "no-store"
                got: list[dict[str, str]] = []

                def two(blocks: list[dict[str, str]]) -> bool:
                    got[:] = blocks
                    return len(_decisions(blocks)) >= 2

                it = _read_until(r, two)
                await it
                assert got[0]["event"] == "hello" and got[0]["retry"] == "2000"
                seqs = [d["seq"] for d in _decisions(got)]
                assert seqs == [feed.last_seq - 1, feed.last_seq]
            feed.publish(EventKind.AUTOPILOT, "a", "replicas 1 → 2 <b>x</b>", rig.clock.now)
            # Resuming after an id sends exactly what came after it.
            headers = {"Last-Event-ID": str(seqs[-1])}
            async with c.stream("GET", "/v1/events", headers=headers) as r:
                blocks = await _read_until(r, lambda b: len(_decisions(b)) >= 1)
                (ev,) = _decisions(blocks)
                assert ev["seq"] == seqs[-1] + 1 and ev["summary"].endswith("<b>x</b>")
                assert ev["model"] == "a" and ev["kind"] == "autopilot"
            # Only one model's events.
            async with c.stream("GET", "/v1/events", params={"after": 0, "model": "b"}) as r:
                blocks = await _read_until(r, lambda b: len(_decisions(b)) >= 1)
                assert {d["model"] for d in _decisions(blocks)} == {"b"}
            for headers, params in (
                ({"Last-Event-ID": "abc"}, {}),
                ({"Last-Event-ID": "9" * 40}, {}),
                ({}, {"after": "-1"}),
                ({}, {"backlog": "100000"}),
                ({}, {"model": "a/../b"}),
            ):
                r = await c.get("/v1/events", headers=headers, params=params)
                assert r.status_code == 422, (headers, params, r.text)

    run(scenario())


def test_stream_heartbeats_and_closes_cleanly_after_max_s() -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(1)
        limits = StreamLimits(heartbeat_s=0.1, max_s=1.0)
        app = rig.app(UiConfig(stream=limits))
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as c:
            start = time.monotonic()
            async with c.stream("GET", "/v1/events", params={"backlog": 0}) as r:
                text = "".join([chunk async for chunk in r.aiter_text()])  # ends: bye
            assert time.monotonic() - start < 15  # gross bound only: max_s is 1 s
            blocks = _blocks(text)
            assert blocks[0]["event"] == "hello"
            assert any(b.get("comment") == "keepalive" for b in blocks)
            assert blocks[-1]["event"] == "bye"

    run(scenario())


def test_a_reader_behind_the_feed_gets_a_gap_event() -> None:
    async def scenario() -> None:
        rig = Rig(feed_capacity=10)
        await rig.prepare(1)
        for i in range(30):
            rig.rec.events.publish(EventKind.FLEET, None, f"e{i}", rig.clock.now)
        async with (
            serving(rig.app()) as url,
            httpx.AsyncClient(base_url=url) as c,
            c.stream("GET", "/v1/events", params={"after": 1}) as r,
        ):
            blocks = await _read_until(r, lambda b: len(_decisions(b)) >= 10)
        gap = next(b for b in blocks if b.get("event") == "gap")
        last = rig.rec.events.last_seq
        assert json.loads(gap["data"])["missed"] == last - 10 - 1
        assert [d["seq"] for d in _decisions(blocks)] == list(range(last - 9, last + 1))

    run(scenario())


def test_stream_count_is_bounded_and_slots_come_back_on_disconnect() -> None:
    async def scenario() -> None:
        rig = Rig()
        await rig.prepare(1)
        app = rig.app(UiConfig(stream=StreamLimits(max_clients=2, heartbeat_s=0.2)))
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as c:
            async with c.stream("GET", "/v1/events") as r1, c.stream("GET", "/v1/events") as r2:
                assert r1.status_code == r2.status_code == 200
                third = await c.get("/v1/events")
                assert third.status_code == 503 and third.headers["retry-after"] == "5"
                assert "TRITONFLEET_UI_STREAM_MAX_CLIENTS" in third.json()["error"]
            # Both clients went away: their slots are free again once the server notices.

            async def opens() -> bool:
                async with c.stream("GET", "/v1/events", params={"backlog": 0}) as r:
                    return r.status_code == 200

            await eventually(opens, 20, 0.1)

    run(scenario())


def test_a_client_that_stops_reading_is_dropped() -> None:
    async def scenario() -> None:
        rig = Rig(feed_capacity=5000)
        await rig.prepare(1)
        limits = StreamLimits(max_clients=1, write_timeout_s=0.5, heartbeat_s=0.2)
        async with serving(rig.app(UiConfig(stream=limits))) as url:
            host, port = url.removeprefix("http://").split(":")
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /v1/events?after=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                # Far more than the socket buffers hold; the client reads none of it.
                for i in range(2000):
                    rig.rec.events.publish(
                        EventKind.FLEET, None, "x" * 20_000, rig.clock.now, {"i": i}
                    )
                async with httpx.AsyncClient(base_url=url) as c:

                    async def free() -> bool:
                        async with c.stream("GET", "/v1/events", params={"backlog": 0}) as r:
                            return r.status_code == 200

                    await eventually(free, 30, 0.2)
            finally:
                sock.close()

    run(scenario())
