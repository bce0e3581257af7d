"""The engine against closed-form queueing results: one server, one model, no batching.

M/M/1 (exponential service) and M/D/1 (deterministic service) at utilisation 0.5: the mean wait
in queue (sojourn minus the mean service time) must be within 5% of Pollaczek-Khinchine. The
runs are long enough (about 150,000 requests each) that the sampling error is about 1%; seeds
are fixed, so the check is deterministic.
"""

from __future__ import annotations

import pytest

from controlplane.sim import Scenario, simulate

MU = 1000.0  # services per second
LAMBDA = 500.0  # arrivals per second
DURATION_S = 300.0


def _scenario(service: str) -> Scenario:
    return Scenario.model_validate(
        {
            "seed": 11,
            "duration_s": DURATION_S,
            "fleet": {"servers": 1, "memory_mib": 1024, "warm_start": True},
            "models": [
                {
                    "name": "q",
                    "memory_mib": 512,
                    "load_s": 0.0,
                    "service_a_s": 1 / MU,
                    "service_b_s": 0.0,
                    "service": service,
                    "max_batch_size": 0,
                    "min_replicas": 1,
                }
            ],
            "workload": {"kind": "poisson", "rate_rps": LAMBDA},
            "policies": {"autoscale": "static"},
        }
    )


@pytest.mark.parametrize(
    ("service", "expected_wait_s"),
    [
        # M/M/1: Wq = rho / (mu - lambda)
        ("exponential", (LAMBDA / MU) / (MU - LAMBDA)),
        # M/D/1: Wq = rho / (2 mu (1 - rho))
        ("deterministic", (LAMBDA / MU) / (2 * MU * (1 - LAMBDA / MU))),
    ],
)
def test_mean_wait_matches_closed_form(service: str, expected_wait_s: float) -> None:
    report = simulate(_scenario(service))
    assert report["requests"]["completed"] == report["requests"]["arrived"] > 100_000
    assert report["cold_holds"] == 0
    wait_s = report["latency_ms"]["mean"] / 1000 - 1 / MU
    assert wait_s == pytest.approx(expected_wait_s, rel=0.05)
