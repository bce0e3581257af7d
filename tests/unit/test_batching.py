"""Adaptive batching: AIMD on the queue delay within the spec's bounds, rate-limited."""

from __future__ import annotations

import asyncio
import json

from controlplane import batching
from controlplane.autopilot import Autopilot, Measured
from controlplane.autoscale import ScalerConfig
from controlplane.fleet import Server
from controlplane.loadstats import Window
from controlplane.spec import BatchingBounds, ModelSpec
from tests.fakes import FakeLoadSignals
from tests.support import python_spec

B = BatchingBounds(min_queue_delay_us=1000, max_queue_delay_us=20000)


def test_pressure_halves_towards_the_minimum() -> None:
    step = batching.next_delay(B, 20000, 1.2, 0.9, 120)
    assert step is not None and step.delay_us == 10000 and "halve" in step.reason
    step = batching.next_delay(B, 1100, 1.2, 0.9, 120)
    assert step is None  # 1100 -> 1000 is under 20% of a change: not worth a reload


def test_pressure_floor_and_small_changes() -> None:
    step = batching.next_delay(B, 1800, 1.5, 0.9, 120)
    assert step is not None and step.delay_us == 1000
    assert batching.next_delay(B, 1000, 1.5, 0.9, 120) is None  # already at the floor


def test_slack_with_busy_replicas_grows_by_a_step() -> None:
    step = batching.next_delay(B, 4000, 0.3, 0.8, 120)
    assert step is not None and step.delay_us == 4000 + (20000 - 1000) // 8
    assert batching.next_delay(B, 4000, 0.3, 0.2, 120) is None  # idle replicas: no need
    assert batching.next_delay(B, 20000, 0.3, 0.9, 120) is None  # at the ceiling
    assert batching.next_delay(B, 4000, 0.7, 0.9, 120) is None  # neither pressure nor slack


def test_rate_limited_and_needs_a_verdict() -> None:
    assert batching.next_delay(B, 20000, 1.5, 0.9, 10) is None
    assert batching.next_delay(B, 20000, None, 0.9, 120) is None


def test_apply_rewrites_only_the_delay() -> None:
    cfg = json.dumps({"name": "m", "dynamic_batching": {"max_queue_delay_microseconds": "2000"}})
    out = json.loads(batching.apply(cfg, 500))
    assert out == {"name": "m", "dynamic_batching": {"max_queue_delay_microseconds": "500"}}
    assert batching.apply(cfg, None) == cfg


def test_autopilot_tunes_and_versions_the_delay() -> None:
    raw = python_spec("m", min_replicas=1, max_replicas=2)
    raw["dynamic_batching"] = {"max_queue_delay_us": 16000}
    raw["slo"] = {"p95_ms": 50, "p99_ms": 100}
    raw["autoscaling"] = {"batching": {"min_queue_delay_us": 1000, "max_queue_delay_us": 16000}}
    spec = ModelSpec.model_validate(raw)
    src = FakeLoadSignals()
    pilot = Autopilot(src, ScalerConfig())
    server = Server("s0", "http://x", "x:1", None, 1 << 30)
    slow = Window(at=0, span_s=5, completed=500, latency_sum_s=20, p95_s=0.08, p99_s=0.12)
    src.readings["m"] = Measured(stable=slow, panic=slow, capacity_rps=400)

    async def steps() -> None:
        await pilot.step({"m": spec}, {"m": [server]}, 1000)
        assert pilot.queue_delay("m") == (1, 8000)
        await pilot.step({"m": spec}, {"m": [server]}, 1010)  # rate-limited
        assert pilot.queue_delay("m") == (1, 8000)
        await pilot.step({"m": spec}, {"m": [server]}, 1070)
        assert pilot.queue_delay("m") == (2, 4000)
        rows = [d for d in pilot.decisions("m") if d["batching"]]
        assert [r["queue_delay_us"] for r in rows] == [8000, 4000]
        assert pilot.counters()[("m", "batching")] == 2

    asyncio.run(steps())
