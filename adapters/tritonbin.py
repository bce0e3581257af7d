"""Finding a runnable `tritonserver` and the command line tritonfleet starts it with.

Search order: an explicit path (`--tritonserver PATH`), then `tritonserver` on `PATH`, then the
CPU build inside the `nvidia-pytriton` wheel (`pip install 'tritonfleet[local]'`). The wheel's
layout needs two fix-ups before it runs: its Python-backend stub must sit in
`backends/python/`, and the wheel's bundled libraries must be on `LD_LIBRARY_PATH`. The stub
embeds the system's libpython3.11, so NumPy must be importable by the system's python3
(Debian: `apt-get install -y python3-numpy`). Every failure here is a `FleetError` whose message
says what to install or change.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.errors import FleetError

_STUB_PY = "3.11"
_INSTALL_HINT = (
    "install the local extra (`pip install 'tritonfleet[local]'`, which brings the "
    "nvidia-pytriton wheel), put `tritonserver` on PATH, or pass --tritonserver PATH"
)


@dataclass(frozen=True)
class TritonInstall:
    """A tritonserver binary and what it needs around it to run."""

    binary: Path
    backend_dir: Path | None
    ld_library_path: tuple[str, ...] = ()
    source: str = "explicit"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if self.ld_library_path:
            parts = [*self.ld_library_path]
            if env.get("LD_LIBRARY_PATH"):
                parts.append(env["LD_LIBRARY_PATH"])
            env["LD_LIBRARY_PATH"] = ":".join(parts)
        env.update(extra or {})
        return env


@dataclass(frozen=True)
class ServerArgs:
    """How one tritonserver process is started (ports on loopback by default)."""

    http_port: int
    grpc_port: int
    metrics_port: int
    model_repository: Path
    host: str = "127.0.0.1"
    admin_key: str | None = None
    admin_header: str = "admin-key"
    restricted_apis: tuple[str, ...] = (
        "model-repository",
        "model-config",
        "shared-memory",
        "logging",
        "trace",
    )
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self, install: TritonInstall) -> list[str]:
        argv = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            # In explicit mode one loading model would otherwise make the whole server unready.
            "--strict-readiness=false",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--metrics-config=summary_latencies=true",
            "--log-verbose=0",
        ]
        if install.backend_dir is not None:
            argv.append(f"--backend-directory={install.backend_dir}")
        if self.admin_key:
            apis = ",".join(self.restricted_apis)
            kv = f"{self.admin_header}={self.admin_key}"
            argv += [f"--http-restricted-api={apis}:{kv}", f"--grpc-restricted-protocol={apis}:{kv}"]
        argv += list(self.extra)
        return argv


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").exists() else None


def _prepare_pytriton(root: Path, cache_dir: Path) -> TritonInstall:
    """Copy the wheel's server once into `cache_dir`, with the stub where the backend finds it."""
    libs = root.parent.parent / "nvidia_pytriton.libs"
    target = cache_dir / "tritonserver-pytriton"
    stub_src = root / "python_backend_stubs" / _STUB_PY / "triton_python_backend_stub"
    if not stub_src.exists():
        raise FleetError(
            f"the nvidia-pytriton wheel at {root} has no Python {_STUB_PY} backend stub; "
            "reinstall it with `pip install --force-reinstall nvidia-pytriton==0.7.0`"
        )
    if not (target / "backends" / "python" / "triton_python_backend_stub").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tritonserver-", dir=cache_dir))
        shutil.copytree(root, staging / "t", symlinks=True)
        shutil.copy2(stub_src, staging / "t" / "backends" / "python" / "triton_python_backend_stub")
        try:
            (staging / "t").rename(target)
        except OSError:
            pass  # another process prepared it first; theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return TritonInstall(
        binary=target / "bin" / "tritonserver",
        backend_dir=target / "backends",
        ld_library_path=(str(libs),) if libs.exists() else (),
        source="nvidia-pytriton wheel",
    )


def locate(explicit: str | None, cache_dir: Path) -> TritonInstall:
    """Find tritonserver (explicit path, PATH, then the pytriton wheel) or say what to do."""
    if explicit:
        path = Path(explicit)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise FleetError(f"--tritonserver {explicit}: no executable file there; {_INSTALL_HINT}")
        return TritonInstall(binary=path, backend_dir=None, source="explicit")
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(binary=Path(on_path), backend_dir=None, source="PATH")
    root = _pytriton_root()
    if root is None:
        raise FleetError(f"no tritonserver binary found; {_INSTALL_HINT}")
    return _prepare_pytriton(root, cache_dir)


def check_python_stub(python: Sequence[str] = ("/usr/bin/python3",)) -> None:
    """The Python backend's stub uses the system python3; it must import numpy."""
    try:
        proc = subprocess.run(
            [*python, "-c", "import numpy"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(
            f"the Triton Python backend needs the system python3 ({python[0]}) with NumPy: "
            "on Debian/Ubuntu run `apt-get install -y python3 python3-numpy`"
        ) from exc
    if proc.returncode != 0:
        raise FleetError(
            f"the Triton Python backend stub cannot import numpy with {python[0]} "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}); "
            "on Debian/Ubuntu run `apt-get install -y python3-numpy`"
        )
