"""Fetch perf_analyzer 2.51 once into a cache dir and say how to run it.

perf_analyzer ships inside the `tritonclient==2.51.0` manylinux wheel; it needs `libb64`
(Debian `libb64-0d`) and `libcudart.so.12`, which the nvidia-pytriton wheel's bundled libs
provide. Idempotent: a second call finds the cached binary.

    python -m benchmarks.perf_analyzer   # prints the binary's path
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = (
    Path(os.environ.get("TRITONFLEET_CACHE", Path.home() / ".cache/tritonfleet")) / "perf_analyzer"
)
_CUDART = "libcudart-09529672.so.12.6.77"


def _pytriton_libs() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"


def locate() -> tuple[Path, dict[str, str]]:
    """(binary, environment) for perf_analyzer, downloading the wheel on first use."""
    binary = CACHE / "bin" / "perf_analyzer"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        wheels = glob.glob(str(CACHE / "tritonclient-2.51.0-*manylinux*x86_64.whl"))
        if not wheels:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--platform", "manylinux1_x86_64", "--platform", "manylinux2014_x86_64",
                 "-d", str(CACHE), "tritonclient==2.51.0"],
                check=True,
            )  # fmt: skip
            wheels = glob.glob(str(CACHE / "tritonclient-2.51.0-*x86_64.whl"))
        with zipfile.ZipFile(wheels[0]) as zf:
            name = next(n for n in zf.namelist() if n.endswith("/bin/perf_analyzer"))
            (CACHE / "bin").mkdir(exist_ok=True)
            tmp = binary.with_suffix(".tmp")
            tmp.write_bytes(zf.read(name))
            tmp.chmod(0o755)
            tmp.rename(binary)
    libs = _pytriton_libs()
    link = CACHE / "lib" / "libcudart.so.12"
    if not link.exists():
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(libs / _CUDART)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (str(link.parent), str(libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return binary, env


if __name__ == "__main__":
    b, e = locate()
    print(b)
    print("LD_LIBRARY_PATH=" + e["LD_LIBRARY_PATH"])
