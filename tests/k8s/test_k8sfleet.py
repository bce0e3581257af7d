"""`adapters.k8sfleet` against an emulated Kubernetes API server.

No Kubernetes API server can run on the machines these tests run on, so this is NOT a test
against a real cluster: the real `kubernetes` client talks HTTP to `apiserver_emulator`, the
smallest honest emulation of the endpoints the adapter uses (pod list and chunked watch with
resourceVersion and 410 Gone, StatefulSet scale GET/PATCH). Its docstring lists what it does
not emulate. What these tests do establish: the adapter's requests, its handling of watch
events, expiry and outages, and that it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from apiserver_emulator import ApiServer, FakeCluster
from kubernetes import client

from adapters.k8sfleet import (
    CAPACITY_ANNOTATION,
    NODE_LABEL,
    Backoff,
    K8sFleet,
    K8sFleetConfig,
    ScaleStatus,
    server_from_pod,
)
from controlplane.errors import FleetError, InvalidSpec, NotFound, Unauthorized
from controlplane.fleet import FleetDriver, ServerHealth

NS = "ml"
STS = "demo-tritonfleet-triton"
SELECTOR = "app.kubernetes.io/instance=demo,app.kubernetes.io/component=triton"
TRITON = {
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "triton",
    "tritonfleet.io/accelerator": "mig-1g.10gb",
}
GIB = 1 << 30


@pytest.fixture
def cluster() -> FakeCluster:
    c = FakeCluster(NS)
    c.add_statefulset(STS, replicas=2)
    return c


@pytest.fixture
def apiserver(cluster: FakeCluster) -> Iterator[ApiServer]:
    server = ApiServer(cluster).start()
    yield server
    server.stop()


def config(**overrides: Any) -> K8sFleetConfig:
    values: dict[str, Any] = {
        "namespace": NS,
        "statefulset": STS,
        "label_selector": SELECTOR,
        "capacity_bytes": 16 * GIB,
        "admin_key": "s3cret",
        "request_timeout_s": 2.0,
        "connect_timeout_s": 0.5,
        "watch_timeout_s": 5,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
    }
    values.update(overrides)
    return K8sFleetConfig(**values)


def make_fleet(url: str, **overrides: Any) -> K8sFleet:
    configuration = client.Configuration()
    configuration.host = url
    return K8sFleet(config(**overrides), client.ApiClient(configuration), rng=random.Random(7))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def health(fleet: K8sFleet) -> dict[str, ServerHealth]:
    return {s.id: s.health for s in fleet.snapshot().servers}


# ---------------------------------------------------------------- discovery


def test_start_discovers_triton_pods_by_selector(
    cluster: FakeCluster, apiserver: ApiServer
) -> None:
    cluster.add_pod(
        f"{STS}-0",
        ip="10.1.0.5",
        labels=TRITON,
        annotations={CAPACITY_ANNOTATION: str(40 * GIB)},
    )
    cluster.add_pod(f"{STS}-1", ip="10.1.0.6", ready=False, labels=TRITON, node="gpu-node-2")
    cluster.add_pod(f"{STS}-2", ip=None, ready=False, labels=TRITON, phase="Pending")
    cluster.add_pod(
        "other-release-0", ip="10.1.0.9", labels={**TRITON, "app.kubernetes.io/instance": "other"}
    )
    cluster.add_pod("gateway-abc", ip="10.1.0.10", labels={"app.kubernetes.io/instance": "demo"})

    async def scenario() -> None:
        fleet = make_fleet(apiserver.url)
        assert isinstance(fleet, FleetDriver)
        try:
            snap = await fleet.start()
        finally:
            await fleet.stop()
        assert snap.driver == "kubernetes"
        # Not addressable yet (no IP) and other apps' pods are not servers.
        assert [s.id for s in snap.servers] == [f"{STS}-0", f"{STS}-1"]
        ready, starting = snap.servers
        assert ready.health is ServerHealth.LIVE
        assert starting.health is ServerHealth.STARTING
        assert snap.live() == (ready,)
        assert ready.http_url == "http://10.1.0.5:8000"
        assert ready.grpc_url == "10.1.0.5:8001"
        assert ready.metrics_url == "http://10.1.0.5:8002/metrics"
        assert ready.capacity_bytes == 40 * GIB  # the pod annotation wins
        assert starting.capacity_bytes == 16 * GIB  # config default
        assert ready.admin_key == "s3cret"
        assert ready.admin_header == "admin-key"
        assert ready.labels["tritonfleet.io/accelerator"] == "mig-1g.10gb"
        assert starting.labels[NODE_LABEL] == "gpu-node-2"

    run(scenario)
    (listing,) = cluster.requests_to("GET", "/pods")[:1]
    assert listing.query["labelSelector"] == SELECTOR


def test_watch_starts_at_the_lists_version_and_sees_changes(
    cluster: FakeCluster, apiserver: ApiServer
) -> None:
    cluster.add_pod(f"{STS}-0", ip="10.1.0.5", labels=TRITON)
    cluster.add_pod(f"{STS}-1", ip="10.1.0.6", labels=TRITON)
    listed_at = cluster.resource_version

    async def scenario() -> None:
        fleet = make_fleet(apiserver.url)
        await fleet.start()
        try:
            cluster.set_ready(f"{STS}-0", False)
            await eventually(
                lambda: health(fleet).get(f"{STS}-0") is ServerHealth.STARTING, "unready pod"
            )
            cluster.delete_pod(f"{STS}-1")
            await eventually(lambda: f"{STS}-1" not in health(fleet), "deleted pod to vanish")
            cluster.add_pod(f"{STS}-2", ip="10.1.0.7", labels=TRITON)
            await eventually(lambda: health(fleet).get(f"{STS}-2") is ServerHealth.LIVE, "new pod")
            cluster.add_pod("not-triton", ip="10.9.9.9", labels={"app": "x"})
            cluster.set_ready(f"{STS}-0", True)
            await eventually(
                lambda: health(fleet).get(f"{STS}-0") is ServerHealth.LIVE, "pod ready again"
            )
            assert health(fleet) == {f"{STS}-0": ServerHealth.LIVE, f"{STS}-2": ServerHealth.LIVE}
            assert (await fleet.refresh()) is fleet.snapshot()
            assert fleet.relists == 1
        finally:
            await fleet.stop()

    run(scenario)
    watch = cluster.requests_to("GET", "/pods")[1]
    assert watch.query["watch"] == "true"
    assert watch.query["resourceVersion"] == str(listed_at)
    assert watch.query["labelSelector"] == SELECTOR
    assert int(watch.query["timeoutSeconds"]) == 5


def test_terminating_pod_is_down_before_it_is_gone() -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="p-0",
            deletion_timestamp=datetime(2026, 1, 1, tzinfo=UTC),
            annotations={"tritonfleet.io/http-port": "9000", CAPACITY_ANNOTATION: "lots"},
        ),
        status=client.V1PodStatus(
            pod_ip="fd00::5",
            phase="Running",
            conditions=[client.V1PodCondition(type="Ready", status="True")],
        ),
    )
    server = server_from_pod(pod, config())
    assert server is not None
    assert server.health is ServerHealth.DOWN
    assert server.http_url == "http://[fd00::5]:9000"  # annotation port, IPv6 bracketed
    assert server.grpc_url == "[fd00::5]:8001"
    assert server.capacity_bytes == 16 * GIB  # unparsable annotation ignored


# ---------------------------------------------------------------- 410 Gone


def test_expired_watch_relists_and_the_view_is_right(
    cluster: FakeCluster, apiserver: ApiServer
) -> None:
    cluster.add_pod(f"{STS}-0", ip="10.1.0.5", labels=TRITON)
    cluster.add_pod(f"{STS}-1", ip="10.1.0.6", labels=TRITON)

    async def scenario() -> None:
        fleet = make_fleet(apiserver.url)
        await fleet.start()
        try:
            # Wait until the watch is open, then change the cluster behind its back: the open
            # watch ends with 410 and the changes exist only in a fresh list.
            await eventually(lambda: len(cluster.requests_to("GET", "/pods")) >= 2, "watch")
            with cluster.expire_watches():
                cluster.delete_pod(f"{STS}-1")
                cluster.set_ready(f"{STS}-0", False)
                cluster.add_pod(f"{STS}-2", ip="10.1.0.7", labels=TRITON)
            await eventually(lambda: fleet.relists == 2, "a re-list after 410")
            assert health(fleet) == {
                f"{STS}-0": ServerHealth.STARTING,
                f"{STS}-2": ServerHealth.LIVE,
            }
            # ...and the new watch continues from the new list's version.
            cluster.delete_pod(f"{STS}-2")
            await eventually(lambda: f"{STS}-2" not in health(fleet), "delete after re-list")
        finally:
            await fleet.stop()

    run(scenario)
    lists = [r for r in cluster.requests_to("GET", "/pods") if "watch" not in r.query]
    assert len(lists) == 2


# ---------------------------------------------------------------- scaling


def test_scale_reads_and_patches_the_scale_subresource(
    cluster: FakeCluster, apiserver: ApiServer
) -> None:
    cluster.add_pod(f"{STS}-0", labels=TRITON)
    cluster.add_pod(f"{STS}-1", labels=TRITON)

    async def scenario() -> None:
        fleet = make_fleet(apiserver.url)
        assert await fleet.read_scale() == ScaleStatus(desired=2, current=2)
        await fleet.scale(5)
        assert cluster.scales[STS] == 5
        assert await fleet.read_scale() == ScaleStatus(desired=5, current=2)
        await fleet.scale(0)
        assert cluster.scales[STS] == 0
        with pytest.raises(InvalidSpec, match="replicas: -1 is negative"):
            await fleet.scale(-1)

    run(scenario)
    patches = cluster.requests_to("PATCH", f"/statefulsets/{STS}/scale")
    assert len(patches) == 2  # the negative request never left the process
    assert {p.content_type for p in patches} == {"application/merge-patch+json"}
    assert len(cluster.requests_to("GET", f"/statefulsets/{STS}/scale")) == 2


def test_scale_errors_name_the_statefulset_and_the_fix(
    cluster: FakeCluster, apiserver: ApiServer
) -> None:
    async def scenario() -> None:
        missing = make_fleet(apiserver.url, statefulset="nope")
        with pytest.raises(NotFound, match="statefulset 'nope' not found"):
            await missing.scale(1)
        cluster.forbid_scale = True
        with pytest.raises(Unauthorized, match=r"HTTP 403.*statefulsets/scale") as caught:
            await make_fleet(apiserver.url).scale(1)
        assert isinstance(caught.value.__cause__, client.ApiException)

    run(scenario)


# ---------------------------------------------------------------- the event loop and outages


def test_api_calls_never_block_the_event_loop(cluster: FakeCluster, apiserver: ApiServer) -> None:
    cluster.add_pod(f"{STS}-0", labels=TRITON)
    cluster.list_delay_s = 0.4
    cluster.scale_delay_s = 0.4

    async def scenario() -> None:
        fleet = make_fleet(apiserver.url)
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        while len(gaps) < 3:  # the ticker must be running before the calls start
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await fleet.start()
        await fleet.scale(3)
        elapsed = time.monotonic() - started
        await fleet.stop()
        done.set()
        await ticking
        assert elapsed >= 0.8  # the slow server really was slow...
        assert max(gaps) < 0.6, f"event loop stalled for {max(gaps):.3f}s"  # ...off the loop

    run(scenario)


def test_unreachable_api_server_at_start_is_a_clear_fleet_error(apiserver: ApiServer) -> None:
    url = apiserver.url
    apiserver.stop()  # nothing listens on that port any more

    async def scenario() -> None:
        fleet = make_fleet(url)
        started = time.monotonic()
        with pytest.raises(FleetError, match=f"namespace '{NS}'.*reachable") as caught:
            await fleet.start()
        assert time.monotonic() - started < 5
        assert caught.value.__cause__ is not None
        assert fleet.snapshot().servers == ()
        with pytest.raises(
            FleetError, match=f"could not patch the scale of statefulset {NS}/{STS}"
        ):
            await fleet.scale(2)

    run(scenario)


def test_outage_keeps_the_last_view_and_recovers(
    cluster: FakeCluster, apiserver: ApiServer
) -> None:
    cluster.add_pod(f"{STS}-0", ip="10.1.0.5", labels=TRITON)
    cluster.add_pod(f"{STS}-1", ip="10.1.0.6", labels=TRITON)

    async def scenario() -> None:
        fleet = make_fleet(apiserver.url)
        before = await fleet.start()
        try:
            await eventually(lambda: len(cluster.requests_to("GET", "/pods")) >= 2, "watch")
            apiserver.stop()
            await eventually(lambda: fleet.last_error is not None, "the outage to be noticed")
            # Degraded, not crashed: the last view stays, refresh does not raise.
            assert (await fleet.refresh()).servers == before.servers
            # Seen from the client: it keeps trying, but backs off (here 0.05 s doubling to a
            # 0.2 s cap, with jitter) instead of spinning on a server that refuses at once.
            tried = fleet.api_failures
            await asyncio.sleep(2.0)
            assert 5 <= fleet.api_failures - tried <= 30, fleet.api_failures - tried
            # The cluster moves on while the API server is down (etcd keeps the history).
            cluster.delete_pod(f"{STS}-1")
            apiserver.start()
            await eventually(lambda: f"{STS}-1" not in health(fleet), "recovery")
            await eventually(lambda: fleet.last_error is None, "the error to clear")
            assert fleet.relists == 1  # resumed from the last version, no re-list needed
        finally:
            await fleet.stop()

    run(scenario)


def test_stop_returns_promptly_with_a_watch_open(
    cluster: FakeCluster, apiserver: ApiServer
) -> None:
    async def scenario() -> None:
        fleet = make_fleet(apiserver.url, watch_timeout_s=30)
        await fleet.start()
        await eventually(lambda: len(cluster.requests_to("GET", "/pods")) >= 2, "watch")
        started = time.monotonic()
        await fleet.stop()
        assert time.monotonic() - started < 1.0

    run(scenario)


# ---------------------------------------------------------------- config and backoff


def test_config_rejects_nonsense_naming_each_field() -> None:
    with pytest.raises(InvalidSpec) as caught:
        K8sFleetConfig(namespace="", statefulset="s", label_selector="a=b", http_port=70000)
    message = str(caught.value)
    assert message.startswith("invalid kubernetes fleet config: ")
    assert "namespace: must not be empty" in message
    assert "http_port: 70000 is not a TCP port" in message


def test_backoff_grows_with_jitter_caps_and_resets() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, rng=random.Random(1))
    delays = [backoff.next_delay_s() for _ in range(6)]
    steps = [1, 2, 4, 8, 8, 8]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert len(set(delays[3:])) == 3  # jittered, not constant at the cap
    backoff.reset()
    assert backoff.next_delay_s() <= 1.0
