"""The load engine: sends requests on an open-loop schedule or from closed-loop workers.

Open loop: one dispatcher walks the schedule and starts each request at its intended time,
whether or not earlier ones have come back; latency runs from that intended time, so a server
stall shows up as the latency every user scheduled during it would have seen (no coordinated
omission). If the dispatcher itself runs late, each request's lateness is recorded as schedule
lag; past `max_inflight` outstanding requests a request is not sent and counts as `dropped`.

Closed loop: `concurrency` workers each send, wait for the answer, and send again. Latency runs
from the actual send, which is what such a tool can measure, and a stall simply pauses
sending; the report labels such runs so nobody mistakes them for open-loop numbers.

Timing uses `time.perf_counter`. Sleeping gets within about a millisecond of a due time (the
event loop's timer resolution); the last stretch is covered by yielding to the loop, so sends
stay on time while responses keep being processed.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadgen.recorder import DROPPED, Recorder
from loadgen.schedule import Chunk
from loadgen.transport import Transport

# Sleep until this close to a due time, then yield to the loop until it arrives.
_SPIN_S = 0.0015


class Mode(enum.StrEnum):
    OPEN = "open-loop"
    CLOSED = "closed-loop"


@dataclass(frozen=True)
class RunPlan:
    """One measured run: what to send, how, for how long."""

    mode: Mode
    models: tuple[str, ...]
    prepared: tuple[Sequence[Any], ...]  # per model: pre-built requests, used round-robin
    duration_s: float  # length of the schedule (open) or of the run (closed)
    warmup_s: float
    schedule: Callable[[], Iterable[Chunk]] | None = None  # open loop
    concurrency: int = 0  # closed loop
    closed_mix: np.ndarray | None = None  # closed loop: model index per request, cycled
    max_inflight: int = 10_000


@dataclass
class RunResult:
    plan: RunPlan
    recorder: Recorder
    t0: float
    started_wall: float  # time.time() at t0
    finished_s: float  # seconds after t0 when the last request came back

    @property
    def window_s(self) -> float:
        return max(self.plan.duration_s - self.plan.warmup_s, 1e-9)


async def run(
    plan: RunPlan,
    transport: Transport,
    *,
    on_start: Callable[[Recorder], None] | None = None,
    at_warmup_end: Callable[[], Any] | None = None,
) -> RunResult:
    """Carry out `plan`; `on_start` sees the recorder (progress display), `at_warmup_end` is
    awaited as the measured window opens (server metrics scrape)."""
    t0 = time.perf_counter() + 0.05  # a moment to get the dispatcher going
    started_wall = time.time() + 0.05
    rec = Recorder(plan.models, t0, plan.warmup_s, plan.duration_s)
    if on_start is not None:
        on_start(rec)
    side: list[asyncio.Task[Any]] = []
    if at_warmup_end is not None:
        side.append(asyncio.create_task(_at(t0 + plan.warmup_s, at_warmup_end)))
    try:
        if plan.mode is Mode.OPEN:
            await _open_loop(plan, transport, rec, t0)
        else:
            await _closed_loop(plan, transport, rec, t0)
        if side:
            await asyncio.gather(*side)
    finally:
        for t in side:
            t.cancel()
    return RunResult(plan, rec, t0, started_wall, time.perf_counter() - t0)


async def _at(when: float, fn: Callable[[], Any]) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    result = fn()
    if asyncio.iscoroutine(result):
        await result


async def _open_loop(plan: RunPlan, transport: Transport, rec: Recorder, t0: float) -> None:
    assert plan.schedule is not None
    loop = asyncio.get_running_loop()
    pc = time.perf_counter
    infer = transport.infer
    on_send, ok, error = rec.on_send, rec.ok, rec.error
    prepared = plan.prepared
    sizes = [len(p) for p in prepared]
    turn = [0] * len(prepared)
    outstanding: set[asyncio.Task[None]] = set()
    discard = outstanding.discard
    max_inflight = plan.max_inflight
    sleep = asyncio.sleep

    async def fire(model: int, intended: float, request: Any) -> None:
        sent = pc()
        on_send(intended, sent)
        kind = await infer(request)
        if kind is None:
            ok(model, intended, sent, pc())
        else:
            error(model, intended, kind)

    for chunk in plan.schedule():
        for off, model in zip(chunk.offsets_s.tolist(), chunk.models.tolist(), strict=True):
            due = t0 + off
            delay = due - pc()
            if delay > _SPIN_S:
                await sleep(delay - _SPIN_S)
            while pc() < due:
                await sleep(0)
            if len(outstanding) >= max_inflight:
                error(model, due, DROPPED, sent=False)
                continue
            i = turn[model]
            turn[model] = i + 1 if i + 1 < sizes[model] else 0
            task = loop.create_task(fire(model, due, prepared[model][i]))
            outstanding.add(task)
            task.add_done_callback(discard)
    if outstanding:
        await asyncio.gather(*outstanding)


async def _closed_loop(plan: RunPlan, transport: Transport, rec: Recorder, t0: float) -> None:
    pc = time.perf_counter
    end = t0 + plan.duration_s
    infer = transport.infer
    on_send, ok, error = rec.on_send, rec.ok, rec.error
    prepared = plan.prepared
    mix = plan.closed_mix.tolist() if plan.closed_mix is not None else [0]
    delay = t0 - pc()
    if delay > 0:
        await asyncio.sleep(delay)

    async def worker(w: int) -> None:
        n = w  # workers start at different points of the mix and the input sets
        while True:
            sent = pc()
            if sent >= end:
                return
            model = mix[n % len(mix)]
            request = prepared[model][n % len(prepared[model])]
            n += plan.concurrency
            on_send(sent, sent)
            kind = await infer(request)
            if kind is None:
                ok(model, sent, sent, pc())
            else:
                error(model, sent, kind)

    await asyncio.gather(*(worker(w) for w in range(plan.concurrency)))
