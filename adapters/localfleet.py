"""A fleet of real `tritonserver` processes on this machine.

Each server runs in its own process group (so a stop reaches its Python-backend stubs too),
on loopback ports, in explicit model-control mode, with its log in `<run_dir>/<id>.log`.
`refresh()` notices a dead process; with `auto_restart` the next refresh starts it again on the
same ports, so the control plane sees the same server come back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from adapters.netutil import free_port, port_in_use
from adapters.tritonbin import ServerArgs, TritonInstall
from controlplane.errors import FleetError, NotSupported
from controlplane.fleet import FleetSnapshot, Server, ServerHealth

log = logging.getLogger(__name__)

_CLASH_MARKERS = ("address already in use", "failed to start", "socket bind")


@dataclass(frozen=True)
class LocalFleetConfig:
    servers: int
    run_dir: Path
    capacity_bytes: int
    admin_key: str | None = None
    host: str = "127.0.0.1"
    base_port: int | None = None  # None: free ports chosen by the OS
    start_timeout_s: float = 60.0
    auto_restart: bool = True
    env: Mapping[str, str] = field(default_factory=dict)  # extra env for every server
    per_server_env: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Proc:
    index: int
    args: ServerArgs
    popen: subprocess.Popen[bytes] | None = None
    logfile: IO[bytes] | None = None
    health: ServerHealth = ServerHealth.STARTING
    restarts: int = 0
    started_at: float = 0.0


class LocalFleet:
    """`FleetDriver` over tritonserver processes this process starts and owns."""

    name = "local"

    def __init__(self, config: LocalFleetConfig, install: TritonInstall) -> None:
        self._cfg = config
        self._install = install
        self._procs: list[_Proc] = []
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0))
        self._snapshot = FleetSnapshot(servers=(), driver=self.name)

    # --- FleetDriver -------------------------------------------------------------------
    async def start(self) -> FleetSnapshot:
        self._cfg.run_dir.mkdir(parents=True, exist_ok=True)
        repo = self._cfg.run_dir / "empty-repo"
        repo.mkdir(exist_ok=True)
        for i in range(self._cfg.servers):
            self._procs.append(_Proc(index=i, args=self._args_for(i, repo)))
        try:
            await asyncio.gather(*(self._launch(p) for p in self._procs))
        except BaseException:
            await self.stop()
            raise
        return await self.refresh()

    async def refresh(self) -> FleetSnapshot:
        await asyncio.gather(*(self._probe(p) for p in self._procs))
        self._snapshot = FleetSnapshot(
            servers=tuple(self._server(p) for p in self._procs), driver=self.name
        )
        return self._snapshot

    def snapshot(self) -> FleetSnapshot:
        return self._snapshot

    async def scale(self, replicas: int) -> None:
        raise NotSupported(
            f"the local fleet has a fixed size ({self._cfg.servers}); restart with --servers {replicas}"
        )

    async def stop(self) -> None:
        for p in self._procs:
            self._terminate(p, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self._procs:
            while p.popen is not None and p.popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self._terminate(p, signal.SIGKILL)
            if p.popen is not None:
                p.popen.wait()
            if p.logfile is not None:
                p.logfile.close()
                p.logfile = None
        await self._http.aclose()

    # --- extra operations of a local fleet ---------------------------------------------
    async def restart(self, server_id: str) -> None:
        """Stop one server (if it runs) and start it again on the same ports."""
        p = self._by_id(server_id)
        self._terminate(p, signal.SIGKILL)
        if p.popen is not None:
            await asyncio.to_thread(p.popen.wait)
        p.restarts += 1
        await self._launch(p)
        await self.refresh()

    def log_path(self, server_id: str) -> Path:
        return self._cfg.run_dir / f"{server_id}.log"

    def pid(self, server_id: str) -> int | None:
        p = self._by_id(server_id)
        return p.popen.pid if p.popen is not None and p.popen.poll() is None else None

    # --- internals ---------------------------------------------------------------------
    def _args_for(self, i: int, repo: Path) -> ServerArgs:
        if self._cfg.base_port is not None:
            http, grpc, metrics = (self._cfg.base_port + 3 * i + k for k in range(3))
        else:
            http, grpc, metrics = free_port(), free_port(), free_port()
        return ServerArgs(
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            model_repository=repo,
            host=self._cfg.host,
            admin_key=self._cfg.admin_key,
        )

    @staticmethod
    def _id(p: _Proc) -> str:
        return f"local-{p.index}"

    def _by_id(self, server_id: str) -> _Proc:
        for p in self._procs:
            if self._id(p) == server_id:
                return p
        raise FleetError(f"no local server {server_id!r}")

    def _server(self, p: _Proc) -> Server:
        a = p.args
        return Server(
            id=self._id(p),
            http_url=f"http://{a.host}:{a.http_port}",
            grpc_url=f"{a.host}:{a.grpc_port}",
            metrics_url=f"http://{a.host}:{a.metrics_port}/metrics",
            capacity_bytes=self._cfg.capacity_bytes,
            health=p.health,
            admin_key=a.admin_key,
            admin_header=a.admin_header,
            labels=dict(self._cfg.labels),
            pid=p.popen.pid if p.popen is not None else None,
        )

    async def _launch(self, p: _Proc) -> None:
        for port in (p.args.http_port, p.args.grpc_port, p.args.metrics_port):
            if port_in_use(port, p.args.host):
                raise FleetError(
                    f"port {port} on {p.args.host} is already in use (server {self._id(p)}); "
                    "stop whatever holds it or choose other ports (--base-port)"
                )
        env = self._install.env({**self._cfg.env, **self._cfg.per_server_env.get(p.index, {})})
        if p.logfile is not None:
            p.logfile.close()
        p.logfile = open(self.log_path(self._id(p)), "ab")  # noqa: SIM115 - lives as long as the process
        p.popen = subprocess.Popen(
            p.args.argv(self._install),
            stdout=p.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # own process group: stop() reaches the stubs too
        )
        p.started_at = time.monotonic()
        p.health = ServerHealth.STARTING
        await self._wait_live(p)

    async def _wait_live(self, p: _Proc) -> None:
        deadline = time.monotonic() + self._cfg.start_timeout_s
        url = f"http://{p.args.host}:{p.args.http_port}/v2/health/live"
        while time.monotonic() < deadline:
            assert p.popen is not None
            if p.popen.poll() is not None:
                raise FleetError(self._exit_message(p))
            try:
                r = await self._http.get(url)
                if r.status_code == 200:
                    p.health = ServerHealth.LIVE
                    log.info("server %s: STARTING → LIVE (pid %d)", self._id(p), p.popen.pid)
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise FleetError(
            f"server {self._id(p)} did not become live within {self._cfg.start_timeout_s:.0f}s; "
            f"see its log at {self.log_path(self._id(p))}"
        )

    def _exit_message(self, p: _Proc) -> str:
        path = self.log_path(self._id(p))
        tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
        lowered = tail.lower()
        rc = p.popen.returncode if p.popen is not None else None
        if any(m in lowered for m in _CLASH_MARKERS):
            return (
                f"server {self._id(p)} could not bind its ports "
                f"({p.args.http_port}/{p.args.grpc_port}/{p.args.metrics_port}): a port is in use; "
                "choose other ports (--base-port) or stop what holds them"
            )
        last = [ln for ln in tail.splitlines() if ln.strip()][-3:]
        return (
            f"tritonserver for {self._id(p)} exited with code {rc} while starting: "
            f"{' | '.join(last) or 'no output'} (full log: {path})"
        )

    async def _probe(self, p: _Proc) -> None:
        old = p.health
        if p.popen is None or p.popen.poll() is not None:
            p.health = ServerHealth.DOWN
            if self._cfg.auto_restart and p.popen is not None:
                log.warning(
                    "server %s exited (code %s); restarting", self._id(p), p.popen.returncode
                )
                p.restarts += 1
                try:
                    await self._launch(p)
                except FleetError as exc:
                    log.error("server %s could not be restarted: %s", self._id(p), exc)
                    p.health = ServerHealth.DOWN
        else:
            try:
                r = await self._http.get(f"http://{p.args.host}:{p.args.http_port}/v2/health/live")
                p.health = ServerHealth.LIVE if r.status_code == 200 else ServerHealth.DOWN
            except httpx.HTTPError:
                p.health = ServerHealth.DOWN
        if old is not p.health:
            log.info("server %s: %s → %s", self._id(p), old.value, p.health.value)

    @staticmethod
    def _terminate(p: _Proc, sig: signal.Signals) -> None:
        if p.popen is None or p.popen.poll() is not None:
            return
        try:
            os.killpg(p.popen.pid, sig)
        except ProcessLookupError:
            pass

