"""The `tritonfleet` command line: `up`, `models …`, `config render`, `fleet status`, `loadgen`,
`sim run`.

`up` runs everything in this process; the other commands talk to a running control API
(`--api`, default $TRITONFLEET_API_URL or http://127.0.0.1:8080). User mistakes print one clear
line on stderr and exit 2; unreachable services exit 1; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import httpx
from pydantic import ValidationError

from adapters import specfile
from adapters.settings import FleetKind, Settings
from controlplane.errors import FleetError, InvalidSpec, TritonfleetError
from controlplane.placement import PlacementSetting
from controlplane.routing import POLICIES
from controlplane.spec import field_errors

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --- helpers ------------------------------------------------------------------------------
def _api(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.api, headers=headers, timeout=httpx.Timeout(60.0))


def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> httpx.Response:
    try:
        with _api(args) as client:
            r = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the control API at {args.api} ({exc}); start it with "
            "`tritonfleet up` or pass --api URL",
            EXIT_UNAVAILABLE,
        ) from exc
    if r.status_code >= 400:
        raise CliError(_error_text(r), EXIT_USAGE if r.status_code < 500 else EXIT_UNAVAILABLE)
    return r


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:500]}"
    lines = [f"HTTP {r.status_code}: {body.get('error', '')}"]
    for d in body.get("detail", []) or []:
        lines.append(f"  {d.get('field')}: {d.get('message')}")
    return "\n".join(lines)


def _spec(path: str) -> dict[str, Any]:
    return specfile.load(Path(path))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [header, *rows])


def _gib(n: int | None) -> str:
    return (
        "-" if n is None else f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"
    )


# --- commands -----------------------------------------------------------------------------
def cmd_models_register(args: argparse.Namespace) -> int:
    r = _call(args, "POST", "/v1/models", json=_spec(args.file))
    body = r.json()
    print(f"registered {body['name']} (generation {body['generation']})")
    return 0


def cmd_models_update(args: argparse.Namespace) -> int:
    spec = _spec(args.file)
    r = _call(args, "PUT", f"/v1/models/{spec.get('name', '')}", json=spec)
    body = r.json()
    print(f"updated {body['name']} (generation {body['generation']})")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    models = _call(args, "GET", "/v1/models").json()["models"]
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    rows = [
        [
            m["name"],
            m["spec"]["backend"],
            str(m["generation"]),
            str(m["spec"]["policy"]["min_replicas"]),
            str(m["spec"]["policy"]["max_replicas"]),
            m.get("tenant") or "-",
            ",".join(f"{k}={v}" for k, v in sorted(m["spec"].get("tags", {}).items())) or "-",
        ]
        for m in models
    ]
    print(
        _table(rows, ["NAME", "BACKEND", "GEN", "MIN", "MAX", "TENANT", "TAGS"])
        if rows
        else "no models registered"
    )
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    model = _call(args, "GET", f"/v1/models/{args.name}").json()
    status = _call(args, "GET", f"/v1/models/{args.name}/status").json()
    print(json.dumps({"model": model, "status": status}, indent=2))
    return 0


def cmd_models_rm(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/v1/models/{args.name}")
    print(f"removed {args.name}")
    return 0


def cmd_models_ensure(args: argparse.Namespace) -> int:
    try:
        r = _call(
            args, "POST", f"/v1/models/{args.name}/ensure", params={"timeout_s": args.timeout}
        )
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    print(json.dumps(r.json(), indent=2))
    return 0


def cmd_config_render(args: argparse.Namespace) -> int:
    spec = _spec(args.file)
    if args.offline:
        from adapters.memstore import MemoryStore
        from adapters.templatefiles import TemplateFiles
        from adapters.tritonschema import ProtobufSchema
        from controlplane.artifacts import ArtifactPolicy
        from controlplane.configgen import Renderer
        from controlplane.registry import Registry
        from controlplane.spec import ModelSpec

        registry = Registry(
            MemoryStore(), Renderer(ProtobufSchema(), TemplateFiles()), ArtifactPolicy(None), float
        )
        print(registry.render(ModelSpec.model_validate(spec)).pbtxt, end="")
        return 0
    print(_call(args, "POST", "/v1/config/render", json=spec).text, end="")
    return 0


def cmd_fleet_status(args: argparse.Namespace) -> int:
    fleet = _call(args, "GET", "/v1/fleet").json()
    if args.json:
        print(json.dumps(fleet, indent=2))
        return 0
    rows = [
        [
            s["id"],
            s["health"],
            s["http_url"],
            _gib(s["used_bytes"]),
            _gib(s["capacity_bytes"]),
            ", ".join(f"{m['name']}({m['state'].lower()})" for m in s["models"]) or "-",
        ]
        for s in fleet["servers"]
    ]
    placement = fleet.get("placement")
    how = f", placement: {placement['strategy']} ({placement['setting']})" if placement else ""
    print(f"fleet driver: {fleet['driver']}{how}")
    print(_table(rows, ["SERVER", "HEALTH", "URL", "USED", "CAPACITY", "MODELS"]))
    for model, why in sorted(fleet.get("unplaced", {}).items()):
        print(f"unplaced {model}: {why}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """The autopilot's recent decisions for one model, as a table (newest last)."""
    rows = _call(args, "GET", f"/v1/models/{args.name}/decisions").json()["decisions"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no autopilot decision for {args.name} yet (autopilot off, or no tick yet)")
        return 0
    table = [
        [
            time.strftime("%H:%M:%S", time.localtime(d["at"])),
            d["policy"],
            d["mode"],
            str(d["ready"]),
            "-" if d["previous"] is None else str(d["previous"]),
            str(d["desired"]),
            "-" if d["admission_limit"] is None else str(d["admission_limit"]),
            d["reason"],
        ]
        for d in rows[-args.last :]
    ]
    print(
        _table(table, ["TIME", "POLICY", "MODE", "READY", "FROM", "TO", "MAX_INFLIGHT", "REASON"])
    )
    last = rows[-1]["inputs"]
    print("inputs of the last decision: " + ", ".join(f"{k}={v}" for k, v in last.items()))
    return 0


def _quota_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: value
        for key in ("memory_bytes", "replicas", "models", "requests_per_s", "burst")
        if (value := getattr(args, f"quota_{key}", None)) is not None
    }


