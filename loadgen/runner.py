"""The load engine: sends requests on an open-loop schedule or from closed-loop workers.

Open loop: one dispatcher walks the schedule and starts each request at its intended time,
whether or not earlier ones have come back; latency runs from that intended time, so a server
stall shows up as the latency every user scheduled during it would have seen (no coordinated
omission). If the dispatcher itself runs late, each request's lateness is recorded as schedule
lag; past `max_inflight` outstanding requests a request is not sent and counts as `dropped`.

Closed loop: `concurrency` workers each send, wait for the answer, and send again. Latency runs
from the actual send, which is what such a tool can measure, and a stall simply pauses
sending; the report labels such runs so nobody mistakes them for open-loop numbers.

Timing uses `time.perf_counter`. A timer gets within about a millisecond of a due time (the
event loop's timer resolution); the last stretch is covered by `call_soon` turns of the loop,
so sends stay on time while responses keep being processed. Requests are started with
`Transport.submit` and finish in a callback: no task or coroutine per request.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from numpy.typing import NDArray

from loadgen.precisetimer import PreciseTimer
from loadgen.recorder import DROPPED, Recorder
from loadgen.schedule import Chunk
from loadgen.transport import Transport

# spin mode: sleep until this close to a due time, then spin on the loop.
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
    closed_mix: NDArray[Any] | None = None  # closed loop: model index per request, cycled
    max_inflight: int = 10_000
    # How the open-loop dispatcher waits for the next due time. `spin` (default): a loop timer
    # to 1.5 ms before, then `call_soon` turns; it never waits for the kernel to wake it: the
    # lowest lag, at the price of a busy core above ~500 req/s. `timerfd`: sleep in epoll until
    # a Linux timerfd fires at the due time; far less CPU, but each wake-up goes through the
    # scheduler (on the 2-vCPU VM of docs/benchmarks-loadgen.md: up to ~2 ms late at p99).
    timer: str = "spin"


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
    warmup_end_lead_s: float = 0.0,
) -> RunResult:
    """Carry out `plan`; `on_start` sees the recorder (progress display), `at_warmup_end` is
    awaited as the measured window opens (server metrics scrape)."""
    # Everything that exists now (modules, prepared requests) lives for the whole run: collect
    # once and freeze it, so the collector's full passes during the run do not walk it (with
    # tritonclient, grpc and numpy loaded such a pass stalls the dispatcher for milliseconds).
    gc.collect()
    gc.freeze()
    try:
        return await _run(plan, transport, on_start, at_warmup_end, warmup_end_lead_s)
    finally:
        gc.unfreeze()


async def _run(
    plan: RunPlan,
    transport: Transport,
    on_start: Callable[[Recorder], None] | None,
    at_warmup_end: Callable[[], Any] | None,
    warmup_end_lead_s: float,
) -> RunResult:
    t0 = time.perf_counter() + 0.05  # a moment to get the dispatcher going
    started_wall = time.time() + 0.05
    rec = Recorder(plan.models, t0, plan.warmup_s, plan.duration_s)
    if on_start is not None:
        on_start(rec)
    side: list[asyncio.Task[Any]] = []
    if at_warmup_end is not None:
        # `warmup_end_lead_s` early: the hook's own latency (a metrics scrape takes a few ms,
        # more than a fast model's first measured request)
        when = t0 + plan.warmup_s - warmup_end_lead_s
        side.append(asyncio.create_task(_at(when, at_warmup_end)))
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


class _OpenLoop:
    """The open-loop dispatcher, driven by event-loop callbacks rather than a coroutine.

    Each wake-up sends every request whose intended time has come (a batch when the loop was
    busy), then arranges the next wake-up: a timer to `_SPIN_S` before the next due time, and
    from there `call_soon` turns, each of which also lets the loop process responses, so a send
    goes out within one loop turn of its due time while the timer's millisecond granularity
    does not show as lag (or, with `--timer timerfd`, one precise timerfd wake-up at the
    due time). Completions are plain callbacks (`Transport.submit`): no task,
    coroutine or future per request.
    """

    def __init__(self, plan: RunPlan, transport: Transport, rec: Recorder, t0: float) -> None:
        assert plan.schedule is not None
        self.loop = asyncio.get_running_loop()
        self.t0 = t0
        self.submit = transport.submit
        self.rec = rec
        self.prepared = [list(p) for p in plan.prepared]
        self.sizes = [len(p) for p in plan.prepared]
        self.turn = [0] * len(plan.prepared)
        self.max_inflight = plan.max_inflight
        self.chunks = iter(plan.schedule())
        self.dues: list[float] = []
        self.models: list[int] = []
        self.i = 0
        self.pending = 0
        self.exhausted = False
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.timer: PreciseTimer | None = None
        self.timer_mode = plan.timer

    async def run(self) -> None:
        self.timer = (
            PreciseTimer.create(self.loop, self._pump) if self.timer_mode == "timerfd" else None
        )
        self.loop.call_soon(self._pump)
        try:
            await self.finished
        finally:
            if self.timer is not None:
                self.timer.close()

    def _pump(self) -> None:
        try:
            self._send_due()
        except BaseException as exc:  # surface it from run(), not the loop's error log
            if not self.finished.done():
                self.finished.set_exception(exc)

    def _send_due(self) -> None:
        pc = time.perf_counter
        rec = self.rec
        on_send, error = rec.on_send, rec.error
        submit, done = self.submit, self._done
        prepared, sizes, turn = self.prepared, self.sizes, self.turn
        dues, models, i = self.dues, self.models, self.i
        while True:
            if i >= len(dues):
                chunk = next(self.chunks, None)
                if chunk is None:
                    self.i = i
                    self.exhausted = True
                    if self.pending == 0 and not self.finished.done():
                        self.finished.set_result(None)
                    return
                dues = self.dues = (chunk.offsets_s + self.t0).tolist()
                models = self.models = chunk.models.tolist()
                i = 0
                continue
            due = dues[i]
            now = pc()
            if due > now:
                self.i = i
                if self.timer is not None:
                    self.timer.arm(due)
                    return
                delay = due - now
                if delay > _SPIN_S:
                    self.loop.call_later(delay - _SPIN_S, self._pump)
                else:
                    self.loop.call_soon(self._pump)
                return
            i += 1
            model = models[i - 1]
            if self.pending >= self.max_inflight:
                error(model, due, DROPPED, sent=False)
                continue
            k = turn[model]
            turn[model] = k + 1 if k + 1 < sizes[model] else 0
            self.pending += 1
            on_send(due, now)
            submit(prepared[model][k], partial(done, model, due, now))

    def _done(self, model: int, intended: float, sent: float, kind: str | None, _: bytes) -> None:
        now = time.perf_counter()
        self.pending -= 1
        if kind is None:
            self.rec.ok(model, intended, sent, now)
        else:
            self.rec.error(model, intended, kind)
        if self.exhausted and self.pending == 0 and not self.finished.done():
            self.finished.set_result(None)


async def _open_loop(plan: RunPlan, transport: Transport, rec: Recorder, t0: float) -> None:
    await _OpenLoop(plan, transport, rec, t0).run()


class _ClosedLoop:
    """`concurrency` request chains: each completion callback records and sends the next."""

    def __init__(self, plan: RunPlan, transport: Transport, rec: Recorder, t0: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.t0 = t0
        self.end = t0 + plan.duration_s
        self.submit = transport.submit
        self.rec = rec
        self.prepared = [list(p) for p in plan.prepared]
        self.mix = plan.closed_mix.tolist() if plan.closed_mix is not None else [0]
        self.concurrency = plan.concurrency
        self.n = list(range(plan.concurrency))  # workers start at different points of the mix
        self.active = plan.concurrency
        self.depth = 0
        self.finished: asyncio.Future[None] = self.loop.create_future()

    async def run(self) -> None:
        delay = self.t0 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while time.perf_counter() < self.t0:  # loop timers can fire up to 1 ms early
            await asyncio.sleep(0)
        if self.active == 0:
            return
        for w in range(self.concurrency):
            self._send(w)
        await self.finished

    def _send(self, w: int) -> None:
        sent = time.perf_counter()
        if sent >= self.end:
            self.active -= 1
            if self.active == 0 and not self.finished.done():
                self.finished.set_result(None)
            return
        n = self.n[w]
        self.n[w] = n + self.concurrency
        model = self.mix[n % len(self.mix)]
        reqs = self.prepared[model]
        self.rec.on_send(sent, sent)
        self.depth += 1
        try:
            self.submit(reqs[n % len(reqs)], partial(self._done, w, model, sent))
        finally:
            self.depth -= 1

    def _done(self, w: int, model: int, sent: float, kind: str | None, _: bytes) -> None:
        now = time.perf_counter()
        if kind is None:
            self.rec.ok(model, sent, sent, now)
        else:
            self.rec.error(model, sent, kind)
        try:
            if self.depth:  # completed inside submit(): do not recurse without bound
                self.loop.call_soon(self._send, w)
            else:
                self._send(w)
        except BaseException as exc:
            if not self.finished.done():
                self.finished.set_exception(exc)
            raise


async def _closed_loop(plan: RunPlan, transport: Transport, rec: Recorder, t0: float) -> None:
    await _ClosedLoop(plan, transport, rec, t0).run()
