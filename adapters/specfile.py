"""Reading a spec file (YAML or JSON) the way the CLI and `up` do.

One convenience beyond the API's schema: `artifact: {dir: PATH}` (relative to the spec file)
is turned into inline `files` by reading the version directories under PATH, so a small Python
model can live beside its spec and be registered without a shared disk.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from controlplane.errors import FieldProblem, InvalidSpec

MAX_DIR_BYTES = 4 * 1024 * 1024


def load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidSpec(
            [FieldProblem(str(path), f"cannot read: {exc.strerror}")], subject="spec file"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidSpec(
            [FieldProblem(f"{path}:{where}", f"malformed YAML: {problem}")], subject="spec file"
        ) from exc
    if not isinstance(data, dict):
        raise InvalidSpec(
            [
                FieldProblem(
                    str(path), f"must hold one mapping (a model spec), not {type(data).__name__}"
                )
            ],
            subject="spec file",
        )
    artifact = data.get("artifact")
    if isinstance(artifact, dict) and "dir" in artifact:
        if set(artifact) != {"dir"}:
            raise InvalidSpec(
                [FieldProblem("artifact", "'dir' cannot be combined with 'uri' or 'files'")],
                subject="spec file",
            )
        data["artifact"] = {"files": read_dir(path.parent / str(artifact["dir"]))}
    return data


def read_dir(base: Path) -> dict[str, str]:
    """Version directories under `base` as inline files (text, or base64: for binary)."""
    if not base.is_dir():
        raise InvalidSpec(
            [FieldProblem("artifact.dir", f"{base} is not a directory")], subject="spec file"
        )
    files: dict[str, str] = {}
    total = 0
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base)
        if not p.is_file() or not rel.parts[0].isdigit() or "__pycache__" in rel.parts:
            continue
        data = p.read_bytes()
        total += len(data)
        if total > MAX_DIR_BYTES:
            raise InvalidSpec(
                [
                    FieldProblem(
                        "artifact.dir", f"more than {MAX_DIR_BYTES} bytes; use a repository uri"
                    )
                ],
                subject="spec file",
            )
        try:
            files[rel.as_posix()] = data.decode()
        except UnicodeDecodeError:
            files[rel.as_posix()] = "base64:" + base64.b64encode(data).decode()
    if not files:
        raise InvalidSpec(
            [FieldProblem("artifact.dir", f"{base} has no version directory (e.g. 1/model.py)")],
            subject="spec file",
        )
    return files
