"""Service-level objectives: parse `--slo`, evaluate them against a measured window.

`p95=100ms,p99=200ms,errors<0.1%` means: the 95th percentile latency is at most 100 ms, the
99th at most 200 ms, and fewer than 0.1 % of requests fail. Latency objectives accept `=`, `<=`
or `<` (all "at most", since histogram buckets make the difference moot), `pNN` or `pNN.N`, and
`max`/`mean`; units `us`, `ms`, `s`. Error objectives take `<` or `<=` and a percentage.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.errors import UsageError

_UNIT_US = {"us": 1.0, "µs": 1.0, "ms": 1_000.0, "s": 1_000_000.0}


class Kind(enum.StrEnum):
    LATENCY = "latency"
    ERRORS = "errors"


@dataclass(frozen=True)
class Objective:
    """One objective: a latency statistic at most `limit_us`, or an error rate below a limit."""

    kind: Kind
    stat: str  # "p95", "p99.9", "max", "mean", or "errors"
    limit: float  # microseconds for latency, a fraction (0.001 = 0.1 %) for errors
    inclusive: bool  # errors<=x vs errors<x; latency objectives are always inclusive
    text: str

    @property
    def quantile(self) -> float | None:
        if self.stat.startswith("p"):
            return float(self.stat[1:]) / 100.0
        return 1.0 if self.stat == "max" else None

    def describe_limit(self) -> str:
        if self.kind is Kind.ERRORS:
            return f"{'<=' if self.inclusive else '<'} {self.limit * 100:g}%"
        return f"<= {format_us(self.limit)}"


def format_us(us: float) -> str:
    if math.isnan(us):
        return "n/a"
    if us >= 1_000_000:
        return f"{us / 1e6:.3g} s"
    if us >= 1_000:
        return f"{us / 1e3:.4g} ms"
    return f"{us:.0f} µs"


_LATENCY = re.compile(
    r"(p\d{1,2}(?:\.\d+)?|max|mean)\s*(<=|=|<)\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s)"
)
_ERRORS = re.compile(r"errors?\s*(<=|<)\s*([0-9]*\.?[0-9]+)\s*(%?)")


def parse(text: str, flag: str = "--slo") -> tuple[Objective, ...]:
    """Parse a comma-separated list of objectives; a `UsageError` naming `flag` when wrong."""
    if not text or not text.strip():
        raise UsageError(flag, "empty; write e.g. p95=100ms,p99=200ms,errors<0.1%")
    out: list[Objective] = []
    for raw in text.split(","):
        part = raw.strip().lower()
        if m := _LATENCY.fullmatch(part):
            stat, _, value, unit = m.groups()
            if stat.startswith("p"):
                q = float(stat[1:])
                if not 0 < q < 100:
                    raise UsageError(flag, f"{raw.strip()!r}: a percentile must be within (0, 100)")
            limit = float(value) * _UNIT_US[unit]
            if limit <= 0:
                raise UsageError(flag, f"{raw.strip()!r}: the limit must be above zero")
            out.append(Objective(Kind.LATENCY, stat, limit, True, raw.strip()))
        elif m := _ERRORS.fullmatch(part):
            op, value, pct = m.groups()
            limit = float(value) / (100.0 if pct else 1.0)
            if not 0 <= limit <= 1:
                raise UsageError(flag, f"{raw.strip()!r}: an error rate must be within 0..100%")
            out.append(Objective(Kind.ERRORS, "errors", limit, op == "<=", raw.strip()))
        else:
            raise UsageError(
                flag,
                f"cannot read {raw.strip()!r}; objectives look like p95=100ms, p99.9=1s, "
                "max=2s, mean=50ms or errors<0.1%",
            )
    stats = [o.stat for o in out]
    dupes = sorted({s for s in stats if stats.count(s) > 1})
    if dupes:
        raise UsageError(flag, f"{', '.join(dupes)} given more than once")
    return tuple(out)


@dataclass(frozen=True)
class Verdict:
    objective: Objective
    measured: float  # microseconds or a fraction, as the objective's limit
    held: bool

    def describe_measured(self) -> str:
        if self.objective.kind is Kind.ERRORS:
            return f"{self.measured * 100:.3g}%"
        return format_us(self.measured)


@dataclass(frozen=True)
class Window:
    """What an SLO is judged on: latency statistics (µs) and request/error counts."""

    quantile_us: dict[float, float]  # q -> latency at q
    mean_us: float
    requests: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def evaluate(objectives: Sequence[Objective], window: Window) -> tuple[Verdict, ...]:
    """Judge each objective. A window with no successful request fails every latency objective."""
    out = []
    for o in objectives:
        if o.kind is Kind.ERRORS:
            rate = window.error_rate
            held = window.requests > 0 and (rate <= o.limit if o.inclusive else rate < o.limit)
            out.append(Verdict(o, rate, held))
            continue
        measured = window.mean_us if o.stat == "mean" else window.quantile_us.get(o.quantile or 1.0)
        if measured is None:
            raise KeyError(f"the window lacks quantile {o.quantile} needed by {o.text!r}")
        out.append(Verdict(o, measured, not math.isnan(measured) and measured <= o.limit))
    return tuple(out)


def quantiles_needed(objectives: Sequence[Objective]) -> list[float]:
    return sorted({q for o in objectives if (q := o.quantile) is not None})
