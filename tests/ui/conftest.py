"""A real headless Chromium (Debian's `chromium`, which scripts/setup installs) driven by
Playwright for Python; no browser is downloaded. Outside CI a missing browser skips the
browser tests; under CI (`CI` set) it fails them, as a missing tritonserver does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("TRITONFLEET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI runs the browser tests; scripts/setup installs both)")
    pytest.skip(why)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Per test: Playwright's sync API runs an event loop in this thread while it is open,
    which would break every later test that calls asyncio.run()."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _missing(f"playwright is not installed ({exc}); pip install -e '.[dev]'")
        raise  # unreachable: _missing fails or skips
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM}; apt-get install chromium (or TRITONFLEET_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