def _print_token(body: dict[str, Any], verb: str) -> None:
    print(f"{verb} tenant {body['name']}; its models are named '{body['prefix']}<name>'")
    print("token (shown once; store it now, only its hash is kept):")
    print(body["token"])


def cmd_tenants_create(args: argparse.Namespace) -> int:
    body = _call(
        args, "POST", "/v1/tenants", json={"name": args.name, "quota": _quota_body(args)}
    ).json()
    _print_token(body, "created")
    return 0


def cmd_tenants_rotate(args: argparse.Namespace) -> int:
    _print_token(_call(args, "POST", f"/v1/tenants/{args.name}/token").json(), "new token for")
    return 0


def cmd_tenants_quota(args: argparse.Namespace) -> int:
    body = _call(args, "PUT", f"/v1/tenants/{args.name}/quota", json=_quota_body(args)).json()
    print(f"quota of {body['name']}: {_quota_text(body['quota'])}")
    return 0


def cmd_tenants_revoke(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/v1/tenants/{args.name}")
    print(f"revoked {args.name}: its token no longer works; its models keep serving")
    return 0


def _quota_text(q: dict[str, Any]) -> str:
    parts = [f"{k}={_gib(v) if k == 'memory_bytes' else v}" for k, v in q.items() if v is not None]
    return ", ".join(parts) or "unlimited"


def cmd_tenants_list(args: argparse.Namespace) -> int:
    tenants = _call(args, "GET", "/v1/tenants").json()["tenants"]
    if args.json:
        print(json.dumps(tenants, indent=2))
        return 0
    rows = [
        [
            t["name"],
            "active" if t["active"] else "revoked",
            str(t["holding"]["models"]),
            str(t["holding"]["replicas"]),
            _gib(t["holding"]["memory_bytes"]),
            _quota_text(t["quota"]),
        ]
        for t in tenants
    ]
    print(
        _table(rows, ["TENANT", "STATE", "MODELS", "FLOOR", "FLOOR MEMORY", "QUOTA"])
        if rows
        else "no tenants"
    )
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    params = {"by": args.by}
    if args.from_:
        params["from"] = args.from_
    if args.to:
        params["to"] = args.to
    if args.format == "csv":
        print(_call(args, "GET", "/v1/usage", params={**params, "format": "csv"}).text, end="")
        return 0
    body = _call(args, "GET", "/v1/usage", params=params).json()
    if args.format == "json":
        print(json.dumps(body, indent=2))
        return 0
    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime(body["from"]))
    end = time.strftime("%Y-%m-%d %H:%M", time.gmtime(body["to"]))
    print(f"usage {start} .. {end} UTC, by {body['by']}")
    rows = [
        [
            str(r[body["by"]]),
            f"{r['replica_s'] / 3600:.3f}",
            f"{r['memory_gib_h']:.3f}",
            "-" if r["gpu_s"] is None else f"{r['gpu_s'] / 3600:.3f}",
            str(r["requests"]),
            f"{r['compute_s']:.1f}",
        ]
        for r in body["rows"]
    ]
    header = [body["by"].upper(), "REPLICA-H", "MEM GIB-H", "GPU-H", "REQUESTS", "COMPUTE S"]
    print(_table(rows, header) if rows else "no usage in this range")
    return 0


