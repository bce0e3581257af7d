"""How long to keep an idle model warm, learned from its own idle times (pure).

Serverless in the Wild (Shahrad et al., ATC'20) keeps, per application, a histogram of idle
times (the gap between one request and the next after a quiet spell) and derives two windows
from it: a **pre-warm** window (the histogram's head: unload right after use, and load again
just before the next request is likely) and a **keep-alive** window (until its tail: after that,
a request is unlikely enough that the memory is better spent elsewhere). When the histogram is
not yet representative (too few idle times, or most of them beyond its range) it falls back to
one fixed keep-alive. This module is that policy for tritonfleet's models:

    hist.add(idle_s)                      # the autopilot feeds every idle gap it sees
    windows = keepalive.windows(hist, cfg, fixed_s=spec.autoscaling.idle_to_zero_s)
    windows.wanted(idle_for_s)            # should a replica be loaded right now?

Bins are `bin_s` wide (default 10 s: our loads take seconds, not the paper's minutes) and
`bins` of them make the range (default 360 x 10 s = 1 h). The head is the 5th percentile, the
tail the 99th, each with a 10% margin, as in the paper; ARIMA for out-of-range idle times is not
done: those models keep the fixed keep-alive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class HistogramConfig:
    bin_s: float = 10.0
    bins: int = 360
    head_quantile: float = 0.05
    tail_quantile: float = 0.99
    margin: float = 0.10
    min_samples: int = 10  # fewer idle times: not representative yet
    max_out_of_range: float = 0.5  # more than this share beyond the range: not representative


@dataclass(frozen=True)
class Windows:
    """After the last request: unloaded until `prewarm_s`, loaded until `prewarm_s + keepalive_s`."""

    prewarm_s: float
    keepalive_s: float
    source: str  # "histogram" | "fixed"

    def wanted(self, idle_for_s: float) -> bool:
        return self.prewarm_s <= idle_for_s < self.prewarm_s + self.keepalive_s


class IdleHistogram:
    """Idle times of one model, binned; what `windows` reads."""

    __slots__ = ("cfg", "counts", "out_of_range", "total")

    def __init__(self, cfg: HistogramConfig | None = None) -> None:
        self.cfg = cfg or HistogramConfig()
        self.counts = [0] * self.cfg.bins
        self.out_of_range = 0
        self.total = 0

    def add(self, idle_s: float) -> None:
        if not math.isfinite(idle_s) or idle_s < 0:
            return
        i = int(idle_s // self.cfg.bin_s)
        self.total += 1
        if i >= self.cfg.bins:
            self.out_of_range += 1
        else:
            self.counts[i] += 1

    def quantile_s(self, q: float) -> float:
        """Upper edge of the bin holding quantile `q` of the in-range idle times."""
        inside = self.total - self.out_of_range
        rank = max(1, math.ceil(q * inside))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return (i + 1) * self.cfg.bin_s
        return self.cfg.bins * self.cfg.bin_s


def windows(hist: IdleHistogram | None, fixed_s: float) -> Windows:
    """The pre-warm and keep-alive windows for a model with this history."""
    fixed = Windows(0.0, fixed_s, "fixed")
    if hist is None:
        return fixed
    cfg = hist.cfg
    if hist.total < cfg.min_samples or hist.out_of_range > cfg.max_out_of_range * hist.total:
        return fixed
    # Head: the bin *start* of the 5th percentile (an idle time that short must not miss);
    # tail: the upper edge of the 99th.
    head = max(0.0, hist.quantile_s(cfg.head_quantile) - cfg.bin_s) * (1 - cfg.margin)
    tail = hist.quantile_s(cfg.tail_quantile) * (1 + cfg.margin)
    if head < 2 * cfg.bin_s:
        head = 0.0  # too short to be worth an unload and a load
    return Windows(head, max(tail - head, cfg.bin_s), "histogram")
