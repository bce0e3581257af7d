"""Capacity from Triton's counters: per-interval samples and the a + b x batch fit."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.promtext import samples
from controlplane import tritonmetrics
from controlplane.tritonmetrics import ExecSample, ModelTotals

METRICS = """# HELP nv_inference_count Number of inferences performed
nv_inference_count{model="m",version="1"} 400
nv_inference_count{model="other",version="1"} 7
nv_inference_exec_count{model="m",version="1"} 100
nv_inference_compute_infer_duration_us{model="m",version="1"} 1900000
nv_inference_queue_duration_us{model="m",version="1"} 5000
nv_inference_count{model="m",version="2"} 100
nv_cpu_utilization 0.5
"""


def test_model_totals_sum_versions_and_ignore_the_rest() -> None:
    t = tritonmetrics.model_totals(samples(METRICS))
    assert t["m"] == ModelTotals(
        inferences=500, executions=100, compute_us=1_900_000, queue_us=5000
    )
    assert t["other"].inferences == 7
    assert (
        tritonmetrics.model_totals(
            samples('nv_inference_count{model="x" 1\ngarbage{model="y"} z\n')
        )
        == {}
    )


def test_capacity_from_busy_time() -> None:
    prev, cur = ModelTotals(0, 0, 0, 0), ModelTotals(400, 100, 1_900_000, 0)
    assert tritonmetrics.capacity_rps(prev, cur, instances=1) == pytest.approx(400 / 1.9)
    assert tritonmetrics.capacity_rps(prev, cur, instances=2) == pytest.approx(800 / 1.9)
    assert tritonmetrics.capacity_rps(prev, ModelTotals(5, 5, 100, 0), instances=1) is None


def test_fit_recovers_a_and_b_and_extrapolates_to_full_batches() -> None:
    rng = random.Random(3)
    samples = []
    for _ in range(30):
        batch = rng.uniform(1, 3)
        samples.append(ExecSample(batch, (0.015 + 0.001 * batch) * rng.uniform(0.97, 1.03), 50))
    fit = tritonmetrics.fit_service_time(samples)
    assert fit is not None
    a, b = fit
    assert a == pytest.approx(0.015, rel=0.1) and b == pytest.approx(0.001, rel=0.5)
    # 15 ms + 1 ms x 4 per batch of 4: ~210 inferences a second
    assert tritonmetrics.capacity_at(a, b, 4, 1) == pytest.approx(4 / 0.019, rel=0.05)


def test_no_fit_without_spread_or_when_unphysical() -> None:
    same = [ExecSample(2.0, 0.017, 10) for _ in range(10)]
    assert tritonmetrics.fit_service_time(same) is None
    falling = [ExecSample(b, 0.05 - 0.01 * b, 10) for b in (1.0, 2.0, 3.0, 4.0)]
    assert tritonmetrics.fit_service_time(falling) is None  # b < 0
    assert tritonmetrics.fit_service_time(same[:2]) is None


@given(st.text(max_size=2000))
def test_any_metrics_text_parses_without_raising(text: str) -> None:
    for totals in tritonmetrics.model_totals(samples(text)).values():
        assert isinstance(totals.inferences, float)


def test_a_small_spread_of_batch_sizes_still_extrapolates_within_a_quarter() -> None:
    # What a step from light load gives: mean batches between 1.0 and 1.4, 3% timing noise.
    for seed in range(20):
        rng = random.Random(seed)
        samples = []
        for _ in range(40):
            batch = rng.uniform(1.0, 1.4)
            samples.append(ExecSample(batch, (0.015 + 0.001 * batch) * rng.uniform(0.97, 1.03), 20))
        fit = tritonmetrics.fit_service_time(samples)
        if fit is None:
            continue  # an unphysical fit is refused, never used
        assert tritonmetrics.capacity_at(*fit, 4, 1) == pytest.approx(4 / 0.019, rel=0.25), seed


def test_lines_with_a_timestamp_are_read_right() -> None:
    text = (
        'nv_inference_count{model="m",version="1"} 40 1700000000000\n'
        "nv_inference_pending_request_count 3 1700000000000\n"
    )
    assert tritonmetrics.model_totals(samples(text))["m"].inferences == 40
    assert tritonmetrics.totals(samples(text)).pending == 3
