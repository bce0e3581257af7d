"""A one-line progress display on stderr while a run goes (only on a terminal, not --quiet)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from loadgen.recorder import Recorder
from loadgen.slo import format_us


class Progress:
    def __init__(self, label: str, total_s: float, stream: TextIO | None = None) -> None:
        self._label = label
        self._total_s = total_s
        self._stream = stream or sys.stderr
        self._task: asyncio.Task[None] | None = None
        self._rec: Recorder | None = None

    @staticmethod
    def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
        s = stream or sys.stderr
        return not quiet and s.isatty()

    def attach(self, rec: Recorder) -> None:
        self._rec = rec
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        last_done, last_t = 0, time.perf_counter()
        while True:
            await asyncio.sleep(0.5)
            rec = self._rec
            assert rec is not None
            now = time.perf_counter()
            elapsed = max(0.0, now - rec.t0)
            rate = (rec.finished - last_done) / (now - last_t)
            last_done, last_t = rec.finished, now
            frac = min(1.0, elapsed / self._total_s) if self._total_s else 1.0
            bar = "#" * int(frac * 20)
            recent = rec.seconds[-2].latency if len(rec.seconds) >= 2 else None
            p99 = format_us(recent.quantile(0.99)) if recent and recent.count else "n/a"
            errs = sum(s.errors for s in rec.seconds)
            line = (
                f"\r{self._label} [{bar:<20}] {elapsed:5.1f}/{self._total_s:.0f}s  "
                f"{rate:7.0f} req/s  in flight {rec.inflight:5d}  errors {errs}  p99 {p99}"
            )
            self._stream.write(line + "\x1b[K")
            self._stream.flush()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._stream.write("\r\x1b[K")
            self._stream.flush()
