"""Memory of a local tritonserver and its children (the Python-backend stubs), from /proc.

Triton 2.51's Python backend on CPU reports `memory_usage: []`, so for local servers the
footprint of a model is measured as the growth of the server's process-tree RSS across its
load (loads on one server are serialised by the reconciler, so deltas do not mix).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from controlplane.fleet import Server


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return out


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def tree_rss_bytes(pid: int) -> int:
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += rss_bytes(p)
        stack += _children(p)
    return total


class ProcessTreeMeter:
    """`MemoryMeter` for servers this machine runs (they carry a pid)."""

    async def sample(self, server: Server) -> tuple[int, str] | None:
        if server.pid is None:
            return None
        rss = await asyncio.to_thread(tree_rss_bytes, server.pid)
        return (rss, "process-tree-rss-delta") if rss else None
