"""SLO parsing and judgement, and the sweep search, without any server."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen import slo
from loadgen.errors import UsageError
from loadgen.sweep import SweepSearch


def test_parse_the_documented_example() -> None:
    objs = slo.parse("p95=100ms,p99=200ms,errors<0.1%")
    assert [(o.stat, o.limit) for o in objs] == [
        ("p95", 100_000),
        ("p99", 200_000),
        ("errors", 0.001),
    ]
    assert objs[0].quantile == 0.95 and objs[2].kind is slo.Kind.ERRORS


def test_parse_variants() -> None:
    objs = slo.parse(" p99.9 <= 1.5s , max<2s, mean=500us, errors<=0.02 ")
    assert [(o.stat, o.limit) for o in objs] == [
        ("p99.9", 1_500_000),
        ("max", 2_000_000),
        ("mean", 500),
        ("errors", 0.02),
    ]
    assert objs[0].quantile == pytest.approx(0.999)
    assert objs[3].inclusive


@pytest.mark.parametrize(
    "text",
    ["", "p95", "p95=100", "p95=fast", "p100=1s", "p0=1s", "errors<200%", "p95=1s,p95=2s", "q=1s"],
)
def test_bad_slo_strings_name_the_flag(text: str) -> None:
    with pytest.raises(UsageError, match="--slo"):
        slo.parse(text)


def _window(p95: float, p99: float, requests: int = 1000, errors: int = 0) -> slo.Window:
    return slo.Window({0.95: p95, 0.99: p99}, mean_us=p95 / 2, requests=requests, errors=errors)


def test_evaluate_each_objective() -> None:
    objs = slo.parse("p95=100ms,p99=200ms,errors<0.1%")
    held = slo.evaluate(objs, _window(90_000, 199_000))
    assert all(v.held for v in held)
    missed = slo.evaluate(objs, _window(90_000, 250_000, errors=1))
    assert [v.held for v in missed] == [True, False, False]  # 0.1 % is not < 0.1 %
    empty = slo.evaluate(objs, _window(math.nan, math.nan, requests=0))
    assert not any(v.held for v in empty)


@given(
    st.floats(10, 10_000),
    st.floats(1.01, 50),
    st.floats(0.01, 0.2),
)
def test_sweep_converges_on_the_true_capacity(
    capacity: float, start: float, precision: float
) -> None:
    search = SweepSearch(start_rps=start, max_rps=1e6, precision=precision, max_steps=60)
    while (rate := search.next_rate()) is not None:
        search.observe(rate, rate <= capacity)
    if start > capacity:
        # the search walks down until something passes (or gives up at start/64)
        assert search.best_rps is None or search.best_rps <= capacity
        return
    assert search.best_rps is not None
    assert search.best_rps <= capacity
    assert search.failed_rps is not None
    assert (search.failed_rps - search.best_rps) / search.best_rps <= precision


def test_sweep_stops_at_the_ceiling() -> None:
    search = SweepSearch(start_rps=100, max_rps=300)
    rates = []
    while (rate := search.next_rate()) is not None:
        rates.append(rate)
        search.observe(rate, True)
    assert rates == [100, 200, 300]
    assert search.best_rps == 300
