"""How a long-running command runs: its event loop (uvloop when importable), its logging, and a
heap frozen after start-up."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run an entry point on uvloop when it is importable (the loop the gateway is tuned for)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def freeze_heap() -> None:
    """What start-up allocated lives as long as the process: keep it out of every GC pass."""
    gc.collect()
    gc.freeze()


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
