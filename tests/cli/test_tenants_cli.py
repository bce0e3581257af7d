"""`tritonfleet tenants …` and tenant isolation through the CLI, against a real control API
(uvicorn on a free loopback port, SQLite store, no fleet attached)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml

from adapters.api.control import ApiContext, create_app
from adapters.cli import main
from adapters.sqlitestore import SqliteStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.registry import Registry
from controlplane.tenants import TenantRegistry
from tests.support import python_spec

ADMIN = "cli-admin-token"


@pytest.fixture
def api_url(tmp_path: Path) -> Iterator[str]:
    started = threading.Event()
    holder: dict[str, uvicorn.Server] = {}
    port: list[int] = []

    async def serve() -> None:
        store = await SqliteStore(tmp_path / "db.sqlite").open()
        tenants = await TenantRegistry(store, time.time).load()
        registry = Registry(
            store,
            Renderer(ProtobufSchema(), TemplateFiles()),
            ArtifactPolicy(None),
            time.time,
            tenants,
        )
        app = create_app(ApiContext(registry=registry, api_token=ADMIN, tenants=tenants))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        holder["server"] = server
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port.append(server.servers[0].sockets[0].getsockname()[1])
        started.set()
        await task
        await store.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"http://127.0.0.1:{port[0]}"
    holder["server"].should_exit = True
    thread.join(30)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tenants_lifecycle_and_isolation_through_the_cli(
    api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = ("--api", api_url, "--token", ADMIN)
    code, out, err = cli(
        capsys, "tenants", "create", "red", "--quota-models", "2", "--quota-replicas", "3", *admin
    )
    assert code == 0, err
    red = out.strip().splitlines()[-1]
    assert red.startswith("tft_") and "red.<name>" in out
    code, out, _ = cli(capsys, "tenants", "create", "blue", *admin)
    blue = out.strip().splitlines()[-1]

    spec = tmp_path / "m.yaml"
    spec.write_text(yaml.safe_dump(python_spec("red.m")))
    assert cli(capsys, "models", "register", str(spec), "--api", api_url, "--token", red)[0] == 0
    as_blue = ("--api", api_url, "--token", blue)
    for argv in (
        ("models", "show", "red.m"),
        ("models", "rm", "red.m"),
        ("models", "ensure", "red.m", "--timeout", "0"),
        ("models", "update", str(spec)),
        ("explain", "red.m"),
    ):
        code, out, err = cli(capsys, *argv, *as_blue)
        assert code == 2 and "HTTP 404" in err and "not found" in err, (argv, out, err)
    code, out, _ = cli(capsys, "models", "list", *as_blue)
    assert code == 0 and "red.m" not in out
    code, out, _ = cli(capsys, "models", "list", "--api", api_url, "--token", red)
    assert "red.m" in out and " 1 " in out  # still generation 1: blue changed nothing

    code, out, _ = cli(capsys, "tenants", "list", *admin)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"blue", "red"}
    assert "active" in lines["red"] and "models=2" in lines["red"] and "replicas=3" in lines["red"]

    code, out, err = cli(capsys, "tenants", "list", *as_blue)
    assert code == 2 and "HTTP 403" in err and "admin token" in err
    code, out, err = cli(capsys, "tenants", "create", "Bad_Name", *admin)
    assert code == 2 and "name:" in err, err
    code, out, err = cli(capsys, "tenants", "create", "x", "--quota-replicas", "-1", *admin)
    assert code == 2 and "quota.replicas" in err, err
    code, out, err = cli(capsys, "tenants", "revoke", "ghost", *admin)
    assert code == 2 and "tenant 'ghost' not found" in err

    assert cli(capsys, "tenants", "revoke", "red", *admin)[0] == 0
    code, out, err = cli(capsys, "models", "list", "--api", api_url, "--token", red)
    assert code == 2 and "HTTP 401" in err and "revoked" in err
    code, out, _ = cli(capsys, "tenants", "list", *admin)
    assert "revoked" in next(line for line in out.splitlines() if line.startswith("red"))
