"""`tritonfleet models …` (register, update, list, show, rm, ensure) and `config render`: a
model spec file in, the control API's answer out."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from adapters.cli.core import CliError, api_opts, call, spec, table

if TYPE_CHECKING:
    from adapters.cli.core import Subparsers


def cmd_models_register(args: argparse.Namespace) -> int:
    r = call(args, "POST", "/v1/models", json=spec(args.file))
    body = r.json()
    print(f"registered {body['name']} (generation {body['generation']})")
    return 0


def cmd_models_update(args: argparse.Namespace) -> int:
    model = spec(args.file)
    r = call(args, "PUT", f"/v1/models/{model.get('name', '')}", json=model)
    body = r.json()
    print(f"updated {body['name']} (generation {body['generation']})")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    models = call(args, "GET", "/v1/models").json()["models"]
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
        table(rows, ["NAME", "BACKEND", "GEN", "MIN", "MAX", "TENANT", "TAGS"])
        if rows
        else "no models registered"
    )
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    model = call(args, "GET", f"/v1/models/{args.name}").json()
    status = call(args, "GET", f"/v1/models/{args.name}/status").json()
    print(json.dumps({"model": model, "status": status}, indent=2))
    return 0


def cmd_models_rm(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/v1/models/{args.name}")
    print(f"removed {args.name}")
    return 0


def cmd_models_ensure(args: argparse.Namespace) -> int:
    try:
        r = call(args, "POST", f"/v1/models/{args.name}/ensure", params={"timeout_s": args.timeout})
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    print(json.dumps(r.json(), indent=2))
    return 0


def cmd_config_render(args: argparse.Namespace) -> int:
    model = spec(args.file)
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
        print(registry.render(ModelSpec.model_validate(model)).pbtxt, end="")
        return 0
    print(call(args, "POST", "/v1/config/render", json=model).text, end="")
    return 0


def add_models(sub: Subparsers) -> None:
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


def add_config(sub: Subparsers) -> None:
    config = sub.add_parser("config", help="render configs").add_subparsers(
        dest="config_command", required=True
    )
    render = config.add_parser("render", help="print the config.pbtxt a spec renders to")
    render.add_argument("file")
    render.add_argument("--offline", action="store_true", help="render here, without the API")
    api_opts(render)
    render.set_defaults(func=cmd_config_render)
