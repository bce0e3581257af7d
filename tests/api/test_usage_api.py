"""`GET /v1/usage` in-process: a real SQLite store, the real `UsageRecorder` over a reconciler
driving in-memory fakes of the fleet and Triton (fake time), tenants with tokens."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.api.control import ApiContext, create_app
from adapters.sqlitestore import SqliteStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from adapters.usagerecorder import UsageRecorder
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.reconciler import Reconciler
from controlplane.registry import Registry
from controlplane.spec import ModelSpec
from controlplane.tenants import TenantCreate, TenantRegistry
from tests.fakes import FakeFleet, FakeTritonControl, InlineArtifacts
from tests.support import python_spec

ADMIN = "usage-admin"
T0 = 1_800_000_000.0  # a minute boundary


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.tokens: dict[str, str] = {}
        self.run(self._start(tmp_path))

    async def _start(self, tmp_path: Path) -> None:
        self.store = await SqliteStore(tmp_path / "db.sqlite").open()
        self.tenants = await TenantRegistry(self.store, self.clock).load()
        self.registry = Registry(
            self.store,
            Renderer(ProtobufSchema(), TemplateFiles()),
            ArtifactPolicy(None),
            self.clock,
            self.tenants,
        )
        for name in ("red", "blue"):
            _, self.tokens[name] = await self.tenants.create(TenantCreate(name=name), [])
        for name, tags, floor in (
            ("red.m", {"team": "search"}, 2),
            ("blue.m", {"team": "ads"}, 1),
        ):
            spec = ModelSpec.model_validate(
                {**python_spec(name, min_replicas=floor, max_replicas=2), "tags": tags}
            )
            await self.registry.register(spec)
        fleet = FakeFleet(2, 1 << 30)
        self.reconciler = Reconciler(
            fleet,
            FakeTritonControl(fleet),
            self.store,
            InlineArtifacts(),
            clock=self.clock,
            rng=random.Random(3),
        )
        for _ in range(3):
            await self.reconciler.tick()
            await self.reconciler.wait_idle()
        self.recorder = UsageRecorder(self.reconciler, self.store, None, clock=self.clock)
        app = create_app(
            ApiContext(
                registry=self.registry,
                fleet=self.reconciler,
                api_token=ADMIN,
                tenants=self.tenants,
                usage=self.recorder,
            )
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        )

    def run(self, aw: Any) -> Any:
        return self.loop.run_until_complete(aw)

    def hold(self, seconds: float, flush: bool = True) -> None:
        """Time passes with the replicas READY, observed each second, then a flush."""
        for _ in range(int(seconds)):
            self.clock.now += 1
            self.recorder.observe()
        if flush:
            self.run(self.recorder.flush())

    def get(self, token: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.run(self.client.get("/v1/usage", params=params, headers=headers))

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self.reconciler.close())
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


RANGE = {"from": str(T0 - 60), "to": str(T0 + 3600)}


def test_usage_by_tenant_tag_and_model_with_tenant_scoping(world: World) -> None:
    world.recorder.observe()
    world.hold(90)
    world.hold(30, flush=False)  # not flushed yet: still reported
    r = world.get(ADMIN, by="tenant", **RANGE)
    assert r.status_code == 200, r.text
    rows = {row["tenant"]: row for row in r.json()["rows"]}
    assert rows["red"]["replica_s"] == pytest.approx(2 * 120)
    assert rows["blue"]["replica_s"] == pytest.approx(120)
    assert rows["red"]["memory_gib_h"] == pytest.approx(2 * 120 * (64 / 1024) / 3600, rel=1e-3)
    assert rows["red"]["gpu_s"] is None  # CPU servers: GPU-seconds unknown, not zero

    by_tag = {
        row["tag"]: row["replica_s"] for row in world.get(ADMIN, by="tag", **RANGE).json()["rows"]
    }
    assert by_tag == {"team=search": pytest.approx(240), "team=ads": pytest.approx(120)}
    # A tenant sees its own usage only, whatever the grouping.
    mine = world.get(world.tokens["blue"], by="model", **RANGE).json()
    assert [row["model"] for row in mine["rows"]] == ["blue.m"] and mine["tenant"] == "blue"
    assert world.get(None, **RANGE).status_code == 401

    text = world.get(ADMIN, by="model", format="csv", **RANGE)
    assert text.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(text.text)))
    assert {row["model"] for row in table} == {"red.m", "blue.m"} and table[0]["gpu_s"] == ""
    accept = world.run(
        world.client.get(
            "/v1/usage",
            params=RANGE,
            headers={"Authorization": f"Bearer {ADMIN}", "Accept": "text/csv"},
        )
    )
    assert accept.text.startswith("tenant,replica_s")

    metrics = world.run(world.client.get("/metrics")).text
    assert 'tritonfleet_usage_replica_seconds_total{model="red.m",tenant="red"} 240.0' in metrics


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "nan"}, "to"),
        ({"to": "1e30"}, "to"),
        ({"from": "2030-01-02", "to": "2030-01-01"}, "from"),
        ({"from": "2000-01-01", "to": "2030-01-01"}, "from"),
        ({"by": "team"}, "by"),
        ({"format": "xml"}, "format"),
        ({"from": "x" * 100}, "from"),
    ],
)
def test_bad_usage_queries_name_the_field(world: World, params: dict[str, str], field: str) -> None:
    r = world.get(ADMIN, **params)
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["detail"]] in ([field], [f"query.{field}"]), r.text


def test_iso_times_and_a_restart_keeps_what_was_flushed(world: World, tmp_path: Path) -> None:
    world.recorder.observe()
    world.hold(60)
    r = world.get(ADMIN, by="model", **{"from": "2027-01-15T07:00:00Z", "to": "2027-01-15T07:59"})
    assert r.status_code == 200 and r.json()["rows"] == []  # the hour before T0: nothing
    r = world.get(ADMIN, by="model", **{"from": "2027-01-15T08:00:00Z", "to": "2027-01-15T09:00"})
    assert {row["model"] for row in r.json()["rows"]} == {"red.m", "blue.m"}
    before = world.get(ADMIN, by="model", **RANGE).json()["rows"]
    fresh = UsageRecorder(world.reconciler, world.store, None, clock=world.clock)
    after = world.run(
        fresh.report(T0 - 60, T0 + 3600, __import__("controlplane.usage").usage.GroupBy.MODEL, None)
    )
    assert after == before


def test_a_tenant_sees_the_fleet_with_only_its_own_models(world: World) -> None:
    def placed(token: str) -> set[str]:
        headers = {"Authorization": f"Bearer {token}"}
        fleet = world.run(world.client.get("/v1/fleet", headers=headers)).json()
        assert len(fleet["servers"]) == 2  # every server, with its memory in use
        assert fleet["placement"] == {"setting": "pack", "strategy": "pack"}  # fleet-wide facts
        return {m["name"] for s in fleet["servers"] for m in s["models"]}

    assert placed(world.tokens["blue"]) == {"blue.m"}
    assert placed(world.tokens["red"]) == {"red.m"}
    assert placed(ADMIN) == {"red.m", "blue.m"}
