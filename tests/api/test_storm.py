"""Storms of concurrent register/update/delete/ensure calls through the real control API
(uvicorn, SQLite, registry, reconciler loop; the fleet is the instrumented in-memory FakeFleet,
an emulation, see tests/api/storm.py for every check). The suite runs 400 calls per storm;
`python -m benchmarks.api_storm` runs 1,000 and more.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.api.storm import run_storm


@pytest.mark.parametrize(("models", "clients"), [(1, 40), (50, 40)], ids=["one-model", "50-models"])
def test_storm_ends_in_the_last_acknowledged_state(
    tmp_path: Path, models: int, clients: int
) -> None:
    report = asyncio.run(run_storm(tmp_path, ops=400, models=models, clients=clients, seed=1))
    assert report.errors == []
    assert report.ops == 400
    acked = sum(len(a) for a in report.acks.values())
    assert acked > 40, report.by_status  # the storm changed things, it was not all 404/409
    assert report.control["load_calls"] > 0
