"""Triton's own acceptance rules, applied to a rendered config before any server sees it.

The rendered `config.pbtxt` is parsed into Triton's `ModelConfig` protobuf by the schema adapter
(`adapters.tritonschema`) and handed here as the protobuf's dict form (proto field names). These
checks mirror what Triton's `ValidateModelConfig` refuses at load time, so a bad config is
rejected at registration with the config field that is wrong, not later on a server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from controlplane.errors import FieldProblem

Config = Mapping[str, Any]


def _int(v: Any) -> int:
    return int(v)  # proto3 JSON renders int64 as strings


def _dims_problems(path: str, dims: list[Any]) -> list[FieldProblem]:
    if not dims:
        return [FieldProblem(f"{path}.dims", "rank 0: give at least one dimension")]
    bad = [d for d in map(_int, dims) if d == 0 or d < -1]
    return (
        [FieldProblem(f"{path}.dims", f"{bad}: each dimension must be >= 1 or -1")] if bad else []
    )


def _tensor_problems(kind: str, tensors: list[Config]) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    seen: set[str] = set()
    for i, t in enumerate(tensors):
        path = f"{kind}[{i}]"
        name = t.get("name", "")
        if not name:
            out.append(FieldProblem(f"{path}.name", "must not be empty"))
        elif name in seen:
            out.append(FieldProblem(f"{path}.name", f"duplicate tensor name {name!r}"))
        seen.add(name)
        if t.get("data_type", "TYPE_INVALID") == "TYPE_INVALID":
            out.append(FieldProblem(f"{path}.data_type", "must be set (e.g. TYPE_FP32)"))
        dims = list(t.get("dims", []))
        out += _dims_problems(path, dims)
        reshape = t.get("reshape")
        if reshape is not None and dims:
            shape = [_int(d) for d in reshape.get("shape", [])]
            concrete = [_int(d) for d in dims]
            fixed = shape and -1 not in concrete and -1 not in shape
            if fixed and math.prod(concrete) != math.prod(shape):
                out.append(
                    FieldProblem(
                        f"{path}.reshape",
                        f"has {math.prod(shape)} elements but dims has {math.prod(concrete)}",
                    )
                )
    return out


def _batch_size_problems(path: str, sizes: list[Any], mbs: int) -> list[FieldProblem]:
    return [
        FieldProblem(path, f"{s} must be in [1, max_batch_size={mbs}]")
        for s in map(_int, sizes)
        if s <= 0 or (mbs and s > mbs)
    ]


def _dynamic_problems(cfg: Config, mbs: int) -> list[FieldProblem]:
    db = cfg.get("dynamic_batching")
    if db is None:
        return []
    out: list[FieldProblem] = []
    if mbs == 0:
        out.append(
            FieldProblem(
                "dynamic_batching",
                "a model with max_batch_size 0 cannot batch; set max_batch_size > 0 or remove it",
            )
        )
    out += _batch_size_problems(
        "dynamic_batching.preferred_batch_size", db.get("preferred_batch_size", []), mbs
    )
    levels = _int(db.get("priority_levels", 0))
    default = _int(db.get("default_priority_level", 0))
    if levels and not 1 <= default <= levels:
        out.append(
            FieldProblem(
                "dynamic_batching.default_priority_level",
                f"{default} must be in [1, priority_levels={levels}]",
            )
        )
    if not levels and default:
        out.append(
            FieldProblem("dynamic_batching.default_priority_level", "needs priority_levels > 0")
        )
    for key in db.get("priority_queue_policy") or {}:
        if not 1 <= _int(key) <= levels:
            out.append(
                FieldProblem(
                    f"dynamic_batching.priority_queue_policy[{key}]",
                    f"level {key} is outside [1, priority_levels={levels}]",
                )
            )
    return out


def _sequence_problems(cfg: Config, mbs: int) -> list[FieldProblem]:
    sb = cfg.get("sequence_batching")
    if sb is None:
        return []
    out: list[FieldProblem] = []
    oldest = sb.get("oldest")
    if oldest is not None:
        out += _batch_size_problems(
            "sequence_batching.oldest.preferred_batch_size",
            oldest.get("preferred_batch_size", []),
            mbs,
        )
    names = [c.get("name", "") for c in sb.get("control_input", [])]
    if len(set(names)) != len(names):
        out.append(
            FieldProblem("sequence_batching.control_input", "duplicate control tensor names")
        )
    return out


def _instance_problems(cfg: Config) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    for i, g in enumerate(cfg.get("instance_group", [])):
        if _int(g.get("count", 1)) < 1:
            out.append(FieldProblem(f"instance_group[{i}].count", "must be >= 1"))
        if g.get("kind") == "KIND_CPU" and g.get("gpus"):
            out.append(FieldProblem(f"instance_group[{i}].gpus", "not allowed for KIND_CPU"))
    if cfg.get("platform") == "ensemble" and cfg.get("instance_group"):
        out.append(FieldProblem("instance_group", "an ensemble has no instances of its own"))
    return out


def _warmup_problems(cfg: Config, mbs: int) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    inputs = {t.get("name") for t in cfg.get("input", [])}
    for i, w in enumerate(cfg.get("model_warmup", [])):
        bs = _int(w.get("batch_size", 0))
        if (mbs == 0 and bs > 1) or (mbs and not 1 <= bs <= mbs):
            out.append(
                FieldProblem(
                    f"model_warmup[{i}].batch_size", f"{bs} must be in [1, max(1, max_batch_size)]"
                )
            )
        for name in w.get("inputs", {}):
            if name not in inputs:
                out.append(FieldProblem(f"model_warmup[{i}].inputs", f"unknown input {name!r}"))
    return out


def _ensemble_problems(cfg: Config) -> list[FieldProblem]:
    if cfg.get("platform") != "ensemble":
        return []
    steps = (cfg.get("ensemble_scheduling") or {}).get("step", [])
    if not steps:
        return [FieldProblem("ensemble_scheduling.step", "an ensemble needs at least one step")]
    out: list[FieldProblem] = []
    produced = {t.get("name") for t in cfg.get("input", [])}
    for st in steps:
        produced |= set((st.get("output_map") or {}).values())
    for i, st in enumerate(steps):
        for tensor in (st.get("input_map") or {}).values():
            if tensor not in produced:
                out.append(
                    FieldProblem(
                        f"ensemble_scheduling.step[{i}].input_map",
                        f"tensor {tensor!r} is neither an ensemble input nor any step's output",
                    )
                )
    for t in cfg.get("output", []):
        if t.get("name") not in produced:
            out.append(
                FieldProblem("output", f"ensemble output {t.get('name')!r} is produced by no step")
            )
    return out


def check(cfg: Config) -> list[FieldProblem]:
    """Every reason Triton would refuse `cfg`, as config-field problems (empty when fine)."""
    problems: list[FieldProblem] = []
    if not cfg.get("name"):
        problems.append(FieldProblem("name", "must not be empty"))
    if not cfg.get("platform") and not cfg.get("backend"):
        problems.append(FieldProblem("backend", "set a backend or a platform"))
    mbs = _int(cfg.get("max_batch_size", 0))
    if mbs < 0:
        problems.append(FieldProblem("max_batch_size", "must be >= 0"))
    if not cfg.get("input") and cfg.get("platform") != "ensemble":
        problems.append(FieldProblem("input", "declare at least one input"))
    if not cfg.get("output"):
        problems.append(FieldProblem("output", "declare at least one output"))
    problems += _tensor_problems("input", list(cfg.get("input", [])))
    problems += _tensor_problems("output", list(cfg.get("output", [])))
    problems += _dynamic_problems(cfg, mbs)
    problems += _sequence_problems(cfg, mbs)
    problems += _instance_problems(cfg)
    problems += _warmup_problems(cfg, mbs)
    problems += _ensemble_problems(cfg)
    return problems
