"""Gateway test support: real Triton servers, the demo models, and a gateway in a thread.

The fleet and the gateway run on one event loop in a background thread (as httpx's
`serve_in_thread` does), so tests can use blocking clients; asyncio clients run on their own
loop in the test. Skipped only when no tritonserver can be found at all (CI installs one).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.demofleet import DEMO_MODELS, DemoModel, load_everywhere
from adapters.gateway.directory import StaticDirectory
from adapters.localfleet import LocalFleet, LocalFleetConfig
from adapters.tritonbin import TritonInstall
from controlplane.fleet import FleetSnapshot

T = TypeVar("T")
ADMIN_KEY = "test-admin-key"


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        async def _call() -> Any:
            return fn(*args)

        return self.run(_call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Env:
    loop: LoopThread
    fleet: LocalFleet
    snapshot: FleetSnapshot
    directory: StaticDirectory
    gateway: Gateway

    @property
    def http(self) -> str:  # host:port, as tritonclient takes it
        return self.gateway.http_url.removeprefix("http://")

    @property
    def grpc(self) -> str:
        assert self.gateway.grpc_url is not None
        return self.gateway.grpc_url


def start_env(
    install: TritonInstall,
    run_dir: Path,
    *,
    servers: int,
    models: tuple[DemoModel, ...],
    config: GatewayConfig,
    per_server_env: dict[int, dict[str, str]] | None = None,
) -> Env:
    loop = LoopThread()
    fleet = LocalFleet(
        LocalFleetConfig(
            servers=servers,
            run_dir=run_dir,
            capacity_bytes=2 << 30,
            admin_key=ADMIN_KEY,
            auto_restart=False,
            per_server_env=per_server_env or {},
        ),
        install,
    )

    async def up() -> Env:
        snap = await fleet.start()
        await load_everywhere(snap, models)
        directory = StaticDirectory()
        for m in models:
            directory.put(m.name, snap.servers)
        gw = Gateway(config, directory)
        await gw.start()
        return Env(loop, fleet, snap, directory, gw)

    try:
        return loop.run(up(), timeout=180)
    except BaseException:
        loop.run(fleet.stop())
        loop.close()
        raise


def stop_env(env: Env) -> None:
    async def down() -> None:
        await env.gateway.stop()
        await env.fleet.stop()

    env.loop.run(down())
    env.loop.close()


@pytest.fixture(scope="session")
def env(triton_install: TritonInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Two servers with every demo model, and a gateway in front of them."""
    e = start_env(
        triton_install,
        tmp_path_factory.mktemp("gwfleet"),
        servers=2,
        models=DEMO_MODELS,
        config=GatewayConfig(http_port=0, grpc_port=0, max_body_bytes=1 << 20),
    )
    yield e
    stop_env(e)


def run_async(aw: Awaitable[T]) -> T:
    async def _wrap() -> T:
        return await aw

    return asyncio.run(_wrap())


def slow_model(env: Env, service_ms: float = 2000.0) -> str:
    """A model that takes `service_ms` per request, on the fleet's first server (loaded once)."""
    model = DemoModel(
        f"slow_double_fp32_{service_ms:.0f}", "TYPE_FP32", "double", service_ms=service_ms
    )
    if not env.directory.replicas(model.name):
        env.loop.run(load_everywhere(env.snapshot, [model], servers=[0]))
        env.directory.put(model.name, env.snapshot.servers[:1])
    return model.name
