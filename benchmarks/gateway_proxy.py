"""Proxy overhead, side by side in one run: direct to Triton, through the gateway, through nginx.

    PYTHONPATH=. python -m benchmarks.gateway_proxy [--seconds 5] [--concurrency 4] [--rounds 2]

One Triton server (CPU, Python backend) serves `double_fp32` (4 floats, no sleep);
perf_analyzer 2.51 runs at the same concurrency against each target, over HTTP and gRPC, in
interleaved rounds (so drift from other load on the machine hits every target alike). nginx
runs one worker with a keepalive upstream (HTTP) and grpc_pass (gRPC), as the reference.
Over gRPC both gateway doors are measured: `gateway` (grpc_door h2, the HTTP/2 frame relay)
and `gw-grpcio` (grpc_door grpcio). Prints throughput ratios and added p50/p99 against direct.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

from adapters.gateway.demofleet import DEMO_MODELS
from adapters.netutil import free_port
from benchmarks import perf_analyzer
from benchmarks.gateway_common import ADMIN_KEY, GatewayProcess, start_fleet

MODEL = DEMO_MODELS[0]

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream triton_http {{ server {http}; keepalive 32; }}
  upstream triton_grpc {{ server {grpc}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{http_port};
    location / {{
      proxy_pass http://triton_http;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header admin-key {key};
      proxy_buffering off;
      client_max_body_size 64m;
    }}
  }}
  server {{
    listen 127.0.0.1:{grpc_port} http2;
    location / {{
      grpc_pass grpc://triton_grpc;
      grpc_set_header triton-grpc-protocol-admin-key {key};
    }}
  }}
}}
"""


async def run_pa(url: str, protocol: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    binary, env = perf_analyzer.locate()
    csv_path = out / f"pa-{protocol}-{url.replace(':', '_')}.csv"
    header = ["-H", f"admin-key:{ADMIN_KEY}"] if protocol == "http" else []
    if protocol == "grpc":
        header = ["-H", f"triton-grpc-protocol-admin-key:{ADMIN_KEY}"]
    cmd = [
        str(binary), "-m", MODEL.name, "-u", url, "-i", protocol, "-b", "1",
        "--shape", "INPUT0:4", "--concurrency-range", str(args.concurrency),
        "--measurement-interval", str(int(args.seconds * 1000)),
        "--stability-percentage", "50", "--max-trials", "6",
        "-f", str(csv_path), *header,
    ]  # fmt: skip
    p = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    text, _ = await p.communicate()
    if p.returncode != 0 or not csv_path.exists():
        raise RuntimeError(f"perf_analyzer failed against {url}: {text.decode()[-800:]}")
    row = next(csv.DictReader(io.StringIO(csv_path.read_text())))
    return {
        "throughput": float(row["Inferences/Second"]),
        "p50_us": float(row["p50 latency"]),
        "p99_us": float(row["p99 latency"]),
    }


async def main(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="gwbench-"))
    fleet, snap = await start_fleet(out / "fleet", 1, [MODEL])
    server = snap.servers[0]
    nginx_http, nginx_grpc = free_port(), free_port()
    (out / "nginx").mkdir()
    conf = out / "nginx" / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=out / "nginx",
            http=server.http_url.removeprefix("http://"),
            grpc=server.grpc_url,
            http_port=nginx_http,
            grpc_port=nginx_grpc,
            key=ADMIN_KEY,
        )
    )
    nginx = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-e", str(out / "nginx/err.log")])
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        async with (
            GatewayProcess(snap, [MODEL.name], {"grpc_door": "h2"}) as gw,
            GatewayProcess(snap, [MODEL.name], {"grpc_door": "grpcio"}) as gw_grpcio,
        ):
            await asyncio.sleep(0.5)
            targets = {
                "http": {
                    "direct": server.http_url.removeprefix("http://"),
                    "gateway": gw.http,
                    "nginx": f"127.0.0.1:{nginx_http}",
                },
                "grpc": {
                    "direct": server.grpc_url,
                    "gateway": gw.grpc,  # the HTTP/2 frame-level door
                    "gw-grpcio": gw_grpcio.grpc,
                    "nginx": f"127.0.0.1:{nginx_grpc}",
                },
            }
            for r in range(args.rounds):
                for protocol in args.protocols:
                    for name, url in targets[protocol].items():
                        res = await run_pa(url, protocol, args, out)
                        results.setdefault((protocol, name), []).append(res)
                        print(
                            f"round {r + 1} {protocol:4} {name:8} {res['throughput']:8.0f} infer/s "
                            f"p50 {res['p50_us']:6.0f} us  p99 {res['p99_us']:6.0f} us",
                            flush=True,
                        )
    finally:
        nginx.terminate()
        nginx.wait()
        await fleet.stop()
    print(f"\nmachine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} CPUs; concurrency {args.concurrency}; "
          f"medians over {args.rounds} rounds")  # fmt: skip
    print(f"{'proto':5} {'target':8} {'infer/s':>8} {'ratio':>6} {'p50 us':>7} {'+p50 us':>8} "
          f"{'p99 us':>7} {'+p99 us':>8}")  # fmt: skip
    for protocol in args.protocols:
        base = {
            k: statistics.median(x[k] for x in results[protocol, "direct"])
            for k in results[protocol, "direct"][0]
        }
        for name in ("direct", "gateway", "gw-grpcio", "nginx"):
            if (protocol, name) not in results:
                continue
            m = {k: statistics.median(x[k] for x in results[protocol, name]) for k in base}
            print(
                f"{protocol:5} {name:8} {m['throughput']:8.0f} {m['throughput'] / base['throughput']:6.2f} "
                f"{m['p50_us']:7.0f} {m['p50_us'] - base['p50_us']:+8.0f} "
                f"{m['p99_us']:7.0f} {m['p99_us'] - base['p99_us']:+8.0f}"
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="perf_analyzer measurement window")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    try:
        import uvloop

        uvloop.run(main(ap.parse_args()))
    except ImportError:
        asyncio.run(main(ap.parse_args()))
