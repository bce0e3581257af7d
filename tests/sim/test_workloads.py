"""Workload generators: rates, skew, burstiness, the diurnal swing, steps; the trace format."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.errors import InvalidSpec
from controlplane.sim import workloads
from controlplane.sim.scenario import WorkloadSpec


def _arrivals(duration_s: float, **spec: object) -> list[workloads.Arrival]:
    ws = WorkloadSpec.model_validate(spec)
    return list(workloads.synthetic(ws, [1.0, 1.0, 2.0], duration_s, random.Random(5)))


def _per_second(arr: list[workloads.Arrival], duration_s: int) -> list[int]:
    counts = [0] * duration_s
    for t, _, _ in arr:
        counts[int(t)] += 1
    return counts


def test_poisson_rate_weights_and_tenants() -> None:
    arr = _arrivals(2000, rate_rps=50, tenants=4)
    assert len(arr) == pytest.approx(100_000, rel=0.02)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(arr))
    share = sum(1 for _, m, _ in arr if m == 2) / len(arr)
    assert share == pytest.approx(0.5, abs=0.01)
    assert {tenant for _, _, tenant in arr} == {0, 1, 2, 3}
    counts = _per_second(arr, 2000)
    assert statistics.variance(counts) / statistics.mean(counts) == pytest.approx(1.0, abs=0.1)


def test_mmpp_keeps_the_mean_and_is_bursty() -> None:
    arr = _arrivals(4000, kind="mmpp", rate_rps=50, burst_factor=5, burst_mean_s=10, calm_mean_s=40)
    assert len(arr) == pytest.approx(200_000, rel=0.15)
    counts = _per_second(arr, 4000)
    assert statistics.variance(counts) / statistics.mean(counts) > 5  # Poisson would be 1


def test_diurnal_swings_and_steps_multiply() -> None:
    arr = _arrivals(1000, kind="diurnal", rate_rps=40, period_s=1000, amplitude=0.8)
    counts = _per_second(arr, 1000)
    peak, trough = sum(counts[200:300]), sum(counts[700:800])
    assert peak > 4 * trough
    stepped = _per_second(_arrivals(400, rate_rps=20, steps=[{"at_s": 200, "factor": 3}]), 400)
    assert sum(stepped[200:]) / sum(stepped[:200]) == pytest.approx(3.0, rel=0.1)


def test_azure_skew_matches_the_trace_characterisation() -> None:
    rates = workloads.azure_rates(10_000, 600.0, random.Random(1))
    assert len(rates) == 10_000
    rare = sum(1 for r in rates if r <= 1 / 3600) / len(rates)
    assert rare == pytest.approx(0.45, abs=0.01)
    top = sorted(rates, reverse=True)[:1900]
    assert sum(top) / sum(rates) == pytest.approx(0.996, abs=0.002)
    assert sum(rates) == pytest.approx(600.0, rel=0.01)


def test_trace_replays_with_header_comments_and_tenants() -> None:
    lines = ["timestamp_s,model,tenant", "# comment", "", "0.5,a,x", "1.0,b", "1.0,a,y", "2,a,x"]
    out = list(workloads.parse_trace(lines, {"a": 0, "b": 1}))
    assert out == [(0.5, 0, 0), (1.0, 1, 0), (1.0, 0, 1), (2.0, 0, 0)]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("x,a", "not a number"),
        ("nan,a", "finite"),
        ("-1,a", "finite"),
        ("1,zzz", "not in the scenario"),
        ("1,a,b,c", "fields"),
        ("0.5,a", "back in time"),
    ],
)
def test_trace_errors_name_the_line(line: str, needle: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        list(workloads.parse_trace(["1,a", line], {"a": 0}))
    problem = exc.value.problems[0]
    assert problem.field == "line 2" and needle in problem.message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=20))
def test_any_text_replays_or_is_refused_clearly(lines: list[str]) -> None:
    try:
        out = list(workloads.parse_trace(lines, {"a": 0, "b": 1}))
    except InvalidSpec as exc:
        assert exc.problems and exc.problems[0].field.startswith("line ")
        return
    assert all(t >= 0 and m in (0, 1) for t, m, _ in out)


def test_timer_models_fire_periodically_and_keep_their_rates() -> None:
    ws = WorkloadSpec.model_validate({"rate_rps": 10, "timer_share": 0.5})
    arr = list(workloads.synthetic(ws, [1.0, 1.0, 1.0, 1.0], 2000, random.Random(3)))
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(arr))
    assert len(arr) == pytest.approx(20_000, rel=0.03)
    cvs = []
    for m in range(4):
        times = [t for t, mm, _ in arr if mm == m]
        assert len(times) == pytest.approx(5_000, rel=0.05)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        cvs.append(statistics.stdev(gaps) / statistics.mean(gaps))
    # two timers (gaps within 2%), two Poisson streams (coefficient of variation ~1)
    assert sorted(round(cv, 1) for cv in cvs)[:2] == [0.0, 0.0]
    assert min(sorted(cvs)[2:]) > 0.9
