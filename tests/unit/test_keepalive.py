"""Keep-alive windows from a model's idle-time histogram (Shahrad et al.'s hybrid policy)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from controlplane import autoscale, keepalive
from controlplane.autoscale import Observation, ScalerConfig, ScaleState
from controlplane.loadstats import Window
from tests.unit.test_autoscale import knobs


def test_fixed_until_representative() -> None:
    hist = keepalive.IdleHistogram()
    assert keepalive.windows(None, 300) == keepalive.Windows(0.0, 300, "fixed")
    for _ in range(5):
        hist.add(600)
    assert keepalive.windows(hist, 300).source == "fixed"  # too few idle times
    for _ in range(20):
        hist.add(10**6)  # mostly beyond the histogram's hour: not representative
    assert keepalive.windows(hist, 300).source == "fixed"


def test_a_timer_gets_a_prewarm_window_around_its_period() -> None:
    hist = keepalive.IdleHistogram()
    rng = random.Random(1)
    for _ in range(50):
        hist.add(600 * rng.uniform(0.98, 1.02))
    w = keepalive.windows(hist, 300)
    assert w.source == "histogram"
    assert 450 <= w.prewarm_s < 588, w  # unloaded for most of the gap ...
    assert w.wanted(600) and w.wanted(612)  # ... loaded when the next request comes
    assert not w.wanted(60) and not w.wanted(900)


def test_short_gaps_keep_it_loaded_from_the_start() -> None:
    hist = keepalive.IdleHistogram()
    for i in range(40):
        hist.add(3 + i % 10)
    w = keepalive.windows(hist, 300)
    assert w.prewarm_s == 0.0 and w.wanted(0) and w.wanted(12) and not w.wanted(60)


@given(st.lists(st.floats(0, 10_000), min_size=10, max_size=200))
def test_windows_are_sane_for_any_history(idles: list[float]) -> None:
    hist = keepalive.IdleHistogram()
    for x in idles:
        hist.add(x)
    w = keepalive.windows(hist, 300)
    assert w.prewarm_s >= 0 and w.keepalive_s > 0
    if w.source == "histogram":
        # the tail covers the 99th percentile of what was seen in range
        inside = sorted(x for x in idles if x < hist.cfg.bins * hist.cfg.bin_s)
        assert w.prewarm_s + w.keepalive_s >= inside[int(0.99 * (len(inside) - 1))]


def test_the_policy_prewarms_a_periodic_model() -> None:
    hist = keepalive.IdleHistogram()
    for _ in range(30):
        hist.add(600)
    k = knobs(min_replicas=0, keep=keepalive.windows(hist, 300))
    empty = Window(at=0, span_s=5)

    def decide(idle_for: float) -> int:
        obs = Observation(
            at=1000 + idle_for, ready=0, stable=empty, panic=empty, last_request_at=1000
        )
        return autoscale.decide("m", k, obs, ScaleState(), ScalerConfig(), 1000 + idle_for).desired

    assert decide(100) == 0  # right after use: unloaded (the next request is far)
    assert decide(590) == 1  # pre-warmed before the timer fires
    assert decide(2000) == 0  # past the tail
