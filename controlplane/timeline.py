"""Per-model load over time: what the autopilot measured at each step, for the dashboard.

Each autopilot step adds one `Point` per model (request rate and P50/P95/P99 over the panic
window, errors, replicas ready and wanted) and the model's SLO targets. A model's points live
in a ring of `max_points` (with a 1 s tick, the default 600 is ten minutes), so memory is
bounded by models x `max_points`; deleted models are dropped with `retain`.

Values are kept finite (NaN and infinities become None), so a view of them is plain JSON.
Each point is also encoded to its JSON row once, when it is added (once per tick), so that a
reader of the dashboard (`rows_json`) pays for joining text, never for building and encoding
what was already encoded: with 100 models x 600 points, building and encoding every read cost
50-120 ms of the event loop the gateway shares (docs/benchmarks.md, "Reading the dashboard").
Pure: the caller passes `at`; no clock, no I/O.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import islice


@dataclass(frozen=True, slots=True)
class Point:
    at: float
    rate_rps: float  # offered load (admitted or not) over the window
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    error_rate: float
    ready: int
    desired: int


@dataclass(frozen=True, slots=True)
class Targets:
    """A model's SLO as the autopilot applies it (its spec's, else the fleet-wide default)."""

    p95_s: float | None = None
    p99_s: float | None = None
    max_error_rate: float | None = None


COLUMNS = ("at", "rate_rps", "p50_s", "p95_s", "p99_s", "error_rate", "ready", "desired")


class Timeline:
    def __init__(self, max_points: int = 600) -> None:
        if max_points < 2:
            raise ValueError("a timeline keeps at least two points per model")
        self.max_points = max_points
        # Per model, two rings in step: each point's time (to find what is after `since`) and
        # its JSON row (what is sent); a point is kept as text, not as an object, so the
        # memory per point stays what it was (about 150 bytes) and a read encodes nothing.
        self._at: dict[str, deque[float]] = {}
        self._rows: dict[str, deque[str]] = {}
        self._targets: dict[str, Targets] = {}
        self.rows_encoded = 0  # points encoded so far: one per `add`, none per read

    def add(self, model: str, point: Point, targets: Targets) -> None:
        ats = self._at.get(model)
        if ats is None:
            ats = self._at[model] = deque(maxlen=self.max_points)
            self._rows[model] = deque(maxlen=self.max_points)
        kept = replace(
            point,
            rate_rps=_finite(point.rate_rps) or 0.0,
            p50_s=_finite(point.p50_s),
            p95_s=_finite(point.p95_s),
            p99_s=_finite(point.p99_s),
            error_rate=_finite(point.error_rate) or 0.0,
        )
        ats.append(kept.at)
        self._rows[model].append(encode(row(kept)))
        self.rows_encoded += 1
        self._targets[model] = Targets(
            _finite(targets.p95_s), _finite(targets.p99_s), _finite(targets.max_error_rate)
        )

    def retain(self, models: Iterable[str]) -> None:
        keep = set(models)
        for name in [m for m in self._at if m not in keep]:
            del self._at[name]
            del self._rows[name]
            self._targets.pop(name, None)

    def models(self) -> list[str]:
        return sorted(self._at)

    def targets(self, model: str) -> Targets:
        return self._targets.get(model, Targets())

    def points(
        self, model: str, since: float | None = None, limit: int | None = None
    ) -> list[Point]:
        """Points after `since` (all when None), oldest first; the newest `limit` of them
        (decoded from their rows: for readers in the process; the API sends `rows_json`)."""
        return [Point(*json.loads(r)) for r in self._newest_rows(model, since, limit)]

    def rows_json(self, model: str, since: float | None = None, limit: int | None = None) -> str:
        """`points(model, since, limit)` as a JSON array of rows in `COLUMNS` order.

        Joins the rows encoded when the points were added: the work is the rows returned
        (at most `limit`), and nothing is encoded again."""
        return "[" + ",".join(self._newest_rows(model, since, limit)) + "]"

    def _newest_rows(self, model: str, since: float | None, limit: int | None) -> list[str]:
        """The rows after `since`, at most `limit`, oldest first. Walks back from the newest,
        so a poll for what is new costs what is new."""
        ats = self._at.get(model)
        if ats is None:
            return []
        cap = len(ats) if limit is None else max(0, min(limit, len(ats)))
        n = cap
        if since is not None:
            n = 0
            for at in reversed(ats):
                if n >= cap or at <= since:
                    break
                n += 1
        rows = list(islice(reversed(self._rows[model]), n))
        rows.reverse()
        return rows


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def row(p: Point) -> list[float | int | None]:
    """A point as a row in `COLUMNS` order (the wire form: a fraction of the size of objects)."""
    return [p.at, p.rate_rps, p.p50_s, p.p95_s, p.p99_s, p.error_rate, p.ready, p.desired]


def encode(value: object) -> str:
    """Compact JSON as the control API writes it (Starlette's `JSONResponse` settings), so
    text joined from pieces encoded here is byte for byte what encoding the whole would give."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


__all__ = ["COLUMNS", "Point", "Targets", "Timeline", "encode", "row"]
