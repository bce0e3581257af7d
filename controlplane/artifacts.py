"""Which artifact locations a registration may point at.

Accepted: `s3://bucket/prefix`, `gs://bucket/prefix`, and paths (plain or `file://`) that stay
under the configured local root after normalisation. Everything else (http URLs, `..` escapes,
other schemes) is refused at registration, naming the field. This check is lexical; the adapter
that reads local files checks the resolved path again, so a symlink cannot escape either.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from controlplane.errors import FieldProblem
from controlplane.spec import Artifact

_BUCKET_RE = re.compile(r"^(s3|gs)://[a-z0-9][a-z0-9._-]{1,62}(/[^\x00]*)?$")


@dataclass(frozen=True)
class ArtifactPolicy:
    local_root: PurePosixPath | None  # None: local paths are refused

    def check(self, artifact: Artifact | None) -> list[FieldProblem]:
        if artifact is None or artifact.uri is None:
            return []
        uri = artifact.uri
        if uri.startswith(("s3://", "gs://")):
            if not _BUCKET_RE.match(uri) or "/../" in uri + "/":
                return [
                    FieldProblem(
                        "artifact.uri", f"{uri!r} is not a valid bucket URI like s3://bucket/path"
                    )
                ]
            return []
        if "://" in uri and not uri.startswith("file://"):
            scheme = uri.split("://", 1)[0]
            return [
                FieldProblem(
                    "artifact.uri",
                    f"scheme {scheme!r} is not supported; use s3://, gs:// or a path under "
                    f"the local root ({self.local_root or 'not configured'})",
                )
            ]
        path = uri.removeprefix("file://")
        if self.local_root is None:
            return [
                FieldProblem(
                    "artifact.uri",
                    "local paths are disabled; start tritonfleet with --model-root DIR to allow "
                    "paths under DIR",
                )
            ]
        if "\x00" in path or "%" in path:
            return [FieldProblem("artifact.uri", "path must not contain NUL or '%'")]
        resolved = self.resolve(uri)
        if resolved is None:
            return [
                FieldProblem(
                    "artifact.uri",
                    f"{uri!r} is outside the local model root {self.local_root}; "
                    "give a path under it",
                )
            ]
        return []

    def resolve(self, uri: str) -> PurePosixPath | None:
        """The normalised local path of `uri`, or None when it leaves the root."""
        if self.local_root is None:
            return None
        path = uri.removeprefix("file://")
        root = PurePosixPath(posixpath.normpath(str(self.local_root)))
        joined = posixpath.normpath(posixpath.join(str(root), path))
        candidate = PurePosixPath(joined)
        if candidate == root or root not in candidate.parents:
            return None
        return candidate
