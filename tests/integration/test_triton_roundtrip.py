"""Generate → load (config + file overrides) → infer → unload, on two real Triton servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from adapters.localfleet import LocalFleet, LocalFleetConfig
from adapters.templatefiles import TemplateFiles
from adapters.tritonbin import TritonInstall, locate
from adapters.tritoncontrol import GrpcTritonControl
from adapters.tritonschema import ProtobufSchema
from controlplane.configgen import Renderer, served_matches
from controlplane.errors import FleetError, ModelLoadFailed
from controlplane.fleet import ServerHealth
from controlplane.spec import ModelSpec, decode_file
from tests.support import BROKEN_PY, eventually, example_spec, python_spec, start_fleet

pytestmark = pytest.mark.triton


def test_generated_models_load_infer_and_unload_on_two_servers(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    renderer = Renderer(ProtobufSchema(), TemplateFiles())
    schema = ProtobufSchema()

    async def scenario() -> None:
        fleet = await start_fleet(triton_install, tmp_path, servers=2)
        control = GrpcTritonControl()
        try:
            servers = fleet.snapshot().servers
            spec = ModelSpec.model_validate(example_spec("batch_sleep"))
            rendered = renderer.render(spec)
            files = {p: decode_file(c) for p, c in (spec.artifact.files or {}).items()}
            for server in servers:
                await control.load(server, spec.name, rendered.json(), files)
                assert "batch_sleep" in await control.loaded(server)

            for server in servers:
                host = server.http_url.removeprefix("http://")
                client = httpclient.InferenceServerClient(host)
                # The config Triton serves is the one we generated (plus Triton's defaults);
                # model-config is restricted, so only the admin key may read it.
                with pytest.raises(Exception, match="restricted"):
                    client.get_model_config("batch_sleep")
                served = client.get_model_config(
                    "batch_sleep", headers={server.admin_header: server.admin_key}
                )
                assert served_matches(rendered.config, schema.parse_json(json.dumps(served)))
                x = np.arange(32, dtype=np.float32).reshape(2, 16)
                inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                out = client.infer("batch_sleep", [inp]).as_numpy("OUTPUT0")
                np.testing.assert_array_equal(out, x * 2)
                client.close()

            for server in servers:
                await control.unload(server, "batch_sleep")

            async def unloaded_everywhere() -> bool:
                return all(["batch_sleep" not in await control.loaded(s) for s in servers])

            # Triton finishes an unload in the background: wait for it, with a deadline.
            await eventually(unloaded_everywhere, 30)
        finally:
            await control.close()
            await fleet.stop()

    asyncio.run(scenario())


def test_bytes_model_and_broken_model(triton_install: TritonInstall, tmp_path: Path) -> None:
    renderer = Renderer(ProtobufSchema(), TemplateFiles())

    async def scenario() -> None:
        fleet = await start_fleet(triton_install, tmp_path, servers=1, admin_key=None)
        control = GrpcTritonControl()
        try:
            server = fleet.snapshot().servers[0]
            spec = ModelSpec.model_validate(example_spec("text_stats"))
            files = {p: decode_file(c) for p, c in (spec.artifact.files or {}).items()}
            await control.load(server, spec.name, renderer.render(spec).json(), files)
            client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
            text = np.array([[b"hello"], [b"tritonfleet"]], dtype=np.object_)
            inp = httpclient.InferInput("TEXT", [2, 1], "BYTES")
            inp.set_data_from_numpy(text)
            result = client.infer("text_stats", [inp])
            assert result.as_numpy("LENGTH").ravel().tolist() == [5, 11]
            assert result.as_numpy("UPPER").ravel().tolist() == [b"HELLO", b"TRITONFLEET"]
            client.close()

            broken = ModelSpec.model_validate(python_spec("broken", source=BROKEN_PY))
            with pytest.raises(ModelLoadFailed, match="this_module_does_not_exist_anywhere"):
                await control.load(
                    server,
                    "broken",
                    renderer.render(broken).json(),
                    {"1/model.py": BROKEN_PY.encode()},
                )
        finally:
            await control.close()
            await fleet.stop()

    asyncio.run(scenario())


def test_sigkilled_server_is_seen_gone_and_restarted(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    async def scenario() -> None:
        fleet = await start_fleet(triton_install, tmp_path / "a", servers=2, auto_restart=False)
        try:
            victim = fleet.snapshot().servers[0]
            os.killpg(victim.pid, signal.SIGKILL)

            async def victim_down() -> bool:
                return (await fleet.refresh()).by_id(victim.id).health is ServerHealth.DOWN

            await eventually(victim_down, 30)
            snap = fleet.snapshot()
            assert snap.by_id("local-1").health is ServerHealth.LIVE
            await fleet.restart(victim.id)
            again = fleet.snapshot().by_id(victim.id)
            assert again.health is ServerHealth.LIVE and again.pid != victim.pid
            assert again.http_url == victim.http_url  # same ports: the same server came back
        finally:
            await fleet.stop()

        fleet = await start_fleet(triton_install, tmp_path / "b", servers=1, auto_restart=True)
        try:
            victim = fleet.snapshot().servers[0]
            os.killpg(victim.pid, signal.SIGKILL)

            async def noticed() -> bool:  # DOWN now, restarting behind
                return (await fleet.refresh()).servers[0].health is not ServerHealth.LIVE

            await eventually(noticed, 30)

            async def back_live() -> bool:
                return (await fleet.refresh()).servers[0].health is ServerHealth.LIVE

            await eventually(back_live, 60)
            back = fleet.snapshot().servers[0]
            assert back.pid != victim.pid and back.http_url == victim.http_url
            async with httpx.AsyncClient() as c:
                assert (await c.get(f"{back.http_url}/v2/health/live")).status_code == 200
        finally:
            await fleet.stop()

    asyncio.run(scenario())


def test_port_clash_and_missing_binary_say_what_to_do(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        fleet = LocalFleet(
            LocalFleetConfig(servers=1, run_dir=tmp_path, capacity_bytes=1 << 30, base_port=port),
            triton_install,
        )
        with pytest.raises(FleetError, match=rf"port {port} .* already in use.*--base-port"):
            asyncio.run(fleet.start())

    with pytest.raises(FleetError, match="no executable file there; install the local extra"):
        locate(str(tmp_path / "nope" / "tritonserver"), tmp_path)
