"""SLO attainment per window, on synthetic records (no server): a recorder fed by hand."""

from __future__ import annotations

import pytest

from loadgen import attainment, report, slo
from loadgen.recorder import Recorder
from loadgen.runner import Mode, RunPlan, RunResult

T0 = 1000.0  # perf_counter reading at the run's start


def _result(duration_s: float, warmup_s: float, models: tuple[str, ...] = ("m",)) -> RunResult:
    plan = RunPlan(
        mode=Mode.OPEN, models=models, prepared=((),) * len(models),
        duration_s=duration_s, warmup_s=warmup_s,
    )  # fmt: skip
    rec = Recorder(models, T0, warmup_s, duration_s)
    return RunResult(plan, rec, T0, started_wall=0.0, finished_s=duration_s)


def _steady(
    res: RunResult, rate: int = 100, latency_s: float = 0.010, model: int = 0, until: float = 0
) -> None:
    """`rate` successes per second over the whole run, each taking `latency_s`."""
    end = until or res.plan.duration_s
    for i in range(int(end * rate)):
        t = T0 + i / rate
        res.recorder.ok(model, t, t, t + latency_s)


def _spike(res: RunResult, start_s: float, end_s: float, n: int, latency_s: float) -> None:
    for i in range(n):
        t = T0 + start_s + (end_s - start_s) * i / n
        res.recorder.ok(0, t, t, t + latency_s)


def test_a_window_with_a_latency_spike_fails_the_others_pass() -> None:
    res = _result(duration_s=32, warmup_s=2)
    _steady(res)
    _spike(res, 12.0, 13.0, 50, latency_s=0.5)  # in the second window [12, 22)
    wins = attainment.slo_windows(res, "p95=100ms,p99=200ms", 10)
    assert [(w.start_s, w.end_s) for w in wins] == [(2, 12), (12, 22), (22, 32)]
    assert [w.met for w in wins] == [True, False, True]
    assert wins[1].held == {"p95": True, "p99": False}
    assert wins[1].p99_s == pytest.approx(0.5, rel=0.01)
    assert wins[0].p95_s == pytest.approx(0.010, rel=0.01) and wins[0].requests == 1000
    assert wins[0].goodput_rps == pytest.approx(100)
    rep = attainment.evaluate(res, slo.parse("p99=200ms"), 10)
    assert (rep.overall.met, len(rep.overall.windows)) == (2, 3)
    assert rep.overall.fraction == pytest.approx(2 / 3) and rep.models == {}


def test_error_rate_clause_per_window_and_429s_are_errors_counted_apart() -> None:
    res = _result(duration_s=20, warmup_s=0)
    _steady(res)
    for i in range(5):  # 5 rejections and 1 timeout in [10, 20): 6 of 1006
        res.recorder.on_send(T0 + 15 + i / 10, T0 + 15 + i / 10)
        res.recorder.error(0, T0 + 15 + i / 10, "http_429")
    res.recorder.error(0, T0 + 11, "timeout")
    first, second = attainment.slo_windows(res, "p99=1s,errors<0.5%", 10)
    assert first.met and first.errors == 0 and first.rejected == 0
    assert not second.met and second.held == {"p99": True, "errors": False}
    assert (second.requests, second.successes, second.errors, second.rejected) == (1006, 1000, 6, 5)
    assert second.errors_by_kind == {"http_429": 5, "timeout": 1}
    # the whole-run totals carry the rejections too
    assert report.rejected(res.recorder.measured_total()) == 5


def test_warmup_is_excluded_and_windows_start_where_it_ends() -> None:
    res = _result(duration_s=12, warmup_s=2)
    _steady(res)
    _spike(res, 0.0, 1.99, 100, latency_s=5.0)  # only during the warm-up
    wins = attainment.slo_windows(res, "max=100ms", 5)
    assert [(w.start_s, w.end_s) for w in wins] == [(2, 7), (7, 12)]
    assert all(w.met for w in wins)
    assert sum(w.requests for w in wins) == res.recorder.measured_total().requests == 1000


def test_a_short_trailing_remainder_is_merged_a_long_one_kept_as_partial() -> None:
    res = _result(duration_s=24, warmup_s=0)  # 2 windows of 10 s, then 4 s: merged
    _steady(res)
    wins = attainment.slo_windows(res, "p99=1s", 10)
    assert [(w.start_s, w.end_s, w.partial) for w in wins] == [(0, 10, False), (10, 24, False)]
    assert wins[1].requests == 1400 and wins[1].goodput_rps == pytest.approx(100)

    res = _result(duration_s=27, warmup_s=0)  # 7 s left: a window of its own
    _steady(res)
    wins = attainment.slo_windows(res, "p99=1s", 10)
    assert [(w.start_s, w.end_s, w.partial) for w in wins][-1] == (20, 27, True)
    assert sum(w.requests for w in wins) == 2700


def test_an_empty_window_fails_and_per_model_windows_split_the_traffic() -> None:
    res = _result(duration_s=20, warmup_s=0, models=("a", "b"))
    _steady(res, model=0)
    _steady(res, model=1, until=10)  # b gets nothing in the second window
    rep = attainment.evaluate(res, slo.parse("p99=1s"), 10)
    assert [w.met for w in rep.overall.windows] == [True, True]
    assert [w.requests for w in rep.models["a"].windows] == [1000, 1000]
    assert [(w.requests, w.met) for w in rep.models["b"].windows] == [(1000, True), (0, False)]
    assert attainment.slo_windows(res, "p99=1s", 10, model="b")[1].p99_s is None
    doc = attainment.to_json(rep)
    assert doc["count"] == 2 and doc["met"] == 2 and doc["attainment"] == 1.0
    assert doc["models"]["b"]["attainment"] == 0.5


@pytest.mark.parametrize(
    ("window_s", "warmup_s", "problem"),
    [
        (0, 2, "above zero"),
        (-1, 2, "above zero"),
        (1.5, 2, "whole number"),
        (19, 2, "longer"),
        (5, 2.5, "warm-up of whole seconds"),
    ],
)
def test_unusable_windows_are_refused(window_s: float, warmup_s: float, problem: str) -> None:
    assert problem in (attainment.window_problem(window_s, 20, warmup_s) or "")
    with pytest.raises(ValueError, match="window_s"):
        attainment.slo_windows(_result(20, warmup_s), "p99=1s", window_s)
