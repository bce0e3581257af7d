"""When each request should be sent, and to which model: the open-loop schedule.

A load profile is a piecewise-linear rate function (constant, steps, ramps). Arrivals are the
inverse of its cumulative rate Λ(t) taken at 1, 2, 3, … (constant spacing) or at the points of a
unit-rate Poisson process (exponential spacing); a trace gives the times directly. Each arrival is
assigned a model from a fixed mix (uniform, Zipf-skewed, or named by the trace).

Everything here is pure: offsets are seconds from the start of the run, produced in chunks so
an hour-long run at 10k req/s never holds its whole schedule in memory. The runner turns offsets
into intended send times; latency is measured from those, not from when a request actually left.
"""

from __future__ import annotations

import csv
import enum
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadgen.errors import UsageError

CHUNK_S = 0.5


class Arrival(enum.StrEnum):
    CONSTANT = "constant"
    POISSON = "poisson"


@dataclass(frozen=True)
class Segment:
    """A stretch of `duration_s` seconds over which the rate moves linearly start → end."""

    start_rps: float
    end_rps: float
    duration_s: float

    def count(self, t: NDArray[Any] | float) -> NDArray[Any] | float:
        """Expected arrivals from the segment's start to `t` seconds into it."""
        slope = (self.end_rps - self.start_rps) / self.duration_s
        return self.start_rps * t + slope * t * t / 2

    def invert(self, u: NDArray[Any]) -> NDArray[Any]:
        """Times within the segment at which the expected arrival count reaches `u`."""
        slope = (self.end_rps - self.start_rps) / self.duration_s
        if abs(slope) < 1e-12:
            t = u / self.start_rps
        else:
            # root of slope/2 t² + r0 t - u = 0 in the cancellation-free form 2u / (√D + r0)
            root = np.sqrt(np.maximum(self.start_rps**2 + 2 * slope * u, 0.0))
            denom = root + self.start_rps
            t = np.divide(2 * u, denom, out=np.zeros_like(u, dtype=float), where=denom > 0)
        return np.clip(t, 0.0, self.duration_s)


@dataclass(frozen=True)
class Profile:
    """A piecewise-linear rate over time; `constant(100, 30)` is 100 req/s for 30 s."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a load profile needs at least one segment")
        for s in self.segments:
            if s.duration_s <= 0 or s.start_rps < 0 or s.end_rps < 0:
                raise ValueError(f"bad segment {s}: durations must be > 0 and rates >= 0")

    @classmethod
    def constant(cls, rate_rps: float, duration_s: float) -> Profile:
        return cls((Segment(rate_rps, rate_rps, duration_s),))

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)

    @property
    def peak_rps(self) -> float:
        return max(max(s.start_rps, s.end_rps) for s in self.segments)

    def expected_requests(self) -> float:
        return sum(float(s.count(s.duration_s)) for s in self.segments)

    def rate_at(self, t: float) -> float:
        for s in self.segments:
            if t < s.duration_s:
                return s.start_rps + (s.end_rps - s.start_rps) * t / s.duration_s
            t -= s.duration_s
        return 0.0


def parse_profile(text: str, default_duration_s: float) -> Profile:
    """Parse `--profile`: stages separated by commas.

    A stage is `RATE@DURATION` (hold a rate) or `FROM-TO@DURATION` (ramp linearly), e.g.
    `100@10s,200@10s,400@10s` (steps) or `0-1000@60s` (ramp), or a bare `RATE` that lasts the
    whole `--duration`. Durations take `ms`, `s` (default) or `m`.
    """
    segments = []
    for raw in text.split(","):
        stage = raw.strip()
        m = re.fullmatch(r"([0-9.]+)(?:\s*-\s*([0-9.]+))?(?:\s*@\s*([0-9.]+\s*[a-z]*))?", stage)
        if not m:
            raise UsageError(
                "--profile",
                f"cannot read stage {stage!r}; write RATE@DURATION or FROM-TO@DURATION, "
                "e.g. 100@10s,0-500@30s",
            )
        start = float(m.group(1))
        end = float(m.group(2)) if m.group(2) else start
        dur = parse_duration(m.group(3), "--profile") if m.group(3) else default_duration_s
        if dur <= 0:
            raise UsageError("--profile", f"stage {stage!r} has no duration")
        segments.append(Segment(start, end, dur))
    if all(s.start_rps == 0 and s.end_rps == 0 for s in segments):
        raise UsageError("--profile", "every stage has rate 0; nothing would be sent")
    return Profile(tuple(segments))


_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str, flag: str) -> float:
    """`250ms`, `10s`, `2m`, `10` (seconds) → seconds; a `UsageError` naming `flag` otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", text or "")
    if not m or m.group(2) not in _DURATION_UNITS:
        raise UsageError(flag, f"cannot read duration {text!r}; write e.g. 500ms, 10s or 2m")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


@dataclass(frozen=True)
class Chunk:
    """Arrivals due within one slice of the run: offsets in seconds and model indices."""

    offsets_s: NDArray[Any]
    models: NDArray[Any]