def cmd_loadgen(args: argparse.Namespace) -> int:
    try:
        from loadgen.cli import main as loadgen_main
    except ImportError as exc:
        raise CliError(f"loadgen is not available in this install ({exc})") from exc
    rest = list(args.rest)
    return int(loadgen_main(rest[1:] if rest[:1] == ["--"] else rest))


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for key in (
        "data_dir",
        "api_host",
        "api_port",
        "api_token",
        "base_port",
        "min_servers",
        "max_servers",
        "fleet_config",
        "admin_key",
        "tritonserver",
        "model_root",
        "autopilot_stable_window_s",
        "autopilot_panic_window_s",
        "slo_p95_ms",
        "slo_p99_ms",
        "server_idle_s",
        "placement_strategy",
        "ui_stream_max_clients",
        "usage_flush_interval_s",
        "usage_retention_days",
        *_GATEWAY_SETTINGS,
    ):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    servers = getattr(args, "servers", None)
    if servers is not None:
        if servers.strip().lstrip("-").isdigit():
            overrides["servers"] = int(servers)
        else:  # `--servers URL,URL`: manage servers someone else runs
            overrides["static_servers"] = [u for u in servers.split(",") if u.strip()]
            overrides["fleet"] = FleetKind.STATIC
    if getattr(args, "capacity_bytes", None) is not None:
        overrides["server_capacity_bytes"] = args.capacity_bytes
    if getattr(args, "fleet", None) is not None:
        overrides["fleet"] = args.fleet
    if getattr(args, "static_servers", None):
        overrides["static_servers"] = [u for u in args.static_servers.split(",") if u.strip()]
    if getattr(args, "no_examples", False):
        overrides["register_examples"] = False
    if getattr(args, "no_gateway", False):
        overrides["gateway_enabled"] = False
    if getattr(args, "keep_servers", False):
        overrides["keep_servers"] = True
    if getattr(args, "no_autopilot", False):
        overrides["autopilot"] = False
    if getattr(args, "no_ui", False):
        overrides["ui_enabled"] = False
    if getattr(args, "controlplane_url", None):
        overrides["controlplane_url"] = args.controlplane_url
    prefix = _gateway_prefix(args)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise CliError(_setting_error(exc, prefix)) from exc
    if settings.gateway_enabled:
        try:
            settings.gateway_config()
        except ValidationError as exc:  # the gateway's own checks, named by its setting
            raise CliError(_setting_error(exc, prefix, "gateway_")) from exc
    return settings


