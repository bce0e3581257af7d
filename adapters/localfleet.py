"""A fleet of real `tritonserver` processes on this machine.

Each server runs in its own process group (so a stop reaches its Python-backend stubs too),
on loopback ports, in explicit model-control mode, with its log in `<run_dir>/<id>.log`.
`refresh()` notices a dead process; with `auto_restart` the next refresh starts it again on the
same ports, so the control plane sees the same server come back.

`scale(n)` grows and shrinks the fleet as a StatefulSet does: new servers continue the ordinals
(local-2, local-3, ...) and show as STARTING until live; shrinking stops the highest ordinals
first, and a stopped server is gone from the snapshot and never auto-restarted.

Servers never outlive this process by more than a few seconds, however it dies (see
`adapters.proclife`: a parent-death signal, a lifeline watchdog for the whole process group,
and a record per server in the run directory). With `keep_servers` they do outlive it on
purpose, and the next start with the same run directory adopts the ones still alive and
healthy; otherwise leftovers of an earlier run are stopped and replaced, and stale records
(a dead pid, or a pid now used by another process) are only deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

import httpx

from adapters import proclife
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
    min_servers: int = 1  # scale() never goes below this
    max_servers: int | None = None  # scale() never goes above this; None: `servers` (fixed size)
    stop_grace_s: float = 10.0  # SIGTERM, then SIGKILL after this long
    keep_servers: bool = False  # outlive this process; the next start adopts them
    log_max_bytes: int = 64 << 20  # a server's log is rotated (one old copy) past this size

    def __post_init__(self) -> None:
        if not 1 <= self.min_servers <= self.servers <= self.size_limit:
            raise FleetError(
                f"local fleet sizes must satisfy 1 <= min_servers ({self.min_servers}) <= "
                f"servers ({self.servers}) <= max_servers ({self.size_limit}); "
                "change --min-servers, --servers or --max-servers"
            )

    @property
    def size_limit(self) -> int:
        return self.servers if self.max_servers is None else self.max_servers


@dataclass
class _Proc:
    index: int
    args: ServerArgs
    popen: subprocess.Popen[bytes] | proclife.Adopted | None = None
    logfile: IO[bytes] | None = None
    health: ServerHealth = ServerHealth.STARTING
    restarts: int = 0
    started_at: float = 0.0
    launch: asyncio.Task[None] | None = None  # a start in flight (scale-up or auto-restart)
    retired: bool = False  # scaled away or stopped: never restarted


class LocalFleet:
    """`FleetDriver` over tritonserver processes this process starts and owns."""

    name = "local"

    def __init__(self, config: LocalFleetConfig, install: TritonInstall) -> None:
        self._cfg = config
        self._install = install
        self._procs: list[_Proc] = []
        # No kept-alive probe connections: Triton waits out its --exit-timeout-secs on SIGTERM
        # while any HTTP connection is open, so one would slow every stop and scale-down.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(2.0), limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._repo = config.run_dir / "empty-repo"
        self._scale_lock = asyncio.Lock()  # one resize at a time
        self._lifeline = None if config.keep_servers else proclife.Lifeline()
        self._preexec = None if config.keep_servers else proclife.pdeathsig_preexec()
        self._snapshot = self._snapshot_of(())

    # --- FleetDriver -------------------------------------------------------------------
    async def start(self) -> FleetSnapshot:
        self._cfg.run_dir.mkdir(parents=True, exist_ok=True)
        self._repo.mkdir(exist_ok=True)
        if self._lifeline is not None:
            self._lifeline.start()
        leftovers = await asyncio.to_thread(self._leftovers)
        starts = []
        for i in range(self._cfg.servers):
            p = _Proc(index=i, args=self._args_for(i))
            self._procs.append(p)
            rec = leftovers.pop(self._id(p), None)
            starts.append(self._adopt(p, rec) if rec is not None else self._launch(p))
        for rec in leftovers.values():  # beyond --servers now: not needed
            await asyncio.to_thread(self._stop_leftover, rec, "beyond --servers")
        try:
            await asyncio.gather(*starts)
        except BaseException:
            await self.stop()
            raise
        return await self.refresh()

    async def refresh(self) -> FleetSnapshot:
        await asyncio.gather(*(self._probe(p) for p in self._procs))
        self._snapshot = self._snapshot_of(tuple(self._server(p) for p in self._procs))
        return self._snapshot

    def snapshot(self) -> FleetSnapshot:
        return self._snapshot

    async def scale(self, replicas: int) -> None:
        """Grow to (or shrink to) `replicas` servers; concurrent calls run one after another.

        Growing starts servers with the next ordinals and returns once all are live; if one
        fails to start, every server this call added is stopped again and `FleetError` is
        raised. Shrinking stops the highest ordinals first (callers empty them beforehand).
        """
        async with self._scale_lock:
            self._check_size(replicas)
            current = len(self._procs)
            if replicas > current:
                await self._grow(replicas)
            elif replicas < current:
                await self._shrink(replicas)
            else:
                return
            log.info("local fleet scaled: %d → %d servers", current, replicas)
            await self.refresh()

    async def stop(self) -> None:
        if self._cfg.keep_servers:
            for p in self._procs:  # they outlive us on purpose; their records stay
                if p.launch is not None:
                    p.launch.cancel()
                if p.logfile is not None:
                    p.logfile.close()
                    p.logfile = None
            log.info("local fleet: leaving %d server(s) running (--keep-servers)", len(self._procs))
        else:
            await asyncio.gather(*(self._retire(p) for p in self._procs))
            if self._lifeline is not None:
                self._lifeline.close()
        await self._http.aclose()

    # --- extra operations of a local fleet ---------------------------------------------
    def kill_now(self) -> None:
        """SIGKILL every server's process group at once (a second Ctrl-C); not kept ones."""
        if self._cfg.keep_servers:
            return
        for p in self._procs:
            self._terminate(p, signal.SIGKILL)
            self._record_path(p).unlink(missing_ok=True)
        if self._lifeline is not None:
            self._lifeline.close()

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
    def _check_size(self, replicas: int) -> None:
        low, high = self._cfg.min_servers, self._cfg.size_limit
        if replicas > high:
            raise NotSupported(
                f"the local fleet may grow to at most {high} server(s) (--max-servers); "
                f"asked for {replicas}: restart with --max-servers {replicas} to allow it"
            )
        if replicas < low:
            raise NotSupported(
                f"the local fleet may shrink to no fewer than {low} server(s) (--min-servers, "
                f"at least 1); asked for {replicas}"
            )

    async def _grow(self, replicas: int) -> None:
        # In the list before they are live, so refresh() publishes them as STARTING; the
        # launch task keeps _probe from judging (or restarting) a server still coming up.
        first = len(self._procs)
        added = [_Proc(index=i, args=self._args_for(i)) for i in range(first, replicas)]
        self._procs.extend(added)
        launches = []
        for p in added:
            p.launch = asyncio.create_task(self._launch(p), name=f"start {self._id(p)}")
            launches.append(p.launch)
        results = await asyncio.gather(*launches, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self._shrink(first)
            if isinstance(failure, FleetError):
                raise FleetError(f"scaling to {replicas} servers failed: {failure}") from failure
            raise failure

    async def _shrink(self, replicas: int) -> None:
        # Out of the list first: from here on refresh() neither probes nor restarts them.
        victims, self._procs = self._procs[replicas:], self._procs[:replicas]
        await asyncio.gather(*(self._retire(p) for p in reversed(victims)))

    async def _retire(self, p: _Proc) -> None:
        """Stop one server for good: SIGTERM its group, SIGKILL after the grace, reap, close."""
        p.retired = True
        if p.launch is not None:
            p.launch.cancel()
            with contextlib.suppress(asyncio.CancelledError, FleetError):
                await p.launch
        self._terminate(p, signal.SIGTERM)
        deadline = time.monotonic() + self._cfg.stop_grace_s
        while p.popen is not None and p.popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._terminate(p, signal.SIGKILL)
        if p.popen is not None:
            await asyncio.to_thread(p.popen.wait)  # reaped: no zombie left behind
        if p.logfile is not None:
            p.logfile.close()
            p.logfile = None
        p.health = ServerHealth.DOWN
        if p.popen is not None:
            if self._lifeline is not None:
                self._lifeline.release(p.popen.pid)
            self._record_path(p).unlink(missing_ok=True)
            log.info("server %s stopped (pid %d)", self._id(p), p.popen.pid)

    def _snapshot_of(self, servers: tuple[Server, ...]) -> FleetSnapshot:
        return FleetSnapshot(
            servers=servers,
            driver=self.name,
            min_servers=self._cfg.min_servers,
            max_servers=self._cfg.size_limit,
        )

    def _args_for(self, i: int) -> ServerArgs:
        if self._cfg.base_port is not None:
            http, grpc, metrics = (self._cfg.base_port + 3 * i + k for k in range(3))
        else:
            http, grpc, metrics = free_port(), free_port(), free_port()
        return ServerArgs(
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            model_repository=self._repo,
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
        popen = p.popen = subprocess.Popen(
            p.args.argv(self._install),
            stdout=p.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # own process group: stop() reaches the stubs too
            preexec_fn=self._preexec,  # prctl only: safe between fork and exec
        )
        if self._lifeline is not None:
            self._lifeline.guard(popen.pid)
        self._record(p, popen.pid).save(self._cfg.run_dir)
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
        self._cap_log(p)
        old = p.health
        if p.launch is not None:
            if not p.launch.done():
                return  # starting (new) or coming back (restarted): keeps its health until live
            p.launch = None
        if p.popen is None or p.popen.poll() is not None:
            p.health = ServerHealth.DOWN
            if self._cfg.auto_restart and p.popen is not None and not p.retired:
                # Publish DOWN now (its models get re-placed at once) and bring the process
                # back in the background on the same ports.
                log.warning(
                    "server %s exited (code %s); restarting", self._id(p), p.popen.returncode
                )
                p.restarts += 1
                p.launch = asyncio.create_task(self._relaunch(p))
        else:
            try:
                r = await self._http.get(f"http://{p.args.host}:{p.args.http_port}/v2/health/live")
                p.health = ServerHealth.LIVE if r.status_code == 200 else ServerHealth.DOWN
            except httpx.HTTPError:
                p.health = ServerHealth.DOWN
        if old is not p.health:
            log.info("server %s: %s → %s", self._id(p), old.value, p.health.value)

    async def _relaunch(self, p: _Proc) -> None:
        try:
            await self._launch(p)  # LIVE once it answers; the next refresh publishes it
        except FleetError as exc:
            log.error("server %s could not be restarted: %s", self._id(p), exc)
            p.health = ServerHealth.DOWN

    # --- crash safety: records, leftovers, adoption, logs -----------------------------------
    def _record_path(self, p: _Proc) -> Path:
        return self._cfg.run_dir / f"{self._id(p)}.json"

    def _record(self, p: _Proc, pid: int) -> proclife.ServerRecord:
        return proclife.ServerRecord(
            server_id=self._id(p),
            pid=pid,
            start_time=proclife.start_time(pid),
            http_port=p.args.http_port,
            grpc_port=p.args.grpc_port,
            metrics_port=p.args.metrics_port,
            admin_key_fingerprint=proclife.key_fingerprint(self._cfg.admin_key),
            kept=self._cfg.keep_servers,
        )

    def _leftovers(self) -> dict[str, proclife.ServerRecord]:
        """Live servers an earlier run left behind; stale records and orphaned stubs cleared."""
        alive = {}
        for rec in proclife.records(self._cfg.run_dir):
            if rec.alive():
                alive[rec.server_id] = rec
            else:
                log.info(
                    "server record %s: pid %d is gone or belongs to another process now; "
                    "removing the record (nothing is stopped)",
                    rec.server_id,
                    rec.pid,
                )
                rec.remove(self._cfg.run_dir)
        backend = self._install.backend_dir
        stub = backend / "python" / "triton_python_backend_stub" if backend else None
        if stub is not None and stub.exists():
            for pid in proclife.orphan_stubs(stub.resolve()):
                log.warning("stopping an orphaned Python-backend stub (pid %d)", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return alive

    def _stop_leftover(self, rec: proclife.ServerRecord, why: str) -> None:
        log.warning(
            "stopping server %s (pid %d) left by an earlier run (%s)", rec.server_id, rec.pid, why
        )
        proclife.stop_group(rec.pid, self._cfg.stop_grace_s)
        rec.remove(self._cfg.run_dir)

    async def _adopt(self, p: _Proc, rec: proclife.ServerRecord) -> None:
        """Take over a live server from an earlier run, or stop it and start afresh."""
        why = None
        if not self._cfg.keep_servers:
            why = "not started with --keep-servers now"
        elif rec.admin_key_fingerprint != proclife.key_fingerprint(self._cfg.admin_key):
            why = "it was started with another admin key"
        if why is None:
            p.args = replace(
                p.args,
                http_port=rec.http_port,
                grpc_port=rec.grpc_port,
                metrics_port=rec.metrics_port,
            )
            p.popen = proclife.Adopted(rec)
            p.logfile = open(self.log_path(self._id(p)), "ab")  # noqa: SIM115
            try:
                await self._wait_live(p)
                log.info("server %s: adopted (pid %d) from an earlier run", self._id(p), rec.pid)
                return
            except FleetError as exc:
                why = f"it does not answer: {exc}"
                p.args = self._args_for(p.index)
        await asyncio.to_thread(self._stop_leftover, rec, why)
        await self._launch(p)

    def _cap_log(self, p: _Proc) -> None:
        """Rotate a server's log in place (copy, then truncate) once it passes the cap."""
        path = self.log_path(self._id(p))
        try:
            size = path.stat().st_size
            if size <= self._cfg.log_max_bytes:
                return
            old = path.with_suffix(".log.1")
            with open(path, "rb") as src, open(old, "wb") as dst:
                src.seek(size - self._cfg.log_max_bytes)  # the newest part is kept
                dst.write(src.read(self._cfg.log_max_bytes))
            os.truncate(path, 0)  # the server writes with O_APPEND: it carries on at 0
        except OSError as exc:
            log.debug("rotating %s failed: %s", path, exc)

    @staticmethod
    def _terminate(p: _Proc, sig: signal.Signals) -> None:
        if p.popen is None or p.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.popen.pid, sig)
