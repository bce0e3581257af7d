"""The histogram's quantiles stay within its stated relative error of the exact ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.histogram import Histogram, bucket_bounds, bucket_index


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=3, max_value=12))
def test_bucket_contains_its_value_and_is_narrow(value: int, bits: int) -> None:
    low, high = bucket_bounds(bucket_index(value, bits), bits)
    assert low <= value <= high
    assert high - low + 1 <= max(1, low * 2.0 ** -(bits - 1))


def test_buckets_are_contiguous_and_ordered() -> None:
    prev_high = -1
    for idx in range(0, 4000):
        low, high = bucket_bounds(idx, 8)
        assert low == prev_high + 1
        prev_high = high


def _exact(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=400),
    st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999, 1.0]),
)
def test_quantile_relative_error_bound(values: list[int], q: float) -> None:
    h = Histogram()
    for v in values:
        h.record(v)
    exact = _exact(values, q)
    assert abs(h.quantile(q) - exact) <= exact * 2.0**-8 + 0.5
    assert h.quantiles([q]) == [h.quantile(q)]


def test_p999_of_a_heavy_tail_is_within_half_a_percent() -> None:
    rng = np.random.default_rng(1)
    values = (rng.lognormal(mean=8, sigma=1.5, size=200_000)).astype(int).tolist()
    h = Histogram()
    for v in values:
        h.record(v)
    for q in (0.5, 0.99, 0.999):
        exact = _exact(values, q)
        assert h.quantile(q) == pytest.approx(exact, rel=0.005)


def test_merge_and_round_trip_keep_everything() -> None:
    a, b = Histogram(), Histogram()
    for v in range(0, 5000, 7):
        a.record(v)
    for v in range(100_000, 200_000, 333):
        b.record(v)
    a.merge(b)
    again = Histogram.from_dict(a.to_dict())
    assert again.count == a.count and again.min == 0 and again.max == a.max
    assert again.quantiles([0.1, 0.5, 0.99]) == a.quantiles([0.1, 0.5, 0.99])
    assert again.mean == pytest.approx(a.mean)


def test_empty_histogram_says_nan_and_rejects_bad_input() -> None:
    h = Histogram()
    assert math.isnan(h.quantile(0.99))
    with pytest.raises(ValueError):
        h.quantile(1.5)
    with pytest.raises(ValueError):
        Histogram(bits=1)
    with pytest.raises(ValueError):
        h.merge(Histogram(bits=6))
