"""Where every finished request is counted: histograms per model and per second, errors by kind.

The runner calls `ok()` or `error()` once per request with three clock readings (seconds on
`time.perf_counter`): when the request was *intended* to go, when it actually went, and when it
finished. Latency is `done - intended` (what a user sees, stalls included); service time is
`done - sent` (what a closed-loop tool would report). Requests intended before the warm-up ends
are counted apart and left out of every measured statistic.

Each second of the run keeps a `ModelStats` per model (latency, successes, errors by kind), so
any run of whole seconds can be judged on its own (`loadgen.attainment` builds SLO windows from
them).

This is the hot path, so recording is a handful of integer operations and dict increments; all
summarising happens afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from loadgen.histogram import DEFAULT_BITS, Histogram

DROPPED = "dropped"  # never sent: more than --max-inflight requests were outstanding


@dataclass
class ModelStats:
    latency: Histogram
    service: Histogram
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.ok + sum(self.errors.values())

    def merge(self, other: ModelStats) -> None:
        self.latency.merge(other.latency)
        self.service.merge(other.service)
        self.ok += other.ok
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v

    @classmethod
    def merged(cls, parts: Iterable[ModelStats], bits: int = DEFAULT_BITS) -> ModelStats:
        out = cls(Histogram(bits), Histogram(bits))
        for p in parts:
            out.merge(p)
        return out


@dataclass
class SecondStats:
    """One second of the run, keyed by intended send time (completions by finish time).

    `by_model[i]` holds model i's requests of this second (its `service` histogram stays
    empty: service time is kept for the whole window only)."""

    lag: Histogram
    bits: int = DEFAULT_BITS
    sent: int = 0
    completed_ok: int = 0  # successes that *finished* in this second (throughput)
    by_model: dict[int, ModelStats] = field(default_factory=dict)

    def model(self, index: int) -> ModelStats:
        m = self.by_model.get(index)
        if m is None:
            m = self.by_model[index] = ModelStats(Histogram(self.bits), Histogram(self.bits))
        return m

    @property
    def ok(self) -> int:
        return sum(m.ok for m in self.by_model.values())

    @property
    def errors(self) -> int:
        return sum(sum(m.errors.values()) for m in self.by_model.values())

    @property
    def latency(self) -> Histogram:
        if len(self.by_model) == 1:
            return next(iter(self.by_model.values())).latency
        return Histogram.merged((m.latency for m in self.by_model.values()), self.bits)


class Recorder:
    def __init__(
        self,
        models: Sequence[str],
        t0: float,
        warmup_s: float,
        window_end_s: float,
        bits: int = DEFAULT_BITS,
    ) -> None:
        self.models = tuple(models)
        self.t0 = t0
        self.warmup_s = warmup_s
        self.bits = bits
        self._w0 = t0 + warmup_s
        self._w1 = t0 + window_end_s
        self.completed_in_window = 0  # successes that finished inside the measured window
        self.measured = [ModelStats(Histogram(bits), Histogram(bits)) for _ in self.models]
        self.warmup = [ModelStats(Histogram(bits), Histogram(bits)) for _ in self.models]
        self.lag = Histogram(bits)  # schedule lag of measured requests, µs
        self.seconds: list[SecondStats] = []
        self.inflight = 0
        self.sent = 0
        self.finished = 0

    def _second(self, t: float) -> SecondStats:
        sec = int(t - self.t0) if t > self.t0 else 0
        try:
            return self.seconds[sec]
        except IndexError:
            seconds = self.seconds
            while len(seconds) <= sec:
                seconds.append(SecondStats(Histogram(self.bits), self.bits))
            return seconds[sec]

    def on_send(self, intended: float, sent: float) -> None:
        """Called as a request leaves; records schedule lag (0 for closed loop)."""
        self.inflight += 1
        self.sent += 1
        lag_us = int((sent - intended) * 1e6)
        s = self._second(intended)
        s.sent += 1
        s.lag.record(lag_us)
        if intended - self.t0 >= self.warmup_s:
            self.lag.record(lag_us)

    def ok(self, model: int, intended: float, sent: float, done: float) -> None:
        self.inflight -= 1
        self.finished += 1
        lat_us = int((done - intended) * 1e6)
        sm = self._second(intended).model(model)
        sm.ok += 1
        sm.latency.record(lat_us)
        self._second(done).completed_ok += 1
        if self._w0 <= done < self._w1:
            self.completed_in_window += 1
        m = self.warmup[model] if intended - self.t0 < self.warmup_s else self.measured[model]
        m.ok += 1
        m.latency.record(lat_us)
        m.service.record(int((done - sent) * 1e6))

    def error(self, model: int, intended: float, kind: str, *, sent: bool = True) -> None:
        if sent:
            self.inflight -= 1
            self.finished += 1
        se = self._second(intended).model(model).errors
        se[kind] = se.get(kind, 0) + 1
        m = self.warmup[model] if intended - self.t0 < self.warmup_s else self.measured[model]
        m.errors[kind] = m.errors.get(kind, 0) + 1

    # --- read side (after the run, or for progress) --------------------------------------
    def measured_total(self) -> ModelStats:
        return ModelStats.merged(self.measured, self.bits)
