"""Chargeback accuracy against a real `tritonfleet up` (real Triton, real SQLite, own process):
two replicas held READY for a measured time accrue replica-seconds within 2%, and what was
accrued survives a SIGKILL and a restart of the control plane (at most one flush interval and
one reconciler tick are lost)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from adapters.cli import main
from adapters.tritonbin import TritonInstall
from tests.integration.test_crash_safety import Up
from tests.support import python_spec, wait_until

pytestmark = pytest.mark.triton

HOLD_S = 10.0
FLUSH_S = 0.5
TICK_S = 0.25


def _replica_s(api: str) -> tuple[float, float]:
    """(replica-seconds of model `acct` so far, the wall time the control plane counted to:
    the midpoint of the request, since the API accrues up to the moment it answers)."""
    before = time.time()
    r = httpx.get(f"{api}/v1/usage", params={"by": "model", "from": before - 3600})
    after = time.time()
    assert r.status_code == 200, r.text
    rows = {row["model"]: row for row in r.json()["rows"]}
    return (rows["acct"]["replica_s"] if "acct" in rows else 0.0), (before + after) / 2


def _ready_replicas(api: str) -> int:
    status = httpx.get(f"{api}/v1/models/acct/status").json()
    return sum(1 for rep in status["replicas"] if rep["state"] == "READY")


def test_replica_seconds_within_2_percent_and_survive_sigkill(
    triton_install: TritonInstall,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRITONFLEET_RECONCILE_INTERVAL_S", str(TICK_S))
    data = tmp_path / "data"
    flags = ("--servers", "2", "--usage-flush-interval-s", str(FLUSH_S), "--no-autopilot")
    up = Up(data, tmp_path / "up.log", *flags)
    try:
        spec = python_spec("acct", min_replicas=2, max_replicas=2)
        assert httpx.post(f"{up.api}/v1/models", json=spec).status_code == 201
        wait_until(lambda: _ready_replicas(up.api) == 2, 90)
        u0, t0 = _replica_s(up.api)
        time.sleep(HOLD_S)  # the measured interval itself, not a synchronisation
        u1, t1 = _replica_s(up.api)
        assert _ready_replicas(up.api) == 2, "both replicas stayed READY throughout"
        expected = 2 * (t1 - t0)
        assert abs((u1 - u0) - expected) <= 0.02 * expected, (u1 - u0, expected)

        # Everything accrued up to t1 is flushed a few flush intervals and ticks later.
        time.sleep(4 * (FLUSH_S + TICK_S))
        u_kill, _ = _replica_s(up.api)
    finally:
        up.stop(signal.SIGKILL)

    again = Up(data, tmp_path / "up2.log", *flags)
    try:
        u_after, t_after = _replica_s(again.api)
        assert u_after >= u1, (u_after, u1)
        # Lost at most a flush interval and a tick of 2 replicas (plus request latency).
        assert u_after >= u_kill - 2 * (FLUSH_S + 2 * TICK_S) - 0.5, (u_after, u_kill)
        assert u_after <= u_kill + 2 * (t_after - t1) + 1, "nothing counted twice"
        # The CLI's table and its field-naming refusal, against this control plane.
        code = main(["usage", "--by", "model", "--api", again.api])
        out = capsys.readouterr()
        assert code == 0 and "REPLICA-H" in out.out and "acct" in out.out, out
        code = main(["usage", "--from", "last tuesday", "--api", again.api])
        out = capsys.readouterr()
        assert code == 2 and "from: must be seconds since the epoch" in out.err, out
    finally:
        again.stop()
