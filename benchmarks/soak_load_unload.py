"""Soak: register → load → delete → unload, N cycles on one real Triton server, through the
whole control plane (registry, SQLite store, reconciler, gRPC control), sampling the RSS of
`tritonserver` (with its Python stubs) and of this control-plane process.

Reports the RSS slope (bytes per cycle, least squares over the samples after a warm-up) of
both. Triton issues #4528 and #7727 report leaks across load/unload; the control plane must not
grow.

    .venv/bin/python -m benchmarks.soak_load_unload [--cycles 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import tempfile
import time
from pathlib import Path

from adapters.artifactfiles import LocalArtifactFiles
from adapters.procmem import rss_bytes, tree_rss_bytes
from adapters.sqlitestore import SqliteStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonbin import check_python_stub, locate
from adapters.tritoncontrol import GrpcTritonControl
from adapters.tritonschema import ProtobufSchema
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.reconciler import ModelState, Reconciler, ReconcilerConfig
from controlplane.registry import Registry
from controlplane.spec import ModelSpec
from tests.support import python_spec, start_fleet


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def main(cycles: int, every: int) -> None:
    import os

    check_python_stub()
    install = locate(None, Path.home() / ".cache" / "tritonfleet")
    with tempfile.TemporaryDirectory() as tmp:
        fleet = await start_fleet(install, Path(tmp) / "fleet", servers=1, admin_key="k")
        store = await SqliteStore(Path(tmp) / "db.sqlite").open()
        registry = Registry(
            store, Renderer(ProtobufSchema(), TemplateFiles()), ArtifactPolicy(None), time.time
        )
        control = GrpcTritonControl()
        rec = Reconciler(
            fleet,
            control,
            store,
            LocalArtifactFiles(ArtifactPolicy(None)),
            clock=time.time,
            rng=random.Random(0),
            config=ReconcilerConfig(interval_s=0.05),
        )
        spec = ModelSpec.model_validate(python_spec("soak", min_replicas=1))
        server_pid = fleet.snapshot().servers[0].pid
        assert server_pid is not None
        samples: list[tuple[int, int, int]] = []
        t0 = time.monotonic()
        try:
            for cycle in range(cycles + 1):
                await registry.register(spec)
                while rec.model_state("soak") is not ModelState.READY:
                    await rec.tick()
                    await rec.wait_idle()
                await registry.delete("soak")
                while rec.model_status("soak")["replicas"]:
                    await rec.tick()
                    await rec.wait_idle()
                if cycle % every == 0:
                    gc.collect()
                    samples.append((cycle, tree_rss_bytes(server_pid), rss_bytes(os.getpid())))
                    print(
                        f"cycle {cycle:4d}: tritonserver tree {samples[-1][1] / 2**20:7.1f} MiB, "
                        f"control plane {samples[-1][2] / 2**20:6.1f} MiB",
                        flush=True,
                    )
        finally:
            await rec.close()
            await control.close()
            await fleet.stop()
            await store.close()
        elapsed = time.monotonic() - t0
        steady = [s for s in samples if s[0] >= every * 2] or samples
        xs = [float(s[0]) for s in steady]
        triton_slope = slope(xs, [float(s[1]) for s in steady])
        cp_slope = slope(xs, [float(s[2]) for s in steady])
        print(
            f"\n{cycles} load/unload cycles in {elapsed:.0f} s ({elapsed / cycles:.2f} s per cycle), "
            f"loads issued: {rec.load_calls}, unloads: {rec.unload_calls}"
        )
        print(
            f"tritonserver RSS slope:  {triton_slope / 1024:+.1f} KiB/cycle "
            f"({samples[0][1] / 2**20:.1f} → {samples[-1][1] / 2**20:.1f} MiB)"
        )
        print(
            f"control plane RSS slope: {cp_slope / 1024:+.1f} KiB/cycle "
            f"({samples[0][2] / 2**20:.1f} → {samples[-1][2] / 2**20:.1f} MiB)"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args()
    asyncio.run(main(args.cycles, args.every))
