"""The highest open-loop rate one loadgen process sustains with schedule lag p99 under 1 ms.

    PYTHONPATH=. python benchmarks/loadgen_capacity.py [--rates 250,500,1000,2000,3000,5000]

Starts a local Triton with the `fast` model (no sleep, dynamic batching) and runs loadgen
open-loop over HTTP at each rate in turn (6 s, 1 s warm-up), until a rate fails: schedule lag
p99 >= 1 ms, or any request dropped. Goal: at least 5,000 req/s. The server shares the
machine's cores with loadgen, so on a small machine the server's own CPU use limits the result.

`--server stub` replaces Triton with a stub in a child process (uvloop + httptools) that
answers every infer request at once with a canned Triton-shaped binary response: the fastest
"model" one can have on this machine, so the result is the generator's own limit (the stub
still shares the cores). The model metadata/config calls are answered too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen_server import machine, triton

from loadgen.cli import main as loadgen_main

_META = (
    b'{"name":"fast","versions":["1"],"platform":"python","inputs":[{"name":"INPUT0",'
    b'"datatype":"FP32","shape":[-1,4]}],"outputs":[{"name":"OUTPUT0","datatype":"FP32",'
    b'"shape":[-1,4]}]}'
)
_CONFIG = b'{"name":"fast","max_batch_size":64}'
_INFER_HEAD = (
    b'{"model_name":"fast","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32",'
    b'"shape":[1,4],"parameters":{"binary_data_size":16}}]}'
)


def _answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def serve_stub(port: int) -> None:
    """The stub server's main (runs in a child process)."""
    import asyncio

    import httptools
    import uvloop

    infer = _answer(
        _INFER_HEAD + b"\0" * 16, b"Inference-Header-Content-Length: %d\r\n" % len(_INFER_HEAD)
    )
    by_path = {b"/v2/models/fast": _answer(_META), b"/v2/models/fast/config": _answer(_CONFIG)}

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.url = b""
            self.p = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.p.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            self.t.write(by_path.get(self.url, infer))  # type: ignore[attr-defined]
            self.url = b""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


@dataclass(frozen=True)
class _Stub:
    http: str
    grpc: str = ""


@contextlib.contextmanager
def stub() -> Iterator[_Stub]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(port)])
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        yield _Stub(http=f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-stub":
        serve_stub(int(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="250,500,1000,1500,2000,3000,4000,5000,6000")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--protocol", default="http", choices=["http", "grpc"])
    ap.add_argument("--server", default="triton", choices=["triton", "stub"])
    ap.add_argument("--client", default="lean", choices=["lean", "tritonclient"])
    args = ap.parse_args()
    if args.server == "stub" and args.protocol != "http":
        ap.error("--server stub speaks HTTP only")
    print(f"machine: {machine()}")
    best = None
    print(f"server: {args.server}, protocol {args.protocol}, client {args.client}")
    with triton() if args.server == "triton" else stub() as server:
        url = server.http if args.protocol == "http" else server.grpc
        print(f"{'rate':>7} {'achieved':>9} {'lag p50':>9} {'lag p99':>9} {'dropped':>8} "
              f"{'p50':>9} {'p99':>9} result")  # fmt: skip
        for rate in (float(r) for r in args.rates.split(",")):
            out = Path(tempfile.mkdtemp()) / "cap.json"
            argv = [
                "run", "--quiet", "--url", url, "--protocol", args.protocol, "-m", "fast",
                "--rate", str(rate), "--duration", f"{args.seconds}s", "--warmup", "1s",
                "--timeout", "10s", "--json", str(out), "--client", args.client,
            ]  # fmt: skip
            loadgen_main(argv)
            doc = json.loads(out.read_text())
            lag, t = doc["schedule_lag"], doc["totals"]
            ok = lag["p99_us"] is not None and lag["p99_us"] < 1000 and lag["dropped"] == 0
            print(
                f"{rate:7.0f} {t['throughput_rps']:9.1f} {lag['p50_us'] / 1000:7.3f}ms "
                f"{lag['p99_us'] / 1000:7.3f}ms {lag['dropped']:8d} "
                f"{t['latency']['p50_us'] / 1000:7.2f}ms {t['latency']['p99_us'] / 1000:7.2f}ms "
                f"{'ok' if ok else 'FAIL'}",
                flush=True,
            )
            if not ok:
                break
            best = rate
    print(f"\nhighest rate with schedule lag p99 < 1 ms: {best or 0:.0f} req/s (goal 5000)")
    print(f"load average: {os.getloadavg()}")
    return 0 if best and best >= 5000 else 1


if __name__ == "__main__":
    sys.exit(main())