def _gateway_prefix(args: argparse.Namespace) -> str:
    """`tritonfleet gateway --max-body-bytes` is `tritonfleet up --gateway-max-body-bytes`."""
    return "" if args.command == "gateway" else "gateway-"


def _setting_error(exc: ValidationError, gateway_prefix: str, field_prefix: str = "") -> str:
    """One line naming the flag and the environment variable of the first bad setting."""
    first = exc.errors()[0]
    field = field_prefix + ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:  # a check across fields (sizes out of order): no single flag to name
        return message
    if field in ("gateway_prometheus_url", "gateway_prometheus_bearer_token"):
        field = field.removeprefix("gateway_")
    short = gateway_prefix + field.removeprefix("gateway_")
    flag = short if field in _GATEWAY_SETTINGS else field
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
    return f"--{flag.replace('_', '-')}: {message}{shown} [env TRITONFLEET_{field.upper()}]"


async def _up(settings: Settings, ready_file: str | None) -> int:
    from adapters.runtime import Runtime, examples_dir
    from controlplane.spec import ModelSpec

    runtime = Runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()  # the first Ctrl-C/SIGTERM: a graceful stop, bounded in time
            return
        print("second signal: stopping now", file=sys.stderr, flush=True)
        kill_now(runtime)
        os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await runtime.start()
        assert runtime.registry is not None and runtime.fleet is not None
        if runtime.settings.register_examples:
            existing = {r.name for r in await runtime.registry.list()}
            for spec_path in sorted(examples_dir().glob("*/spec.yaml")):
                spec = ModelSpec.model_validate(specfile.load(spec_path))
                if spec.name not in existing:
                    await runtime.registry.register(spec)
        snap = runtime.fleet.snapshot()
        gw = runtime.gateway
        print("tritonfleet is up")
        print(f"  control API   {runtime.api_url}   (docs: {runtime.api_url}/docs)")
        if runtime.settings.ui_enabled:
            print(f"  dashboard     {runtime.api_url}/ui/")
        if gw is not None:
            print(f"  gateway       KServe v2 HTTP {gw.http_url}   gRPC {gw.grpc_url}")
        for s in snap.servers:
            print(
                f"  triton {s.id:<8} http {s.http_url}  grpc {s.grpc_url}  metrics {s.metrics_url}"
            )
        print(f"  data          {runtime.settings.data_dir.resolve()}")
        print(
            "  try: tritonfleet fleet status"
            + ("" if runtime.api_url == "http://127.0.0.1:8080" else f" --api {runtime.api_url}")
        )
        print("press Ctrl-C to stop", flush=True)
        _freeze_heap()
        if ready_file:
            Path(ready_file).write_text(
                json.dumps(
                    {
                        "api_url": runtime.api_url,
                        "gateway_http_url": gw.http_url if gw else None,
                        "gateway_grpc_url": gw.grpc_url if gw else None,
                    }
                )
            )
        await stop.wait()
        print("stopping… (Ctrl-C again to stop at once)", flush=True)
    finally:
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await runtime.stop()
        except TimeoutError:
            print(f"not stopped within {STOP_TIMEOUT_S:.0f}s: stopping now", file=sys.stderr)
            kill_now(runtime)
            return 1
    return 0


STOP_TIMEOUT_S = 30.0  # a graceful stop of `up` never takes longer


def kill_now(runtime: Any) -> None:
    """SIGKILL the local fleet's servers and stubs (unless they are kept on purpose)."""
    kill = getattr(runtime.fleet, "kill_now", None)
    if kill is not None:
        kill()


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.controlplane_url:
        raise CliError("gateway: --controlplane-url (or TRITONFLEET_CONTROLPLANE_URL) is required")
    _logging(args.verbose)
    return _run(_gateway(settings, settings.controlplane_url))


