"""GPU inventory through NVML (pynvml), when a driver is present.

Decides how many local servers to run (one per GPU or MIG device) and how much memory each
offers. Without NVML the caller runs in CPU mode with a configured capacity per server.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    mig_devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class MigDevice:
    uuid: str
    memory_total_bytes: int
    profile: str


def inventory() -> tuple[Gpu, ...] | None:
    """The GPUs NVML sees, or None when NVML is unavailable (no driver: CPU mode)."""
    try:
        with warnings.catch_warnings():
            # The `pynvml` shim warns that nvidia-ml-py is its new name; the API is the same.
            warnings.simplefilter("ignore", FutureWarning)
            import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("NVML unavailable (%s): running in CPU mode", exc)
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            migs: list[MigDevice] = []
            try:
                current, _ = pynvml.nvmlDeviceGetMigMode(h)
            except pynvml.NVMLError:
                current = 0
            if current:
                for j in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        m = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except pynvml.NVMLError:
                        continue
                    mem = pynvml.nvmlDeviceGetMemoryInfo(m).total
                    migs.append(
                        MigDevice(
                            uuid=_s(pynvml.nvmlDeviceGetUUID(m)),
                            memory_total_bytes=int(mem),
                            profile=f"{round(mem / 1024**3)}gb",
                        )
                    )
            gpus.append(
                Gpu(
                    index=i,
                    uuid=_s(pynvml.nvmlDeviceGetUUID(h)),
                    name=_s(pynvml.nvmlDeviceGetName(h)),
                    memory_total_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                    mig_devices=tuple(migs),
                )
            )
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
