"""Run the gateway over a fixed fleet described in a JSON file (benchmarks, manual tests).

    python -m adapters.gateway fleet.json

fleet.json: {"config": {GatewayConfig fields}, "servers": [{Server fields}],
             "models": {"<model>": ["<server id>", ...]}}
Prints one line `READY <http_url> <grpc_url>` once both doors listen.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path

from adapters.gateway.app import Gateway
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from controlplane.fleet import Server


async def _main(path: str) -> None:
    spec = json.loads(Path(path).read_text())
    servers = {s["id"]: Server(**s) for s in spec["servers"]}
    directory = StaticDirectory()
    for model, ids in spec["models"].items():
        directory.put(model, [servers[i] for i in ids])
    gw = Gateway(GatewayConfig(**spec.get("config", {})), directory)
    await gw.start()
    gc.freeze()  # what exists now lives as long as the process
    print("READY", gw.http_url, gw.grpc_url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await gw.stop()


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        import uvloop

        uvloop.run(_main(sys.argv[1]))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