class ModelMix:
    """Which model each request goes to: fixed weights, e.g. Zipf(s) over the model order."""

    def __init__(self, names: Sequence[str], weights: Sequence[float] | None = None) -> None:
        if not names:
            raise ValueError("a model mix needs at least one model")
        w = np.ones(len(names)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(names),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"bad weights {weights!r} for models {list(names)}")
        self.names = tuple(names)
        self.probabilities = w / w.sum()

    @classmethod
    def zipf(cls, names: Sequence[str], s: float) -> ModelMix:
        """The i-th model (0-based) gets weight 1/(i+1)^s; s=0 is uniform."""
        return cls(names, [1.0 / (i + 1) ** s for i in range(len(names))])

    def assign(self, n: int, rng: np.random.Generator) -> NDArray[Any]:
        if len(self.names) == 1:
            return np.zeros(n, dtype=np.int32)
        return rng.choice(len(self.names), size=n, p=self.probabilities).astype(np.int32)


def arrivals(
    profile: Profile,
    arrival: Arrival,
    mix: ModelMix,
    rng: np.random.Generator,
    chunk_s: float = CHUNK_S,
) -> Iterator[Chunk]:
    """Arrivals of `profile` in time order, `chunk_s` seconds of schedule per chunk."""
    base_t = 0.0
    carry = 0.0  # expected-count position of the next arrival, relative to segment start
    for seg in profile.segments:
        # arrival k of the run happens when the cumulative expected count reaches `next_u`
        next_u = carry
        total_u = float(seg.count(seg.duration_s))
        t0 = 0.0
        while t0 < seg.duration_s:
            t1 = min(t0 + chunk_s, seg.duration_s)
            u1 = float(seg.count(t1))
            us = []
            if arrival is Arrival.CONSTANT:
                if next_u < u1:
                    n = math.ceil(u1 - next_u - 1e-12)
                    us_arr = next_u + np.arange(n, dtype=float)
                    us_arr = us_arr[us_arr < u1]
                    us.append(us_arr)
                    next_u = float(us_arr[-1]) + 1.0 if len(us_arr) else next_u
            else:
                while next_u < u1:
                    need = max(16, int((u1 - next_u) * 1.2) + 8)
                    steps = rng.exponential(1.0, size=need)
                    cand = next_u + np.concatenate(([0.0], np.cumsum(steps[:-1])))
                    inside = cand[cand < u1]
                    us.append(inside)
                    if len(inside) < len(cand):
                        next_u = float(cand[len(inside)])
                        break
                    next_u = float(cand[-1] + steps[-1])
            if us:
                u = np.concatenate(us)
                if len(u):
                    offs = base_t + seg.invert(u)
                    yield Chunk(offs, mix.assign(len(offs), rng))
            t0 = t1
        carry = next_u - total_u
        base_t += seg.duration_s


@dataclass(frozen=True)
class Trace:
    """A recorded arrival sequence: offsets (s, from the first row) and model names."""

    offsets_s: NDArray[Any]
    models: tuple[str, ...]
    model_index: NDArray[Any]

    @property
    def duration_s(self) -> float:
        return float(self.offsets_s[-1]) if len(self.offsets_s) else 0.0

    def chunks(self, speed: float = 1.0, chunk_s: float = CHUNK_S) -> Iterator[Chunk]:
        offs = self.offsets_s / speed
        if not len(offs):
            return
        edges = np.searchsorted(offs, np.arange(0.0, offs[-1] + chunk_s, chunk_s), side="left")
        edges = np.append(edges, len(offs))
        for a, b in itertools.pairwise(edges):
            if b > a:
                yield Chunk(offs[a:b], self.model_index[a:b])


def load_trace(path: Path, default_model: str | None) -> Trace:
    """Read a CSV of `timestamp[,model]` rows (header optional; seconds, any origin).

    Timestamps may be absolute (epoch seconds) or relative; the first row becomes offset 0 and
    rows are sorted. Rows without a model use `default_model` (the first `--model`).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError("--trace", f"cannot read {path}: {exc.strerror}") from exc
    times: list[float] = []
    names: list[str] = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            ts = float(row[0])
        except ValueError:
            if lineno == 1:
                continue  # a header row
            raise UsageError(
                "--trace", f"{path}:{lineno}: timestamp {row[0]!r} is not a number of seconds"
            ) from None
        model = row[1].strip() if len(row) > 1 and row[1].strip() else default_model
        if model is None:
            raise UsageError(
                "--trace", f"{path}:{lineno}: no model in the row; add one or pass --model"
            )
        times.append(ts)
        names.append(model)
    if not times:
        raise UsageError("--trace", f"{path} has no rows of `timestamp,model`")
    order = np.argsort(np.asarray(times), kind="stable")
    t = np.asarray(times)[order]
    ordered = [names[i] for i in order]
    models = tuple(dict.fromkeys(ordered))
    index = {m: i for i, m in enumerate(models)}
    return Trace(
        offsets_s=t - t[0],
        models=models,
        model_index=np.asarray([index[m] for m in ordered], dtype=np.int32),
    )
