"""What reading a Triton /metrics page costs: prometheus_client's parser against the hand-written
one it replaced (issue 13), on a real page.

    PYTHONPATH=. python -m benchmarks.metrics_parse [--models 8] [--repeat 2000] [--quick]

Starts one real tritonserver (CPU, Python backend), loads `--models` copies of a small model,
sends each a few requests so every per-model family has samples, fetches `/metrics` once, then
times both parsers on that exact text (best of 5 runs of `--repeat` parses each). The gateway's
signal feed scrapes each server every `signal_interval_s` (1 s), so the number that matters is
milliseconds of event-loop time per server per second.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
from pathlib import Path

import httpx

from adapters import promtext
from adapters.templatefiles import TemplateFiles
from adapters.tritonbin import locate
from adapters.tritoncontrol import GrpcTritonControl
from adapters.tritonschema import ProtobufSchema
from controlplane import tritonmetrics
from controlplane.configgen import Renderer
from controlplane.spec import ModelSpec
from tests.support import DOUBLE_PY, python_spec, start_fleet


def legacy_sample(line: str) -> tuple[str, str, float] | None:
    """The hand parser `controlplane.signals._sample` was before issue 13 (for comparison)."""
    if not line or line[0] == "#":
        return None
    brace = line.find("{")
    if brace != -1:
        close = line.find("}", brace)
        if close == -1:
            return None
        name, labels, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
    else:
        name, _, rest = line.partition(" ")
        labels = ""
    parts = rest.split()
    if not parts or len(parts) > 2:
        return None
    try:
        return name, labels, float(parts[0])
    except ValueError:
        return None


def legacy_totals(text: str) -> int:
    return sum(1 for line in text.splitlines() if legacy_sample(line) is not None)


async def real_page(models: int, workdir: Path) -> str:
    fleet = await start_fleet(locate(None, workdir / "cache"), workdir, servers=1, admin_key=None)
    control = GrpcTritonControl()
    try:
        server = fleet.snapshot().servers[0]
        renderer = Renderer(ProtobufSchema(), TemplateFiles())
        body = {
            "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]
        }
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as c:
            for i in range(models):
                spec = ModelSpec.model_validate(python_spec(f"m{i}"))
                files = {"1/model.py": DOUBLE_PY.encode()}
                await control.load(server, f"m{i}", renderer.render(spec).json(), files)
                for _ in range(3):
                    (await c.post(f"/v2/models/m{i}/infer", json=body)).raise_for_status()
            assert server.metrics_url is not None
            return (await c.get(server.metrics_url)).text
    finally:
        await control.close()
        await fleet.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=8, help="models loaded on the server")
    ap.add_argument("--repeat", type=int, default=2000, help="parses per timing run")
    ap.add_argument("--quick", action="store_true", help="2 models, 200 parses per run")
    args = ap.parse_args()
    models, repeat = (2, 200) if args.quick else (args.models, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        text = asyncio.run(real_page(models, Path(tmp)))
    lines = text.count("\n")
    parsed = promtext.samples(text)
    assert tritonmetrics.totals(parsed).success == 3 * models, tritonmetrics.totals(parsed)

    def best(fn: object) -> float:
        return min(timeit.repeat(fn, number=repeat, repeat=5)) / repeat  # type: ignore[arg-type]

    old = best(lambda: legacy_totals(text))
    new = best(lambda: tritonmetrics.totals(promtext.samples(text, tritonmetrics.SERVER_FAMILIES)))
    whole = best(lambda: tritonmetrics.totals(promtext.samples(text)))
    new_model = best(
        lambda: tritonmetrics.model_totals(promtext.samples(text, tritonmetrics.MODEL_FAMILIES))
    )
    print(f"page: {len(text)} bytes, {lines} lines, {len(parsed)} samples, {models} models")
    print(f"hand parser (old):              {old * 1e6:8.1f} us per page")
    print(f"prometheus_client, whole page:  {whole * 1e6:8.1f} us per page ({whole / old:.1f}x)")
    print(f"  ... the gateway's families:   {new * 1e6:8.1f} us per page ({new / old:.1f}x)")
    print(f"  ... the autopilot's families: {new_model * 1e6:8.1f} us per page")
    print(
        f"gateway feed, one scrape/s each: {new * 1e3 * 100:.1f} ms of loop per s for 100 servers"
    )
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))


if __name__ == "__main__":
    main()
