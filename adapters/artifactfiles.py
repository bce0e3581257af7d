"""Reading a model's files for a load: inline files, or a directory under the local root.

Local paths were checked lexically at registration; here the resolved path (symlinks followed)
is checked again so a link cannot lead outside the root. Bucket URIs (s3://, gs://) carry no
files: the servers must have that bucket as a model repository and load the model by name.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from controlplane.artifacts import ArtifactPolicy
from controlplane.errors import ModelLoadFailed
from controlplane.spec import decode_file
from controlplane.store import ModelRecord

MAX_LOCAL_BYTES = 512 * 1024 * 1024


class LocalArtifactFiles:
    def __init__(self, policy: ArtifactPolicy) -> None:
        self._policy = policy

    async def files(self, record: ModelRecord) -> dict[str, bytes]:
        artifact = record.spec.artifact
        if artifact is None:
            return {}
        if artifact.files is not None:
            return {path: decode_file(content) for path, content in artifact.files.items()}
        assert artifact.uri is not None
        if artifact.uri.startswith(("s3://", "gs://")):
            return {}
        return await asyncio.to_thread(self._read_dir, record.name, artifact.uri)

    def _read_dir(self, model: str, uri: str) -> dict[str, bytes]:
        lexical = self._policy.resolve(uri)
        root = self._policy.local_root
        if lexical is None or root is None:
            raise ModelLoadFailed(model, "-", f"artifact {uri!r} is outside the local root")
        base = Path(str(lexical)).resolve()
        real_root = Path(str(root)).resolve()
        if real_root not in base.parents:
            raise ModelLoadFailed(model, "-", f"artifact {uri!r} resolves outside {real_root}")
        if not base.is_dir():
            raise ModelLoadFailed(model, "-", f"artifact directory {base} does not exist")
        out: dict[str, bytes] = {}
        total = 0
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.name == "config.pbtxt":
                continue
            real = path.resolve()
            if base not in real.parents:
                raise ModelLoadFailed(model, "-", f"{path} links outside the artifact directory")
            data = real.read_bytes()
            total += len(data)
            if total > MAX_LOCAL_BYTES:
                raise ModelLoadFailed(
                    model, "-", f"artifact {base} exceeds {MAX_LOCAL_BYTES} bytes; use a bucket"
                )
            out[path.relative_to(base).as_posix()] = data
        return out
