"""The runner's dispatch loops and the precise timer, against an in-memory transport."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
import uvloop

from loadgen.precisetimer import PreciseTimer
from loadgen.runner import Mode, RunPlan, run
from loadgen.schedule import Chunk


class FakeTransport:
    """Answers each request `delay_s` later (0: from the next loop turn); `fail` → error kind."""

    def __init__(self, delay_s: float = 0.0, fail: str | None = None) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.sent: list[tuple[float, Any]] = []

    def submit(self, prepared: Any, cb: Any) -> None:
        self.sent.append((time.perf_counter(), prepared))
        loop = asyncio.get_running_loop()
        if self.delay_s:
            loop.call_later(self.delay_s, cb, self.fail, b"")
        else:
            loop.call_soon(cb, self.fail, b"")


def _plan(offsets: list[float], **kw: Any) -> RunPlan:
    arr = np.array(offsets)

    def schedule() -> list[Chunk]:  # two chunks, to cross a chunk boundary
        half = len(arr) // 2
        return [
            Chunk(arr[:half], np.zeros(half, dtype=np.int64)),
            Chunk(arr[half:], np.zeros(len(arr) - half, dtype=np.int64)),
        ]

    return RunPlan(
        mode=Mode.OPEN,
        models=("m",),
        prepared=(["a", "b", "c"],),
        duration_s=max(offsets) + 0.01,
        warmup_s=0.0,
        schedule=schedule,
        **kw,
    )


def _uv(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@pytest.mark.parametrize("timer", ["timerfd", "spin"])
def test_open_loop_sends_every_request_on_time_never_early(timer: str) -> None:
    offsets = [i * 0.0007 for i in range(400)] + [0.35, 0.35, 0.35]  # a burst at the end
    fake = FakeTransport(delay_s=0.002)
    result = _uv(run(_plan(offsets, timer=timer), fake))  # type: ignore[arg-type]
    rec = result.recorder
    assert len(fake.sent) == len(offsets) and rec.measured[0].ok == len(offsets)
    assert [p for _, p in fake.sent[:4]] == ["a", "b", "c", "a"]  # inputs used round-robin
    for (t, _), off in zip(fake.sent, offsets, strict=True):
        assert t >= result.t0 + off - 1e-6  # never before its intended time
    assert rec.lag.count == len(offsets) and rec.inflight == 0
    # the answer comes ~2 ms later (loop timers: ±1 ms), latency in µs
    assert rec.measured[0].latency.min >= 900


def test_open_loop_drops_beyond_max_inflight_and_counts_errors() -> None:
    offsets = [i * 0.001 for i in range(50)]
    fake = FakeTransport(delay_s=1.0, fail="http_503")
    result = _uv(run(_plan(offsets, max_inflight=10), fake))  # type: ignore[arg-type]
    errors = result.recorder.measured[0].errors
    assert errors == {"http_503": 10, "dropped": 40}
    assert len(fake.sent) == 10


def test_closed_loop_keeps_concurrency_requests_outstanding() -> None:
    fake = FakeTransport(delay_s=0.005)
    plan = RunPlan(
        mode=Mode.CLOSED,
        models=("m",),
        prepared=(["a", "b"],),
        duration_s=0.3,
        warmup_s=0.0,
        concurrency=3,
        closed_mix=np.zeros(16, dtype=np.int64),
    )
    result = _uv(run(plan, fake))  # type: ignore[arg-type]
    ok = result.recorder.measured[0].ok
    assert 3 * 0.3 / 0.005 * 0.5 <= ok <= 3 * 0.3 / 0.005 + 3  # ~180, allow a slow machine
    assert result.recorder.inflight == 0


def test_closed_loop_survives_synchronous_failures() -> None:
    """A transport that fails inside submit() must not recurse without bound."""

    class Sync:
        n = 0

        def submit(self, prepared: Any, cb: Any) -> None:
            self.n += 1
            cb("connection", b"")

    plan = RunPlan(
        mode=Mode.CLOSED, models=("m",), prepared=(["a"],), duration_s=0.2, warmup_s=0.0,
        concurrency=2, closed_mix=np.zeros(1, dtype=np.int64),
    )  # fmt: skip
    sync = Sync()
    result = _uv(run(plan, sync))  # type: ignore[arg-type]
    assert sync.n > 1000 and result.recorder.measured[0].errors["connection"] == sync.n


def test_precise_timer_fires_once_at_the_armed_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timer = PreciseTimer.create(loop, lambda: fired.append(time.perf_counter()))
        if timer is None:
            pytest.skip("no timerfd here")
        try:
            due = time.perf_counter() + 0.02
            timer.arm(due + 1.0)
            timer.arm(due)  # re-arming replaces the earlier time
            await asyncio.sleep(0.1)
            assert len(fired) == 1 and due <= fired[0] < due + 0.05
            timer.arm(time.perf_counter() - 1)  # in the past: fires at once
            await asyncio.sleep(0.01)
            assert len(fired) == 2
        finally:
            timer.close()

    _uv(main())