async def _gateway(settings: Settings, control_url: str) -> int:
    from adapters.gateway.app import Gateway
    from adapters.gateway.remote import RemoteDirectory

    directory = RemoteDirectory(
        control_url, admin_key=settings.admin_key, api_token=settings.api_token
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await directory.start()
    gateway = Gateway(settings.gateway_config(), directory, admin_token=settings.api_token)
    try:
        try:
            await gateway.start()
        except OSError as exc:
            raise CliError(
                f"gateway: cannot listen on {settings.gateway_host}:{settings.gateway_http_port}/"
                f"{settings.gateway_grpc_port} ({exc.strerror}); choose other --http-port/"
                "--grpc-port",
                EXIT_UNAVAILABLE,
            ) from exc
        _freeze_heap()
        print(
            f"gateway: KServe v2 HTTP {gateway.http_url}  gRPC {gateway.grpc_url}  "
            f"(replicas from {control_url})",
            flush=True,
        )
        await stop.wait()
    finally:
        await gateway.stop()
        await directory.stop()
    return 0


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run an entry point on uvloop when it is importable (the loop the gateway is tuned for)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _freeze_heap() -> None:
    """What start-up allocated lives as long as the process: keep it out of every GC pass."""
    gc.collect()
    gc.freeze()


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_sim_run(args: argparse.Namespace) -> int:
    from adapters import simio

    path = Path(args.scenario)
    if not path.is_file():
        raise CliError(f"sim run: scenario {path} is not a file; pass a YAML scenario")
    bar = _ProgressBar(sys.stderr) if not args.quiet else None
    report = simio.run(path, args.seed, bar)
    if bar is not None:
        bar.close()
    out = Path(args.out) if args.out else path.with_suffix("").with_name(path.stem + "-sim")
    try:
        written = simio.write_report(report, out)
    except OSError as exc:
        raise CliError(
            f"sim run: cannot write the report into {out}: {exc.strerror}; pass --out DIR"
        ) from exc
    req, lat = report["requests"], report["latency_ms"]
    print(
        f"{report['scenario']}: {req['arrived']} requests: {req['completed']} completed, "
        f"{req['failed']} failed, {req['refused']} refused, {req['timed_out']} timed out; "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms; {report['cold_holds']} cold holds, "
        f"{report['loads']} loads, {report['evictions']} evictions; "
        f"{report['memory_gib_s']:.0f} GiB-s of memory, mean {report['mean_servers_in_use']} "
        "servers in use"
    )
    for p in written:
        print(f"wrote {p}")
    return 0


class _ProgressBar:
    """A one-line progress bar of simulated time on a terminal (a line per 10% otherwise)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = -1

    def __call__(self, now: float, end: float) -> None:
        frac = min(1.0, now / end) if end > 0 else 1.0
        step = int(frac * (40 if self.tty else 10))
        if step == self.last:
            return
        self.last = step
        if self.tty:
            bar = "#" * int(frac * 40)
            self.stream.write(f"\rsimulating [{bar:<40}] {frac:4.0%} ({now:.0f}/{end:.0f} s)")
        else:
            self.stream.write(f"simulated {frac:4.0%} ({now:.0f}/{end:.0f} s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _logging(args.verbose)
    return _run(_up(settings, args.ready_file))


# --- parser -------------------------------------------------------------------------------
# Every gateway setting has a flag: `--gateway-<name>` on `up`, `--<name>` on `gateway`.
_GATEWAY_SETTINGS = tuple(
    n for n in Settings.model_fields if n.startswith("gateway_") and n != "gateway_enabled"
)


def _metavar(name: str) -> str:
    unit = "" if name.endswith("_per_s") else name.rsplit("_", 1)[-1]
    return {"s": "SECONDS", "bytes": "BYTES", "port": "PORT", "host": "ADDR"}.get(
        unit, "TEXT" if Settings.model_fields[name].annotation is str else "N"
    )


def _gateway_opts(sp: argparse.ArgumentParser, prefix: str) -> None:
    """One flag per gateway setting, typed and checked by Settings (so errors name the flag)."""
    for name in _GATEWAY_SETTINGS:
        info = Settings.model_fields[name]
        choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else None
        if name == "gateway_policy":
            choices = tuple(sorted(POLICIES))
        flag = f"--{prefix}{name.removeprefix('gateway_').replace('_', '-')}"
        sp.add_argument(
            flag,
            dest=name,
            default=None,
            choices=choices,
            metavar=None if choices else _metavar(name),
            help=f"{info.description} (env TRITONFLEET_{name.upper()})",
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tritonfleet", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def api_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--api",
            default=os.environ.get("TRITONFLEET_API_URL", "http://127.0.0.1:8080"),
            help="control API URL",
        )
        sp.add_argument(
            "--token",
            default=os.environ.get("TRITONFLEET_API_TOKEN"),
            help="bearer token: the admin token, or a tenant's (env TRITONFLEET_API_TOKEN)",
        )

    def fleet_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--fleet",
            choices=[k.value for k in FleetKind],
            default=None,
            help="where Triton servers come from (default local: processes started here)",
        )
        sp.add_argument(
            "--servers",
            default=None,
            metavar="N|URL,...",
            help="local fleet size (default 2), or Triton HTTP URLs to manage "
            "(implies --fleet static)",
        )
        sp.add_argument(
            "--min-servers",
            type=int,
            default=None,
            metavar="N",
            help="smallest size the fleet may shrink to (default: --servers); "
            "with --fleet kubernetes, the StatefulSet's floor",
        )
        sp.add_argument(
            "--max-servers",
            type=int,
            default=None,
            metavar="N",
            help="largest size the fleet may grow to (default: --servers, i.e. fixed size); "
            "with --fleet kubernetes, the StatefulSet's ceiling",
        )
        sp.add_argument(
            "--fleet-config",
            type=Path,
            default=None,
            metavar="FILE",
            help="YAML `servers:` list of static servers (url, grpc, metrics, capacity_bytes, "
            "admin_key, labels)",
        )
        sp.add_argument("--static-servers", default=None, metavar="URL,...", help=argparse.SUPPRESS)
        sp.add_argument(
            "--tritonserver",
            default=None,
            metavar="PATH",
            help="tritonserver binary (default: PATH, then the nvidia-pytriton wheel)",
        )
        sp.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="SQLite store, server logs and records (default .tritonfleet)",
        )
        sp.add_argument(
            "--api-token",
            default=None,
            help="the admin token: required on changes, manages tenants (env "
            "TRITONFLEET_API_TOKEN)",
        )
        sp.add_argument(
            "--admin-key",
            default=None,
            help="key for Triton's restricted repository/config APIs (local: generated)",
        )
        sp.add_argument(
            "--base-port",
            type=int,
            default=None,
            metavar="PORT",
            help="local fleet: first port, 3 per server (default: free ports)",
        )
        sp.add_argument(
            "--capacity-bytes",
            type=int,
            default=None,
            help="memory each server offers to models when NVML cannot tell (CPU mode)",
        )
        sp.add_argument(
            "--model-root",
            type=Path,
            default=None,
            help="local directory that model artifact paths must stay under",
        )
        sp.add_argument(
            "--keep-servers",
            action="store_true",
            help="local fleet: servers outlive this process; the next start adopts them",
        )
        sp.add_argument(
            "--no-autopilot",
            action="store_true",
            help="keep warm floors only; no load-driven replicas, admission or fleet size",
        )
        sp.add_argument("--slo-p95-ms", type=float, default=None, help="fleet-wide P95 target")
        sp.add_argument("--slo-p99-ms", type=float, default=None, help="fleet-wide P99 target")
        sp.add_argument(
            "--autopilot-stable-window-s",
            type=float,
            default=None,
            help="autopilot: demand averaged over this window (default 30, at most 120)",
        )
        sp.add_argument(
            "--autopilot-panic-window-s",
            type=float,
            default=None,
            help="autopilot: bursts judged over this window (default 5)",
        )
        sp.add_argument(
            "--server-idle-s",
            type=float,
            default=None,
            help="stop an empty highest-ordinal server after this long (elastic fleet)",
        )
        sp.add_argument(
            "--placement",
            "--placement-strategy",
            dest="placement_strategy",
            choices=[k.value for k in PlacementSetting],
            default=None,
            help="where new replicas go: pack (fill servers; lets an elastic fleet stop empty "
            "ones), spread (most free memory: less GPU sharing, parallel cold loads), auto "
            "(default: spread on a fixed-size fleet, pack on an elastic one)",
        )
        sp.add_argument(
            "--no-ui",
            action="store_true",
            help="do not serve the dashboard at /ui (its JSON and event routes stay)",
        )
        sp.add_argument(
            "--ui-stream-max-clients",
            type=int,
            default=None,
            metavar="N",
            help="dashboard: event streams (/v1/events) open at once (default 16)",
        )
        sp.add_argument(
            "--usage-flush-interval-s",
            type=float,
            default=None,
            help="chargeback: write accrued usage to SQLite this often (default 5)",
        )
        sp.add_argument(
            "--usage-retention-days",
            type=float,
            default=None,
            help="chargeback: prune per-minute usage older than this (default 400)",
        )
        sp.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")

    up = sub.add_parser("up", help="start a local fleet, the control API and the examples")
    fleet_opts(up)
    up.add_argument("--api-host", default=None, help="control API bind address (127.0.0.1)")
    up.add_argument("--api-port", type=int, default=None, help="control API port (8080)")
    up.add_argument("--no-examples", action="store_true", help="do not register the example models")
    up.add_argument("--no-gateway", action="store_true", help="do not start the gateway")
    _gateway_opts(up, "gateway-")
    up.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    cp = sub.add_parser(
        "controlplane",
        help="run the control plane against an existing fleet (static or kubernetes); "
        "no example models",
    )
    fleet_opts(cp)
    cp.add_argument(
        "--host", dest="api_host", default=None, help="control API bind address (127.0.0.1)"
    )
    cp.add_argument(
        "--port", dest="api_port", type=int, default=None, help="control API port (8080)"
    )
    cp.set_defaults(func=cmd_up, no_examples=True, ready_file=None, no_gateway=True)

    gw = sub.add_parser(
        "gateway", help="run the KServe v2 gateway apart, over a running control plane"
    )
    _gateway_opts(gw, "")
    gw.add_argument(
        "--controlplane-url",
        default=None,
        help="the control API to ask for replicas (env TRITONFLEET_CONTROLPLANE_URL)",
    )
    gw.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    gw.set_defaults(func=cmd_gateway)

    models = sub.add_parser("models", help="register and inspect models").add_subparsers(
        dest="models_command", required=True
    )
    for name, fn, arg in (
        ("register", cmd_models_register, "file"),
        ("update", cmd_models_update, "file"),
        ("show", cmd_models_show, "name"),
        ("rm", cmd_models_rm, "name"),
        ("ensure", cmd_models_ensure, "name"),
        ("list", cmd_models_list, None),
    ):
        sp = models.add_parser(name)
        if arg:
            sp.add_argument(arg)
        if name == "list":
            sp.add_argument("--json", action="store_true", help="print JSON")
        if name == "ensure":
            sp.add_argument(
                "--timeout", type=float, default=30.0, help="seconds to wait for READY (30)"
            )
        api_opts(sp)
        sp.set_defaults(func=fn)

    config = sub.add_parser("config", help="render configs").add_subparsers(
        dest="config_command", required=True
    )
    render = config.add_parser("render", help="print the config.pbtxt a spec renders to")
    render.add_argument("file")
    render.add_argument("--offline", action="store_true", help="render here, without the API")
    api_opts(render)
    render.set_defaults(func=cmd_config_render)

    fleet = sub.add_parser("fleet", help="fleet status").add_subparsers(
        dest="fleet_command", required=True
    )
    status = fleet.add_parser("status")
    status.add_argument("--json", action="store_true", help="print JSON")
    api_opts(status)
    status.set_defaults(func=cmd_fleet_status)

    explain = sub.add_parser("explain", help="why a model has the replicas it has")
    explain.add_argument("name")
    explain.add_argument("--last", type=int, default=20, help="rows to show (default 20)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    api_opts(explain)
    explain.set_defaults(func=cmd_explain)

    tenants = sub.add_parser(
        "tenants", help="tenants, their tokens and quotas (admin token)"
    ).add_subparsers(dest="tenants_command", required=True)

    def quota_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--quota-memory-bytes", type=int, default=None, help="replica memory, fleet-wide"
        )
        sp.add_argument("--quota-replicas", type=int, default=None, help="replicas, fleet-wide")
        sp.add_argument("--quota-models", type=int, default=None, help="registered models")
        sp.add_argument(
            "--quota-requests-per-s",
            type=float,
            default=None,
            help="gateway rate limit, requests per second (needs gateway auth)",
        )
        sp.add_argument(
            "--quota-burst", type=int, default=None, help="gateway rate limit burst (requests)"
        )

    for name, fn, help_text in (
        ("create", cmd_tenants_create, "create a tenant and print its token once"),
        ("list", cmd_tenants_list, "tenants, what they hold and their quotas"),
        ("revoke", cmd_tenants_revoke, "revoke a tenant's token (its models keep serving)"),
        ("rotate", cmd_tenants_rotate, "issue a new token (the old one stops working)"),
        ("quota", cmd_tenants_quota, "replace a tenant's quota (unset fields: unlimited)"),
    ):
        sp = tenants.add_parser(name, help=help_text)
        if name != "list":
            sp.add_argument("name", help="tenant name (a DNS label: a-z, 0-9, '-')")
        if name in ("create", "quota"):
            quota_opts(sp)
        if name == "list":
            sp.add_argument("--json", action="store_true", help="print JSON")
        api_opts(sp)
        sp.set_defaults(func=fn)

    usage = sub.add_parser("usage", help="chargeback: usage per tenant, tag or model")
    usage.add_argument(
        "--from",
        dest="from_",
        default=None,
        help="start: epoch seconds or ISO-8601, UTC unless it says (default: 24 h before --to)",
    )
    usage.add_argument("--to", default=None, help="end (default: now)")
    usage.add_argument(
        "--by", choices=["tenant", "tag", "model"], default="tenant", help="group rows by"
    )
    usage.add_argument(
        "--format", choices=["table", "json", "csv"], default="table", help="output format"
    )
    api_opts(usage)
    usage.set_defaults(func=cmd_usage)

    sim = sub.add_parser(
        "sim", help="simulate a fleet with tritonfleet's own policies (docs/simulator.md)"
    ).add_subparsers(dest="sim_command", required=True)
    simrun = sim.add_parser(
        "run", help="run a scenario; write report.json and PNG plots, progress on stderr"
    )
    simrun.add_argument("scenario", help="scenario YAML (fleet, models, workload, policies)")
    simrun.add_argument(
        "--out", default=None, help="output directory (default: SCENARIO-sim beside the file)"
    )
    simrun.add_argument(
        "--seed", type=int, default=None, help="override the scenario's seed (same seed: same run)"
    )
    simrun.add_argument("--quiet", action="store_true", help="no progress bar")
    simrun.set_defaults(func=cmd_sim_run)

    lg = sub.add_parser(
        "loadgen", help="load generator and SLO gate (see `loadgen --help`)", add_help=False
    )
    lg.add_argument("rest", nargs=argparse.REMAINDER)
    lg.set_defaults(func=cmd_loadgen)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadgen"]:
        # Everything after `loadgen` is loadgen's, `--help` included (argparse's REMAINDER
        # would refuse a leading option).
        argv = ["loadgen", "--", *argv[1:]]
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"tritonfleet: {exc}", file=sys.stderr)
        return exc.code
    except InvalidSpec as exc:
        print(f"tritonfleet: {exc.subject} is invalid:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p.field}: {p.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        print("tritonfleet: invalid model spec:", file=sys.stderr)
        for err in exc.errors():
            for field, message in field_errors(tuple(err["loc"]), str(err["msg"])):
                print(f"  {field}: {message}", file=sys.stderr)
        return EXIT_USAGE
    except FleetError as exc:
        print(f"tritonfleet: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except TritonfleetError as exc:
        print(f"tritonfleet: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
