"""A local fleet of real Triton servers grows and shrinks like a StatefulSet.

New servers continue the ordinals and show as STARTING until live; shrinking stops the highest
ordinals (process group gone, reaped, ports free), never restarts them, and leaves the rest
untouched; sizes outside --min-servers..--max-servers are refused with the flag to change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from pathlib import Path

import httpx
import pytest

from adapters.localfleet import LocalFleet, LocalFleetConfig
from adapters.netutil import port_in_use
from adapters.tritonbin import TritonInstall
from controlplane.errors import FleetError, NotSupported
from controlplane.fleet import Server, ServerHealth
from tests.support import free_port_block, start_fleet


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a zombie would still answer: reaped processes do not
    except ProcessLookupError:
        return False
    return True


def ports(s: Server) -> list[int]:
    return [int(u.rsplit(":", 1)[1].split("/")[0]) for u in (s.http_url, s.grpc_url)]


async def ready(fleet: LocalFleet) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=5) as client:
        return {
            s.id: (await client.get(f"{s.http_url}/v2/health/ready")).status_code
            for s in fleet.snapshot().servers
        }


def _slow_start(install: TritonInstall, tmp_path: Path) -> tuple[TritonInstall, Path]:
    """The same tritonserver behind a wrapper that waits 3 s before exec while `flag` exists:
    servers started then are still coming up when the test looks, however slow the box."""
    flag = tmp_path / "slow-start"
    wrapper = tmp_path / "tritonserver"
    wrapper.write_text(f'#!/bin/sh\n[ -e "{flag}" ] && sleep 3\nexec "{install.binary}" "$@"\n')
    wrapper.chmod(0o755)
    return dataclasses.replace(install, binary=wrapper), flag


@pytest.mark.triton
def test_scale_up_down_bounds_and_stop(triton_install: TritonInstall, tmp_path: Path) -> None:
    install, slow = _slow_start(triton_install, tmp_path)

    async def scenario() -> None:
        fleet = await start_fleet(
            install, tmp_path / "fleet", servers=1, max_servers=3, stop_grace_s=5
        )
        try:
            (first,) = fleet.snapshot().servers
            assert (fleet.snapshot().min_servers, fleet.snapshot().max_servers) == (1, 3)

            # Grow: the new servers are in the snapshot as STARTING before they are live.
            slow.touch()
            growing = asyncio.create_task(fleet.scale(3))
            await asyncio.sleep(0)
            during = await fleet.refresh()
            slow.unlink()
            assert [s.id for s in during.servers] == ["local-0", "local-1", "local-2"]
            assert [s.health for s in during.servers[1:]] == [ServerHealth.STARTING] * 2
            await growing
            assert [s.health for s in fleet.snapshot().servers] == [ServerHealth.LIVE] * 3
            assert await ready(fleet) == {"local-0": 200, "local-1": 200, "local-2": 200}
            extras = fleet.snapshot().servers[1:]
            assert all(s.pid is not None and alive(s.pid) for s in extras)

            await fleet.scale(3)  # no-op
            assert [s.pid for s in fleet.snapshot().servers] == [first.pid] + [
                s.pid for s in extras
            ]

            # Shrink (two concurrent calls run one after the other): highest ordinals go.
            await asyncio.gather(fleet.scale(2), fleet.scale(1))
            for s in extras:
                assert s.pid is not None and not alive(s.pid), s.id
                assert not any(port_in_use(p) for p in ports(s)), s.id
            for _ in range(3):  # auto_restart is on: the retired servers stay gone
                snap = await fleet.refresh()
                await asyncio.sleep(0.1)
            assert [(s.id, s.pid, s.health) for s in snap.servers] == [
                ("local-0", first.pid, ServerHealth.LIVE)
            ]
            assert await ready(fleet) == {"local-0": 200}

            # Outside the bounds: refused, naming the flag; nothing changes.
            with pytest.raises(NotSupported, match=r"at most 3 server\(s\) \(--max-servers\)"):
                await fleet.scale(4)
            with pytest.raises(NotSupported, match="--min-servers"):
                await fleet.scale(0)
            assert [s.id for s in (await fleet.refresh()).servers] == ["local-0"]

            # Growing again reuses the freed ordinal, as a StatefulSet does.
            await fleet.scale(2)
            assert [s.id for s in fleet.snapshot().servers] == ["local-0", "local-1"]
            pids = [s.pid for s in fleet.snapshot().servers]
        finally:
            await fleet.stop()
        assert not any(pid is not None and alive(pid) for pid in pids)

    asyncio.run(scenario())


@pytest.mark.triton
def test_failed_growth_is_rolled_back(triton_install: TritonInstall, tmp_path: Path) -> None:
    base = free_port_block(6)

    async def scenario() -> None:
        fleet = await start_fleet(
            triton_install, tmp_path / "fleet", servers=1, max_servers=2, base_port=base
        )
        try:
            with socket.socket() as squatter:  # local-1's HTTP port, held by someone else
                squatter.bind(("127.0.0.1", base + 3))
                squatter.listen()
                with pytest.raises(
                    FleetError, match=f"scaling to 2 servers failed: port {base + 3}"
                ):
                    await fleet.scale(2)
            assert [s.id for s in (await fleet.refresh()).servers] == ["local-0"]
            await fleet.scale(2)  # the port is free again
            assert [s.health for s in fleet.snapshot().servers] == [ServerHealth.LIVE] * 2
        finally:
            await fleet.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({"servers": 3, "max_servers": 2}, r"servers \(3\) <= max_servers \(2\)"),
        ({"servers": 2, "min_servers": 3}, r"min_servers \(3\) <= servers \(2\)"),
        ({"servers": 1, "min_servers": 0}, r"1 <= min_servers \(0\)"),
    ],
)
def test_config_refuses_sizes_out_of_order(
    tmp_path: Path, sizes: dict[str, int], expected: str
) -> None:
    with pytest.raises(FleetError, match=expected):
        LocalFleetConfig(run_dir=tmp_path, capacity_bytes=1, **sizes)
