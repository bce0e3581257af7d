"""Pure tests of the replica-choice policies (no I/O, fake time)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane import routing
from controlplane.routing import HotCold, LeastRequest, ReplicaStats, RoundRobin, ServerSignal


def _r(
    key: str, rif: int = 0, lat: float | None = 0.01, oldest: float = 0.0, sig=None
) -> ReplicaStats:
    return ReplicaStats(key, rif, lat, oldest, sig)


stats = st.lists(
    st.builds(
        ReplicaStats,
        key=st.text(min_size=1, max_size=3),
        rif=st.integers(0, 50),
        latency_s=st.one_of(st.none(), st.floats(0, 5)),
        oldest_inflight_s=st.floats(0, 10),
        signal=st.one_of(
            st.none(),
            st.builds(
                ServerSignal,
                at=st.floats(0, 100),
                pending=st.floats(0, 50),
                queue_s=st.floats(0, 5),
                latency_s=st.floats(0, 5),
            ),
        ),
    ),
    min_size=1,
    max_size=12,
)


@given(replicas=stats, seed=st.integers(0, 2**32), seq=st.integers(0, 10**6))
def test_round_robin_takes_the_next_in_turn(replicas, seed, seq) -> None:
    i = RoundRobin().choose(replicas, now=50.0, rng=random.Random(seed), seq=seq)
    assert i == seq % len(replicas)


@given(replicas=stats, seed=st.integers(0, 2**32))
def test_least_request_picks_the_idler_of_its_two_choices(replicas, seed) -> None:
    i = LeastRequest().choose(replicas, now=50.0, rng=random.Random(seed), seq=0)
    rifs = [r.rif for r in replicas]
    if len(replicas) <= 2:  # every replica is a choice: the idlest wins
        assert rifs[i] == min(rifs)
    else:  # two distinct choices: never a replica busier than all the others
        assert rifs[i] <= sorted(rifs)[-2]


@given(replicas=stats.filter(lambda rs: len(rs) <= HotCold().probes), seed=st.integers(0, 2**32))
def test_hot_cold_picks_the_lowest_expected_wait_among_cold_replicas(replicas, seed) -> None:
    """With no more replicas than probes, every one is a candidate: the pick is cold (RIF at
    most the 75th percentile of the candidates') and no cold replica waits less."""
    policy = HotCold()
    i = policy.choose(replicas, now=50.0, rng=random.Random(seed), seq=0)
    eff = [policy.effective(r, 50.0) for r in replicas]
    threshold = float(np.quantile([rif for rif, _ in eff], policy.hot_quantile))
    tol = 1e-9 * max(1.0, threshold)
    assert eff[i][0] <= threshold + tol

    def wait(rif: float, lat: float) -> float:
        return lat * (rif + 1.0)

    surely_cold = [wait(*e) for e in eff if e[0] < threshold - tol]
    assert all(wait(*eff[i]) <= w * (1 + 1e-12) for w in surely_cold)


def test_round_robin_cycles() -> None:
    rs = [_r("a"), _r("b"), _r("c")]
    picks = [RoundRobin().choose(rs, now=0, rng=random.Random(0), seq=s) for s in range(6)]
    assert picks == [0, 1, 2, 0, 1, 2]


def test_least_request_never_picks_the_busiest_of_two() -> None:
    rs = [_r("a", rif=5), _r("b", rif=1)]
    assert {LeastRequest().choose(rs, now=0, rng=random.Random(s), seq=0) for s in range(50)} == {1}


def test_hot_cold_avoids_a_hot_replica_even_if_fast() -> None:
    rs = [_r("fast-but-busy", rif=9, lat=0.001), _r("b", rif=1, lat=0.01), _r("c", rif=0, lat=0.02)]
    picks = Counter(HotCold().choose(rs, now=0, rng=random.Random(s), seq=0) for s in range(100))
    assert picks[0] == 0


def test_hot_cold_prefers_low_latency_among_cold() -> None:
    rs = [_r("slow", rif=1, lat=0.08), _r("fast", rif=1, lat=0.02), _r("mid", rif=1, lat=0.04)]
    assert HotCold().choose(rs, now=0, rng=random.Random(1), seq=0) == 1


def test_hot_cold_sees_a_stuck_replica_by_its_oldest_request() -> None:
    # Same RIF everywhere, but one replica's oldest request has waited 2 s: it looks slow.
    rs = [
        _r("stuck", rif=1, lat=0.01, oldest=2.0),
        _r("b", rif=1, lat=0.01),
        _r("c", rif=1, lat=0.01),
    ]
    picks = {HotCold().choose(rs, now=0, rng=random.Random(s), seq=0) for s in range(50)}
    assert 0 not in picks
    assert picks == {1, 2}  # equal replicas share the load


def test_hot_cold_uses_fresh_signals_and_ignores_stale_ones() -> None:
    busy = ServerSignal(at=100.0, pending=20, queue_s=0.5)
    rs = [_r("a", rif=1, sig=busy), _r("b", rif=1, lat=0.02)]
    assert HotCold().choose(rs, now=101.0, rng=random.Random(0), seq=0) == 1
    # the same signal 60 s later is stale: only the local view counts (a is faster)
    assert HotCold().choose(rs, now=160.0, rng=random.Random(0), seq=0) == 0


def test_hot_cold_all_hot_picks_least_rif() -> None:
    p = HotCold(hot_quantile=0.0)  # everything above the minimum is hot
    rs = [_r("a", rif=4, lat=0.001), _r("b", rif=3, lat=0.5), _r("c", rif=6, lat=0.001)]
    assert p.choose(rs, now=0, rng=random.Random(0), seq=0) == 1


def test_unknown_replica_gets_tried() -> None:
    rs = [_r("old", rif=0, lat=0.05), _r("new", rif=0, lat=None)]
    assert HotCold().choose(rs, now=0, rng=random.Random(0), seq=0) == 1


@given(
    prev=st.one_of(st.none(), st.floats(0, 10)),
    sample=st.floats(0, 10),
    dt=st.floats(0, 100),
)
def test_peak_ewma_jumps_up_and_decays_between(prev, sample, dt) -> None:
    v = routing.peak_ewma(prev, sample, dt, tau_s=2.0)
    if prev is None or sample > prev:
        assert v == sample
    else:
        assert sample - 1e-9 <= v <= prev + 1e-9


def test_make_names_the_known_policies() -> None:
    assert routing.make("hot-cold").name == "hot-cold"
    with pytest.raises(ValueError, match="least-request"):
        routing.make("fastest")


def test_retry_budget_and_outlier_rule() -> None:
    b = routing.RetryBudget(ratio=0.2, min_per_s=0.0, window_s=10)
    assert b.allows(100, 19) and not b.allows(100, 20)
    o = routing.OutlierRule(base_ejection_s=5, max_ejection_s=12)
    assert [o.ejection_s(n) for n in (1, 2, 3)] == [5, 10, 12]


def test_router_never_retries_sequence_models_and_spends_a_budget() -> None:
    from adapters.gateway.config import GatewayConfig
    from adapters.gateway.directory import StaticDirectory
    from adapters.gateway.metrics import GatewayMetrics
    from adapters.gateway.router import Router

    now = [0.0]
    r = Router(
        StaticDirectory(),
        GatewayConfig(retry_ratio=0.0, retry_min_per_s=0.3),  # 3 retries per 10 s window
        GatewayMetrics(),
        clock=lambda: now[0],
    )
    assert [r.spend_retry("m", "connect") for _ in range(4)] == [True, True, True, False]
    now[0] = 11.0  # a new window
    assert r.spend_retry("m", "connect")


def test_router_ejects_after_consecutive_failures_but_keeps_one() -> None:
    from adapters.gateway.config import GatewayConfig
    from adapters.gateway.directory import StaticDirectory
    from adapters.gateway.metrics import GatewayMetrics
    from adapters.gateway.router import Router
    from controlplane.replicas import Replica

    now = [0.0]
    cfg = GatewayConfig(eject_after_failures=2, eject_base_s=5.0, max_ejected_fraction=0.5)
    r = Router(StaticDirectory(), cfg, GatewayMetrics(), clock=lambda: now[0])
    a, b = Replica("m", "a", "http://a", "a"), Replica("m", "b", "http://b", "b")

    class H:
        def expire(self) -> None:
            pass

    for rep in (a, b):
        h = H()
        r.end("m", rep, h, r.begin(rep, h), ok=True)
    for _ in range(2):
        h = H()
        r.end("m", a, h, r.begin(a, h), ok=False)
    # every attempt that began has ended: nothing is left in flight
    assert [(s.rif, dict(s.inflight)) for s in r.servers.values()] == [(0, {}), (0, {})]
    assert all(r.pick("m", [a, b]) is b for _ in range(20))  # a is ejected
    for _ in range(2):
        h = H()
        r.end("m", b, h, r.begin(b, h), ok=False)
    assert r.servers["b"].ejected_until == 0.0  # ejecting b too would pass the 50% cap
    now[0] = 6.0  # a's ejection is over
    assert {r.pick("m", [a, b]).server_id for _ in range(50)} == {"a", "b"}
