"""Every server of a real local fleet SIGKILLed at once, under gateway traffic (see
tests/integration/fleet_restart.py). Real Triton, real processes, loopback ports; the figures
at a larger size come from `python -m benchmarks.fleet_restart`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.tritonbin import TritonInstall
from tests.integration.fleet_restart import run_fleet_restart

pytestmark = pytest.mark.triton


def test_fleet_wide_restart_recovers_floors_within_caps_and_answers_clearly(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    r = asyncio.run(run_fleet_restart(tmp_path, servers=2, floors=3, clients=4, cold_hold_s=2.0))
    assert r.peak_loads <= r.max_concurrent_loads
    assert r.peak_loads_per_server <= r.max_loads_per_server
    assert r.loads_after_kill >= r.floors  # every floor was loaded again
    assert r.after_recovery == {200: r.floors}
    # Meanwhile every client got an answer: served, or a 503 that says when to retry.
    assert r.transport_errors == [] and r.unexpected == []
    assert sum(r.answers.values()) > 0
    assert "missing" not in r.retry_after
    # A cold request is held up to the limit, not for ever (a bound far above noise).
    assert r.longest_cold_hold_s < r.cold_hold_s + 15
