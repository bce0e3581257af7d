"""Input tensors for a model, built once before the run from its metadata or from a file.

Shapes come from the model's metadata; a batching model's leading -1 is the batch
(`--batch-size`), any other -1 must be fixed with `--shape NAME:d1,d2`. Data is random (seeded)
for every numeric type, BOOL and BYTES, or read from a JSON file in perf_analyzer's
`{"data": [{"INPUT0": [...]}, ...]}` form (`{"content": [...], "shape": [...]}` per input also
works). Several distinct sets (`--unique-inputs`) are built so the server does not see one
payload over and over; the transports serialise each set exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadgen.errors import TargetError, UsageError

_NP = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # as the model states it; -1 for variable dimensions


@dataclass(frozen=True)
class ModelSignature:
    name: str
    version: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any], config: Mapping[str, Any], version: str = ""
    ) -> ModelSignature:
        """Build from KServe v2 metadata and Triton's model config (both as JSON dicts)."""

        def specs(key: str) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                for t in metadata.get(key, [])
            )

        cfg = config.get("config", config)  # gRPC's JSON wraps the config in "config"
        return cls(
            name=metadata["name"],
            version=version,
            max_batch_size=int(cfg.get("max_batch_size", 0) or 0),
            inputs=specs("inputs"),
            outputs=specs("outputs"),
        )


def parse_shapes(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """`--shape NAME:1,3,224` (repeatable) → {NAME: (1, 3, 224)}."""
    out: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, sep, dims = v.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise UsageError(
                "--shape", f"cannot read {v!r}; write NAME:d1,d2,... with positive dimensions"
            )
        out[name] = shape
    return out


def resolve_shape(
    spec: TensorSpec, max_batch_size: int, batch_size: int, overrides: Mapping[str, tuple[int, ...]]
) -> tuple[int, ...]:
    """The concrete shape sent for `spec`, batch dimension included when the model batches."""
    dims = spec.shape
    if max_batch_size > 0 and dims and dims[0] == -1:
        dims = dims[1:]  # metadata of a batching model includes the batch dimension
    if spec.name in overrides:
        given = overrides[spec.name]
        if len(given) != len(dims) or any(
            d not in (-1, g) for d, g in zip(dims, given, strict=True)
        ):
            raise UsageError(
                "--shape",
                f"{spec.name}: {list(given)} does not fit the model's shape {list(dims)} "
                "(give the dimensions without the batch dimension)",
            )
        dims = given
    if any(d < 0 for d in dims):
        raise UsageError(
            "--shape",
            f"input {spec.name} has a variable shape {list(dims)}; fix it with "
            f"--shape {spec.name}:{','.join('8' if d < 0 else str(d) for d in dims)}",
        )
    if max_batch_size > 0:
        if batch_size > max_batch_size:
            raise UsageError(
                "--batch-size",
                f"{batch_size} exceeds the model's max_batch_size {max_batch_size}",
            )
        return (batch_size, *dims)
    if batch_size != 1:
        raise UsageError("--batch-size", "the model does not batch (max_batch_size 0); use 1")
    return tuple(dims)


def random_tensor(
    datatype: str, shape: tuple[int, ...], rng: np.random.Generator, string_length: int = 16
) -> NDArray[Any]:
    """Random data of a Triton datatype; BYTES elements are ASCII strings."""
    if datatype not in _NP:
        raise UsageError(
            "--input-data",
            f"random data for datatype {datatype} is not supported; give the data in a file",
        )
    if datatype == "BYTES":
        letters = rng.integers(97, 123, size=(*shape, string_length), dtype=np.uint8)
        flat = letters.reshape(-1, string_length)
        arr = np.empty(flat.shape[0], dtype=np.object_)
        for i, row in enumerate(flat):
            arr[i] = row.tobytes()
        return arr.reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    dtype = np.dtype(_NP[datatype])
    if dtype.kind == "f":
        return rng.random(size=shape, dtype=np.float64).astype(dtype)
    return rng.integers(0, 100, size=shape).astype(dtype)


def build_sets(
    sig: ModelSignature,
    *,
    batch_size: int,
    shapes: Mapping[str, tuple[int, ...]],
    count: int,
    rng: np.random.Generator,
    string_length: int = 16,
    data_file: Path | None = None,
) -> list[dict[str, NDArray[Any]]]:
    """`count` input sets (or the file's sets), each mapping input name → array."""
    if data_file is not None:
        return _from_file(sig, data_file, batch_size, shapes)
    return [
        {
            s.name: random_tensor(
                s.datatype,
                resolve_shape(s, sig.max_batch_size, batch_size, shapes),
                rng,
                string_length,
            )
            for s in sig.inputs
        }
        for _ in range(count)
    ]


def _from_file(
    sig: ModelSignature,
    path: Path,
    batch_size: int,
    shapes: Mapping[str, tuple[int, ...]],
) -> list[dict[str, NDArray[Any]]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError("--input-data", f"cannot read {path} as JSON: {exc}") from exc
    entries = doc.get("data") if isinstance(doc, dict) and "data" in doc else doc
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise UsageError("--input-data", f"{path}: expected {{'data': [{{INPUT: [...]}}, ...]}}")
    out = []
    for i, entry in enumerate(entries):
        tensors = {}
        if not isinstance(entry, dict):
            raise UsageError("--input-data", f"{path}: data[{i}] must be an object of inputs")
        for s in sig.inputs:
            if s.name not in entry:
                raise UsageError("--input-data", f"{path}: data[{i}] lacks input {s.name}")
            value = entry[s.name]
            content = value.get("content") if isinstance(value, dict) else value
            if not isinstance(content, list):
                raise UsageError(
                    "--input-data",
                    f"{path}: data[{i}].{s.name} must be a list of values"
                    " or {'content': [...], 'shape': [...]}",
                )
            given = value.get("shape") if isinstance(value, dict) else None
            if given is not None and not (
                isinstance(given, list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in given)
            ):
                raise UsageError(
                    "--input-data",
                    f"{path}: data[{i}].{s.name}.shape must be a list of non-negative integers",
                )
            shape = (
                tuple(given)
                if given is not None
                else resolve_shape(s, 0, 1, {**shapes})
                if sig.max_batch_size == 0
                else resolve_shape(s, sig.max_batch_size, 1, shapes)[1:]
            )
            dtype = _NP.get(s.datatype)
            if dtype is None:
                raise UsageError("--input-data", f"{s.name}: datatype {s.datatype} unsupported")
            try:
                flat = (
                    np.array([str(v).encode() for v in content], dtype=np.object_)
                    if s.datatype == "BYTES"
                    else np.asarray(content, dtype=dtype)
                )
            except (TypeError, ValueError, OverflowError) as exc:
                raise UsageError(
                    "--input-data",
                    f"{path}: data[{i}].{s.name} holds values that are not {s.datatype}: {exc}",
                ) from exc
            try:
                arr = flat.reshape(shape)
            except ValueError as exc:
                raise UsageError(
                    "--input-data",
                    f"{path}: data[{i}].{s.name} has {flat.size} values, shape {list(shape)}",
                ) from exc
            if sig.max_batch_size > 0:
                arr = np.stack([arr] * batch_size)
            tensors[s.name] = arr
        out.append(tensors)
    return out


def require_model(sig_like: Mapping[str, Any] | None, model: str) -> Mapping[str, Any]:
    if not sig_like:
        raise TargetError(f"model {model!r}: the server returned no metadata")
    return sig_like
