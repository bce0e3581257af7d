"""The local fleet survives its own crash: `tritonfleet up` SIGKILLed leaves no tritonserver or
Python-backend stub behind; with --keep-servers the servers stay and the next `up` adopts them
without loading anything twice; a stale record whose pid now belongs to someone else is never
acted on. Real Triton, real processes, loopback ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from adapters import proclife
from adapters.tritonbin import TritonInstall
from tests.support import free_port_block, python_spec, start_fleet, wait_until

pytestmark = pytest.mark.triton


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _members(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


class Up:
    """`tritonfleet up` as a user runs it, in its own process."""

    def __init__(self, data: Path, log: Path, *flags: str) -> None:
        self.port = free_port_block(1)
        self.ready = data.parent / f"ready-{self.port}.json"
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "adapters.cli", "up", "--no-examples", "--servers", "1"),
                *("--data-dir", str(data), "--api-port", str(self.port)),
                *("--gateway-http-port", "0", "--gateway-grpc-port", "0"),
                *("--ready-file", str(self.ready), *flags),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self.ready.exists() or self.proc.poll() is not None, 120)
        assert self.proc.poll() is None, log.read_text()
        self.api = json.loads(self.ready.read_text())["api_url"]

    def register_and_wait(self, name: str) -> None:
        r = httpx.post(f"{self.api}/v1/models", json=python_spec(name, min_replicas=1))
        assert r.status_code == 201, r.text
        wait_until(
            lambda: httpx.get(f"{self.api}/v1/models/{name}/status").json()["state"] == "READY",
            60,
        )

    def loads(self) -> float:
        for line in httpx.get(f"{self.api}/metrics").text.splitlines():
            if line.startswith("tritonfleet_reconciler_loads_total "):
                return float(line.split()[1])
        raise AssertionError("no load counter")

    def server_pgids(self, data: Path) -> list[int]:
        return [rec.pid for rec in proclife.records(data / "servers")]

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(60)
        self.log.close()


def test_sigkill_of_up_leaves_no_server_and_no_stub(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    up = Up(data, tmp_path / "up.log")
    try:
        up.register_and_wait("m")
        (pgid,) = up.server_pgids(data)
        assert len(_members(pgid)) >= 2, "the server and its Python-backend stub"
    finally:
        up.stop(signal.SIGKILL)
    wait_until(lambda: not _group_alive(pgid), 15)
    # And the next `up` on the same data directory starts cleanly (no port clash, no leftovers).
    again = Up(data, tmp_path / "up2.log")
    again.stop()


def test_kept_servers_are_adopted_after_a_crash_without_a_reload(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    up = Up(data, tmp_path / "up.log", "--keep-servers")
    up.register_and_wait("m")
    (pgid,) = up.server_pgids(data)
    up.stop(signal.SIGKILL)

    # The proof that the server outlived the control plane is the next one finding it serving
    # (same process group, no load), which takes seconds: longer than any kill would.
    adopted = Up(data, tmp_path / "up2.log", "--keep-servers")
    try:
        wait_until(
            lambda: httpx.get(f"{adopted.api}/v1/models/m/status").json()["state"] == "READY", 30
        )
        assert _group_alive(pgid), "--keep-servers: the server outlives the control plane"
        assert adopted.server_pgids(data) == [pgid]
        assert adopted.loads() == 0, "adopted: nothing loaded twice"
    finally:
        adopted.stop()  # graceful, still --keep-servers: the server stays
    assert _group_alive(pgid)

    # Without --keep-servers the leftover is stopped and replaced; a stop then ends it all.
    fresh = Up(data, tmp_path / "up3.log")
    try:
        assert not _group_alive(pgid)
        (new_pgid,) = fresh.server_pgids(data)
        assert new_pgid != pgid
    finally:
        fresh.stop()
    wait_until(lambda: not _group_alive(new_pgid), 15)
    assert list(proclife.records(data / "servers")) == []


def test_a_stale_record_whose_pid_was_reused_is_left_alone(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        run_dir = tmp_path / "fleet"
        run_dir.mkdir()
        started = proclife.start_time(bystander.pid)
        assert started is not None
        # A record of "our" server whose pid now belongs to an unrelated process.
        proclife.ServerRecord("local-0", bystander.pid, started - 1, 1, 2, 3, "x", kept=True).save(
            run_dir
        )

        async def scenario() -> None:
            fleet = await start_fleet(triton_install, run_dir, servers=1)
            try:
                assert fleet.pid("local-0") != bystander.pid
                (rec,) = proclife.records(run_dir)
                assert rec.pid == fleet.pid("local-0")  # the stale record was replaced
            finally:
                await fleet.stop()

        asyncio.run(scenario())
        assert bystander.poll() is None, "the unrelated process was not touched"
        assert list(proclife.records(run_dir)) == []  # stale record gone; the real one too
    finally:
        bystander.kill()
        bystander.wait()


def test_a_server_log_is_rotated_past_its_cap(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    async def scenario() -> None:
        fleet = await start_fleet(triton_install, tmp_path / "fleet", servers=1, log_max_bytes=4096)
        try:
            log = fleet.log_path("local-0")
            with open(log, "ab") as f:
                f.write(b"x" * 10_000)
            await fleet.refresh()
            assert log.stat().st_size < 4096
            assert log.with_suffix(".log.1").stat().st_size == 4096
            assert fleet.snapshot().servers[0].live  # the server writes on, unharmed
        finally:
            await fleet.stop()

    asyncio.run(scenario())


def test_a_second_ctrl_c_stops_at_once_and_leaves_nothing(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    up = Up(data, tmp_path / "up.log")
    up.register_and_wait("m")
    (pgid,) = up.server_pgids(data)
    up.proc.send_signal(signal.SIGINT)
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(10) in (0, 130)
    up.log.close()
    wait_until(lambda: not _group_alive(pgid), 10)
    assert list(proclife.records(data / "servers")) == []
