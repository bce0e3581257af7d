"""Schedules: arrival counts and spacing follow the profile; traces and flags parse strictly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.errors import UsageError
from loadgen.schedule import (
    Arrival,
    ModelMix,
    Profile,
    Segment,
    arrivals,
    load_trace,
    parse_duration,
    parse_profile,
)

ONE = ModelMix(["m"])


def _all(profile: Profile, arrival: Arrival, seed: int = 0, mix: ModelMix = ONE) -> np.ndarray:
    chunks = list(arrivals(profile, arrival, mix, np.random.default_rng(seed)))
    return np.concatenate([c.offsets_s for c in chunks]) if chunks else np.array([])


def test_constant_rate_is_evenly_spaced_from_zero() -> None:
    offs = _all(Profile.constant(200, 3.0), Arrival.CONSTANT)
    assert len(offs) == 600
    assert offs[0] == 0.0
    assert np.allclose(np.diff(offs), 1 / 200)
    assert offs[-1] < 3.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 2000),
            st.floats(0, 2000),
            st.floats(0.05, 3.0),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_constant_arrivals_match_the_expected_count_and_are_ordered(
    stages: list[tuple[float, float, float]],
) -> None:
    profile = Profile(tuple(Segment(a, b, d) for a, b, d in stages))
    offs = _all(profile, Arrival.CONSTANT)
    assert abs(len(offs) - profile.expected_requests()) <= 1 + len(stages)
    assert (np.diff(offs) >= -1e-9).all()
    if len(offs):
        assert offs[0] >= 0 and offs[-1] <= profile.duration_s + 1e-9


def test_poisson_rate_and_spacing_are_exponential() -> None:
    offs = _all(Profile.constant(1000, 20.0), Arrival.POISSON, seed=3)
    assert len(offs) == pytest.approx(20_000, rel=0.03)
    gaps = np.diff(offs)
    assert gaps.mean() == pytest.approx(1e-3, rel=0.03)
    assert gaps.std() == pytest.approx(1e-3, rel=0.05)  # exponential: std == mean
    again = _all(Profile.constant(1000, 20.0), Arrival.POISSON, seed=3)
    assert np.array_equal(offs, again)


def test_ramp_rate_rises_linearly() -> None:
    offs = _all(parse_profile("0-1000@10s", 10.0), Arrival.CONSTANT)
    assert len(offs) == pytest.approx(5000, abs=2)
    first_half = (offs < 5).sum()
    assert first_half == pytest.approx(1250, abs=2)  # ∫0..5 of 100 t dt


def test_steps_hold_each_rate() -> None:
    offs = _all(parse_profile("100@2s,400@1s", 0), Arrival.CONSTANT)
    assert (offs < 2).sum() == 200 and (offs >= 2).sum() == 400


def test_zipf_mix_skews_towards_the_first_model() -> None:
    mix = ModelMix.zipf(["a", "b", "c", "d"], 1.2)
    picks = mix.assign(40_000, np.random.default_rng(0))
    share = np.bincount(picks, minlength=4) / len(picks)
    assert share == pytest.approx(mix.probabilities, abs=0.01)
    assert share[0] > share[1] > share[2] > share[3]
    assert np.allclose(ModelMix.zipf(["a", "b"], 0).probabilities, [0.5, 0.5])


@pytest.mark.parametrize("text", ["fast", "100@", "100@10parsecs", "10-@5s", ""])
def test_bad_profiles_name_the_flag(text: str) -> None:
    with pytest.raises(UsageError, match="--profile"):
        parse_profile(text, 10)


def test_durations() -> None:
    assert parse_duration("250ms", "--x") == 0.25
    assert parse_duration("2m", "--x") == 120
    assert parse_duration("7", "--x") == 7
    with pytest.raises(UsageError, match="--warmup"):
        parse_duration("soon", "--warmup")


def test_trace_replays_in_order_with_models(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n1700000000.5,b\n1700000000.0,a\n1700000001.0,\n")
    trace = load_trace(path, default_model="a")
    assert trace.offsets_s.tolist() == [0.0, 0.5, 1.0]
    assert [trace.models[i] for i in trace.model_index] == ["a", "b", "a"]
    chunks = list(trace.chunks(speed=2.0, chunk_s=0.3))
    assert np.concatenate([c.offsets_s for c in chunks]).tolist() == [0.0, 0.25, 0.5]


def test_trace_errors_point_at_the_row(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("0.0,a\nlater,a\n")
    with pytest.raises(UsageError, match=r"--trace.*t\.csv:2"):
        load_trace(path, None)
    with pytest.raises(UsageError, match="cannot read"):
        load_trace(tmp_path / "missing.csv", None)
