"""The autoscaling policies with fake time: step, burst, noise, signal loss, bounds, zero."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane import autoscale
from controlplane.autoscale import Knobs, Observation, ScalerConfig, ScaleState
from controlplane.loadstats import RequestLog, Window
from controlplane.spec import ScalingPolicy

CFG = ScalerConfig(stable_window_s=30, panic_window_s=5)


def knobs(**kw: object) -> Knobs:
    base: dict[str, object] = {
        "policy": ScalingPolicy.SLO,
        "min_replicas": 1,
        "max_replicas": 4,
        "target_inflight": 2.0,
        "target_utilization": 0.7,
        "scale_down_delay_s": 30.0,
        "idle_to_zero_s": 300.0,
        "p95_s": 0.1,
        "p99_s": 0.2,
        "max_error_rate": 0.001,
        "max_batch_size": 4,
        "instances": 1,
    }
    base.update(kw)
    return Knobs(**base)  # type: ignore[arg-type]


class Sim:
    """A model whose replicas each serve `mu` req/s: demand in, latency out, fake time."""

    def __init__(self, k: Knobs, mu: float = 200.0, seed: int = 0) -> None:
        self.k, self.mu, self.now = k, mu, 1000.0
        self.log = RequestLog()
        self.state = ScaleState()
        self.ready = k.min_replicas
        self.rng = random.Random(seed)
        self.history: list[autoscale.Decision] = []

    def second(self, rate: float, *, fresh: bool = True) -> autoscale.Decision:
        served = min(rate, self.ready * self.mu)
        util = served / (self.ready * self.mu) if self.ready else 1.0
        # M/D/1-ish wait: grows without bound near saturation
        lat = 0.02 + (0.02 * util / max(1e-3, 1 - util) if util < 0.99 else 2.0)
        for _ in range(int(served)):
            self.log.record("m", lat * (0.5 + self.rng.random()), True, self.now + 0.5)
        for _ in range(int(rate - served)):
            self.log.reject("m", self.now + 0.5)
        self.now += 1.0
        obs = Observation(
            at=self.now,
            ready=self.ready,
            stable=self.log.window("m", CFG.stable_window_s, self.now),
            panic=self.log.window("m", CFG.panic_window_s, self.now),
            inflight=served * lat,
            capacity_rps=self.mu if served > 20 else None,
            last_request_at=self.log.last_request_at("m"),
            fresh=fresh,
        )
        d = autoscale.decide("m", self.k, obs, self.state, CFG, self.now)
        self.state = d.state
        self.ready = d.desired  # instant loads: the policy, not the actuator, is under test
        self.history.append(d)
        return d

    def run(self, rate: float, seconds: int) -> list[int]:
        return [self.second(rate).desired for _ in range(seconds)]


def test_step_scales_out_fast_and_in_slowly() -> None:
    sim = Sim(knobs(), mu=200)
    assert sim.run(80, 40)[-1] == 1
    out = sim.run(320, 10)
    assert out[-1] >= 3, out  # 320 / (200 x 0.7) -> 3
    assert out.index(out[-1]) <= 5, "scale-out took more than 5 s"
    back = sim.run(80, 120)
    assert back[-1] == 1
    # gently: not before the scale-down delay, and at most halving per step
    assert back[:25] == [back[0]] * 25
    for a, b in itertools.pairwise(back):
        assert b >= a // 2


def test_burst_panics_to_the_ceiling_and_holds() -> None:
    sim = Sim(knobs(), mu=200)
    sim.run(80, 40)
    burst = sim.run(800, 5)
    assert burst[-1] == 4  # clamped to max_replicas
    assert any(d.mode == "panic" for d in sim.history[-5:])
    after = sim.run(80, 20)
    assert min(after) == 4, "no scale-in inside the panic window"


def test_noise_does_not_flap() -> None:
    sim = Sim(knobs(), mu=200, seed=3)
    sim.run(250, 40)
    rng = random.Random(7)
    counts = [sim.second(250 * (0.85 + 0.3 * rng.random())).desired for _ in range(300)]
    changes = sum(1 for a, b in itertools.pairwise(counts) if a != b)
    assert changes <= 2, counts


def test_stale_signals_hold_and_never_scale_in() -> None:
    sim = Sim(knobs(), mu=200)
    sim.run(400, 40)
    before = sim.ready
    for _ in range(120):
        d = sim.second(0, fresh=False)
        assert d.mode == "hold" and d.desired == before
    assert "stale" in sim.history[-1].reason


def test_floor_and_ceiling() -> None:
    sim = Sim(knobs(min_replicas=2, max_replicas=3), mu=200)
    assert sim.run(10, 60)[-1] == 2
    assert sim.run(5000, 10)[-1] == 3
    assert "clamped" in sim.history[-1].reason


def test_scale_to_zero_after_keep_alive_and_back() -> None:
    sim = Sim(knobs(min_replicas=0, idle_to_zero_s=60), mu=200)
    sim.ready = 1
    sim.run(50, 30)
    quiet = sim.run(0, 100)
    assert quiet[40] >= 1, "scaled to zero before the keep-alive"
    assert quiet[-1] == 0 and sim.history[-1].mode == "idle"
    assert sim.second(30).desired >= 1


def test_slo_error_adds_a_replica_even_when_capacity_says_enough() -> None:
    k = knobs()
    w = Window(at=10, span_s=5, completed=500, latency_sum_s=100, p95_s=0.3, p99_s=0.5)
    obs = Observation(at=10, ready=2, stable=w, panic=w, inflight=5, capacity_rps=10_000)
    d = autoscale.decide("m", k, obs, ScaleState(desired=2), CFG, 10)
    assert d.desired == 4 and "SLO broken (x3.00" in d.reason  # ready x min(ratio, 2)
    slightly = Window(at=10, span_s=5, completed=500, latency_sum_s=100, p95_s=0.09, p99_s=0.21)
    obs = Observation(at=10, ready=2, stable=slightly, panic=slightly, capacity_rps=10_000)
    assert autoscale.decide("m", k, obs, ScaleState(desired=2), CFG, 10).desired == 3


def test_admission_limit_follows_capacity_and_slo() -> None:
    k = knobs(max_batch_size=4)
    assert autoscale.admission_limit(k, 2, 2, None) is None
    assert autoscale.admission_limit(k, 2, 2, 200.0) == 80  # 2 x 200 rps x 0.2 s
    assert autoscale.admission_limit(k, 1, 1, 1.0) == 8  # never below two batches each
    assert autoscale.admission_limit(knobs(p95_s=None, p99_s=None), 1, 1, 200.0) is None


def test_target_inflight_baseline_waits_for_its_delays() -> None:
    sim = Sim(knobs(policy=ScalingPolicy.TARGET_INFLIGHT, target_inflight=2.0), mu=200)
    out = sim.run(300, 20)
    assert out[-1] == 1, "Ray's 30 s upscale delay"
    assert sim.run(300, 20)[-1] > 1


def test_static_policy_keeps_the_floor() -> None:
    sim = Sim(knobs(policy=ScalingPolicy.STATIC, min_replicas=1), mu=200)
    assert set(sim.run(800, 30)) == {1}


@settings(max_examples=60, deadline=None)
@given(
    rates=st.lists(st.floats(0, 3000), min_size=5, max_size=60),
    lo=st.integers(0, 3),
    span=st.integers(0, 5),
    fresh=st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_always_within_bounds_and_never_down_on_stale(
    rates: list[float], lo: int, span: int, fresh: list[bool]
) -> None:
    k = knobs(min_replicas=lo, max_replicas=max(1, lo + span))
    sim = Sim(k, mu=150)
    sim.ready = max(1, lo)
    for i, r in enumerate(rates):
        before = sim.state.desired
        d = sim.second(r, fresh=fresh[i])
        assert k.min_replicas <= d.desired <= k.max_replicas
        if not fresh[i] and before is not None:
            assert d.desired == before


@pytest.mark.parametrize("latency", [0.0001, 0.0005, 0.003, 0.05, 0.2, 1.7, 30.0, 500.0])
def test_request_log_quantiles_within_a_bucket(latency: float) -> None:
    log = RequestLog(horizon_s=10)
    for _ in range(100):
        log.record("m", latency, True, 5.2)
    w = log.window("m", 5, 5.5)
    assert w.p99_s is not None and w.completed == 100
    if latency <= 60:
        assert latency <= w.p99_s <= max(latency * 1.1, 0.00055)


def test_request_log_window_slides_and_forgets() -> None:
    log = RequestLog(horizon_s=30)
    for t in range(20):
        log.record("m", 0.01, t % 10 != 0, 100 + t + 0.5)
        log.reject("m", 100 + t + 0.5)
    w = log.window("m", 5, 119.9)
    assert (w.completed, w.rejected, w.errors) == (5, 5, 0)
    assert w.rate_rps == pytest.approx(10 / 4.9, rel=0.01)
    assert log.window("m", 30, 200).completed == 0  # all slots older than the window
    log.retain(["other"])
    assert log.models() == []
