"""A log-linear latency histogram in the spirit of HdrHistogram, small enough to own.

Values are non-negative integers (loadgen records microseconds). Below `2**bits` every value
has its own bucket; above, each power of two is split into `2**(bits-1)` equal buckets, so a
bucket's width is at most `2**-(bits-1)` of its lower bound. Quantiles report the bucket's
midpoint (clamped to the exact min and max), so the relative error of any quantile is at most
`2**-bits` (0.39 % with the default `bits=8`), which is "exact enough" at p99.9.

Counts live in a dict keyed by bucket index: a per-second histogram holds only the buckets it
saw, merging is a dict walk, and the JSON form stays small.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_BITS = 8


def bucket_index(value: int, bits: int = DEFAULT_BITS) -> int:
    """The bucket of `value` (>= 0) for a histogram with `bits` significant bits."""
    shift = value.bit_length() - bits
    if shift <= 0:
        return value
    return (shift << (bits - 1)) + (value >> shift)


def bucket_bounds(index: int, bits: int = DEFAULT_BITS) -> tuple[int, int]:
    """Lowest and highest value (inclusive) that land in bucket `index`."""
    if index < (1 << bits):
        return index, index
    half = 1 << (bits - 1)
    shift = index // half - 1
    top = index - shift * half
    low = top << shift
    return low, low + (1 << shift) - 1


@dataclass(frozen=True)
class Quantiles:
    """A few summary numbers of one histogram, in the histogram's unit."""

    count: int
    min: int
    max: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float


class Histogram:
    """Counts of integer values in log-linear buckets; see the module docstring for the bounds."""

    __slots__ = ("_max", "_min", "_sum", "bits", "count", "counts")

    def __init__(self, bits: int = DEFAULT_BITS) -> None:
        if not 2 <= bits <= 20:
            raise ValueError(f"histogram bits must be within 2..20, got {bits}")
        self.bits = bits
        self.counts: dict[int, int] = {}
        self.count = 0
        self._sum = 0
        self._min = 0
        self._max = 0

    def record(self, value: int) -> None:
        if value < 0:
            value = 0
        bits = self.bits
        shift = value.bit_length() - bits
        idx = value if shift <= 0 else (shift << (bits - 1)) + (value >> shift)
        counts = self.counts
        counts[idx] = counts.get(idx, 0) + 1
        if self.count == 0:
            self._min = self._max = value
        elif value < self._min:
            self._min = value
        elif value > self._max:
            self._max = value
        self.count += 1
        self._sum += value

    def merge(self, other: Histogram) -> None:
        if other.bits != self.bits:
            raise ValueError(f"cannot merge histograms of {other.bits} and {self.bits} bits")
        if other.count == 0:
            return
        for idx, n in other.counts.items():
            self.counts[idx] = self.counts.get(idx, 0) + n
        if self.count == 0:
            self._min, self._max = other._min, other._max
        else:
            self._min = min(self._min, other._min)
            self._max = max(self._max, other._max)
        self.count += other.count
        self._sum += other._sum

    @classmethod
    def merged(cls, parts: Iterable[Histogram], bits: int = DEFAULT_BITS) -> Histogram:
        out = cls(bits)
        for p in parts:
            out.merge(p)
        return out

    @property
    def min(self) -> int:
        return self._min

    @property
    def max(self) -> int:
        return self._max

    @property
    def mean(self) -> float:
        return self._sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """The nearest-rank `q`-quantile (0 < q <= 1); NaN when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            if seen >= rank:
                low, high = bucket_bounds(idx, self.bits)
                mid = (low + high) / 2
                return float(min(max(mid, self._min), self._max))
        return float(self._max)  # unreachable: counts sum to count

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Several quantiles in one walk over the buckets."""
        qs = list(qs)
        if self.count == 0:
            return [math.nan] * len(qs)
        ranks = sorted((max(1, math.ceil(q * self.count)), i) for i, q in enumerate(qs))
        out = [math.nan] * len(qs)
        seen = 0
        j = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            while j < len(ranks) and seen >= ranks[j][0]:
                low, high = bucket_bounds(idx, self.bits)
                out[ranks[j][1]] = float(min(max((low + high) / 2, self._min), self._max))
                j += 1
            if j == len(ranks):
                break
        return out

    def summary(self) -> Quantiles:
        p50, p90, p95, p99, p999 = self.quantiles([0.5, 0.9, 0.95, 0.99, 0.999])
        return Quantiles(
            count=self.count,
            min=self._min,
            max=self._max,
            mean=self.mean,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            p999=p999,
        )

    def cdf(self) -> Iterator[tuple[float, float]]:
        """(bucket upper bound, fraction of values at or below it) for every non-empty bucket."""
        seen = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            yield float(min(bucket_bounds(idx, self.bits)[1], self._max)), seen / self.count

    def to_dict(self) -> dict[str, object]:
        """A compact, lossless JSON form: bucket index -> count, plus exact min/max/sum."""
        return {
            "bits": self.bits,
            "count": self.count,
            "min": self._min,
            "max": self._max,
            "sum": self._sum,
            "buckets": {str(k): v for k, v in sorted(self.counts.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        h = cls(int(data["bits"]))
        h.counts = {int(k): int(v) for k, v in data["buckets"].items()}
        h.count = int(data["count"])
        h._min = int(data["min"])
        h._max = int(data["max"])
        h._sum = int(data["sum"])
        return h
