"""Fixtures: the real tritonserver (found once per session) and a temporary data dir.

Integration tests start real Triton processes on free loopback ports; they are skipped only
when no tritonserver can be found at all, and `.ci/run` installs one, so in CI they run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.tritonbin import TritonInstall, check_python_stub, locate
from controlplane.errors import FleetError


@pytest.fixture(scope="session")
def triton_install(tmp_path_factory: pytest.TempPathFactory) -> TritonInstall:
    cache = Path(
        os.environ.get("TRITONFLEET_TEST_CACHE", str(Path.home() / ".cache" / "tritonfleet"))
    )
    try:
        check_python_stub()
        return locate(None, cache)
    except FleetError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no runnable tritonserver here: {exc}")
