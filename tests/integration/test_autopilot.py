"""The autopilot on real Triton, through the same `Runtime` that `tritonfleet up` runs.

A synthetic model sleeps 15 ms + 1 ms per request in a batch (max 4), so one replica serves
~60 req/s unbatched and ~210 req/s at full batches. Open-loop load through the in-process
gateway: a step makes the autopilot want a second replica, which needs a second server, so the
fleet grows from one tritonserver to two; when the load falls, the extra replica is drained and
unloaded with no failed request and the empty server is stopped; a tiny admission limit sheds
a burst with fast 429s carrying Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.runtime import Runtime
from adapters.tritonbin import TritonInstall
from controlplane.spec import ModelSpec
from tests.support import eventually, up_settings
from tests.support import stepper_spec as stepper

pytestmark = pytest.mark.triton

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}
).encode()


class OpenLoop:
    """Constant-rate requests through the gateway; counts every outcome by status."""

    def __init__(self, client: httpx.AsyncClient, model: str) -> None:
        self.client, self.model = client, model
        self.codes: dict[int, int] = {}
        self.retry_after: set[str] = set()
        self._pending: set[asyncio.Task[None]] = set()

    async def _one(self) -> None:
        try:
            r = await self.client.post(f"/v2/models/{self.model}/infer", content=BODY)
            code = r.status_code
            if code == 429:
                self.retry_after.add(r.headers.get("retry-after", ""))
        except httpx.HTTPError:
            code = -1
        self.codes[code] = self.codes.get(code, 0) + 1

    async def run(self, rate: float, seconds: float) -> None:
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1
            while n < due:
                t = asyncio.create_task(self._one())
                self._pending.add(t)
                t.add_done_callback(self._pending.discard)
                n += 1
            await asyncio.sleep(0.005)

    async def drain(self) -> None:
        await asyncio.gather(*self._pending)

    def failed(self) -> int:
        return sum(n for c, n in self.codes.items() if c not in (200, 429))


def test_step_grows_the_fleet_then_drains_and_shrinks_without_failures(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    async def scenario() -> None:
        settings = up_settings(
            tmp_path,
            servers=1,
            max_servers=2,
            server_idle_s=2,
            autopilot_stable_window_s=6,
            autopilot_panic_window_s=2,
        )
        rt = await Runtime(settings).start()
        try:
            assert rt.registry is not None and rt.reconciler is not None and rt.gateway
            rec = rt.reconciler
            spec = stepper("stepper", autoscaling={"scale_down_delay_s": 4})
            await rt.registry.register(ModelSpec.model_validate(spec))
            assert await rec.ensure("stepper", 60)
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
            async with httpx.AsyncClient(
                base_url=rt.gateway.http_url, timeout=10, limits=limits
            ) as client:
                load = OpenLoop(client, "stepper")
                await load.run(10, 4)
                assert len(rec.replicas("stepper")) == 1

                # Step: 150 req/s is more than one replica should carry at 70% utilization;
                # one replica per server, so the fleet grows to a second server first.
                stepped = asyncio.create_task(load.run(150, 20))
                await eventually(lambda: len(rec.replicas("stepper")) == 2, 20)
                assert len(rt.fleet.snapshot().servers) == 2
                await stepped
                ups = [d for d in rec.decisions("stepper") if d["changed"]]
                assert ups and ups[0]["desired"] == 2, rec.decisions("stepper")
                assert ups[0]["inputs"]["capacity_peak_rps"], ups[0]

                # Back down: the surplus replica is drained, then unloaded; nothing fails.
                # (stable window 6 s + scale-down delay 4 s + drain; the margin is for a loaded box)
                quiet = asyncio.create_task(load.run(5, 40))
                try:
                    await eventually(lambda: len(rec.replicas("stepper")) == 1, 40)
                except AssertionError as exc:  # say why: the autopilot's own reasons
                    last = [
                        (d.get("desired"), d.get("reason")) for d in rec.decisions("stepper")[-5:]
                    ]
                    raise AssertionError(
                        f"no scale-down within 40 s; last decisions {last}"
                    ) from exc
                await eventually(lambda: len(rec.state.replicas_of("stepper")) == 1, 10)
                await quiet
                await load.drain()
                assert load.failed() == 0, load.codes
                assert rec.unload_calls >= 1
                # The emptied second server is stopped after server_idle_s.
                await eventually(lambda: len(rt.fleet.snapshot().servers) == 1, 20)
                actions = rec.scaling_metrics()["actions"]
                assert actions[("(fleet)", "grow")] == 1 and actions[("(fleet)", "shrink")] == 1
                # `tritonfleet explain` as a user runs it, against this control API.
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    *("-m", "adapters.cli", "explain", "stepper", "--api", rt.api_url),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await proc.communicate()
                assert proc.returncode == 0, err
                table = out.decode()
                assert "REASON" in table and "stable demand" in table, table
                assert "capacity_peak_rps=" in table
                control_metrics = (await client.get(f"{rt.api_url}/metrics")).text
                assert (
                    'tritonfleet_autopilot_actions_total{action="scale_up",model="stepper"} 1.0'
                    in control_metrics
                ), control_metrics
                status = rec.model_status("stepper")
                assert status["autopilot"]["policy"] == "slo", status

                # Admission: a limit of 2 in flight sheds a burst with fast 429s + Retry-After.
                spec2 = stepper("tight", admission={"max_inflight": 2}, policy={"min_replicas": 1})
                await rt.registry.register(ModelSpec.model_validate(spec2))
                assert await rec.ensure("tight", 60)
                burst = OpenLoop(client, "tight")
                await burst.run(400, 1)
                await burst.drain()
                assert burst.codes.get(429, 0) > 0 and burst.codes.get(200, 0) > 0, burst.codes
                assert burst.retry_after == {"1"}
                assert burst.failed() == 0, burst.codes
                metrics = (await client.get("/metrics")).text
                assert (
                    'tritonfleet_gateway_rejections_total{model="tight",reason="queue_full"}'
                    in metrics
                )
        finally:
            await rt.stop()

    asyncio.run(scenario())


def test_batching_change_reloads_under_load_without_failures(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    """A tight P95 target puts the model under latency pressure at once: the autopilot halves
    its queue delay, Triton reloads it with the new config while requests keep flowing, and
    not one of them fails (the old model serves until the new one is ready)."""

    async def scenario() -> None:
        settings = up_settings(
            tmp_path, servers=1, autopilot_stable_window_s=6, autopilot_panic_window_s=2
        )
        rt = await Runtime(settings).start()
        try:
            assert rt.registry is not None and rt.reconciler is not None and rt.gateway
            rec = rt.reconciler
            spec = stepper(
                "tuned",
                dynamic_batching={"preferred_batch_sizes": [4], "max_queue_delay_us": 8000},
                slo={"p95_ms": 18, "p99_ms": 40},
                autoscaling={"batching": {"min_queue_delay_us": 500, "max_queue_delay_us": 8000}},
                policy={"min_replicas": 1, "max_replicas": 1},
                # No admission limit: this test is about the reload. (The automatic limit is a
                # few batches in flight; a CPU stall on a loaded box while the new instance
                # loads would rightly shed a few requests with 429, once 7 of 480.)
                admission={"max_inflight": None},
            )
            await rt.registry.register(ModelSpec.model_validate(spec))
            assert await rec.ensure("tuned", 60)
            async with httpx.AsyncClient(base_url=rt.gateway.http_url, timeout=10) as client:
                load = OpenLoop(client, "tuned")
                running = asyncio.create_task(load.run(40, 12))
                await eventually(lambda: rec.autopilot.queue_delay("tuned")[0] >= 1, 10)
                await eventually(
                    lambda: all(r.tuning >= 1 for _, r in rec.state.replicas_of("tuned")), 15
                )
                await running
                await load.drain()
            assert load.failed() == 0 and load.codes.get(429, 0) == 0, load.codes
            assert load.codes[200] > 300
            server = rec.state.snapshot.servers[0]
            assert rt.control is not None
            served = await rt.control.config(server, "tuned")
            assert served is not None
            delay = int(served["dynamic_batching"]["max_queue_delay_microseconds"])
            assert delay == rec.autopilot.queue_delay("tuned")[1] and delay < 8000
        finally:
            await rt.stop()

    asyncio.run(scenario())
