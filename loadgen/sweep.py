"""Search for the highest request rate at which every SLO still holds.

The search is a pure state machine: `next_rate()` proposes a rate, the caller runs a step at
that rate and reports back with `observe(rate, passed)`. It grows geometrically from the start
rate until a step fails (or the ceiling is reached), then bisects between the best passing
and the lowest failing rate until they are within `precision` of each other. A step where the
generator itself fell behind its schedule counts as failed by the caller: a rate loadgen cannot
send is not a rate the server was shown to sustain.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SweepSearch:
    start_rps: float
    max_rps: float
    growth: float = 2.0
    precision: float = 0.05  # stop when (fail - pass) / pass <= precision
    max_steps: int = 20
    passed_rps: float | None = None
    failed_rps: float | None = None
    history: list[tuple[float, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.start_rps <= self.max_rps:
            raise ValueError(f"need 0 < start ({self.start_rps}) <= max ({self.max_rps})")
        if self.growth <= 1 or not 0 < self.precision < 1:
            raise ValueError("growth must be > 1 and precision within (0, 1)")

    def next_rate(self) -> float | None:
        """The next rate to try, or None when the search is over."""
        if len(self.history) >= self.max_steps:
            return None
        if self.failed_rps is None:
            if self.passed_rps is None:
                return self.start_rps
            if self.passed_rps >= self.max_rps:
                return None
            return min(self.passed_rps * self.growth, self.max_rps)
        low = self.passed_rps
        if low is None:
            # even the first rate failed: look below it, down to a floor of 1/64 of the start
            if self.failed_rps <= self.start_rps / 64:
                return None
            return self.failed_rps / self.growth
        if (self.failed_rps - low) / low <= self.precision:
            return None
        return (low + self.failed_rps) / 2

    def observe(self, rate_rps: float, passed: bool) -> None:
        self.history.append((rate_rps, passed))
        if passed:
            if self.passed_rps is None or rate_rps > self.passed_rps:
                self.passed_rps = rate_rps
        elif self.failed_rps is None or rate_rps < self.failed_rps:
            self.failed_rps = rate_rps

    @property
    def best_rps(self) -> float | None:
        """The highest rate that held (None if none did)."""
        return self.passed_rps
