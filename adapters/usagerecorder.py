"""Chargeback in a running control plane: observe after every reconciler tick, flush to SQLite.

The accounting itself is pure (`controlplane.usage.Accountant`); this loop feeds it what the
reconciler believes (`controlplane.metering.observe`) and Triton's request and compute-time
counters from the `/metrics` scrapes the autopilot already makes (`TritonCapacity`, scraping
itself only servers the autopilot has not scraped within `scrape_interval_s`), and every
`flush_interval_s` adds what accrued to the store in one transaction. A SIGKILL loses at most
one flush interval; a failed flush keeps the rows for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from adapters.loadsignals import TritonCapacity
from controlplane import metering
from controlplane.reconciler import Reconciler
from controlplane.usage import Accountant, Counters, GroupBy, UsageRow, UsageStore, aggregate, merge

log = logging.getLogger(__name__)


class UsageRecorder:
    def __init__(
        self,
        reconciler: Reconciler,
        store: UsageStore,
        scraper: TritonCapacity | None,
        *,
        flush_interval_s: float = 5.0,
        scrape_interval_s: float = 10.0,
        retention_s: float = 90 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconciler = reconciler
        self._store = store
        self._scraper = scraper
        self._flush_s = flush_interval_s
        self._scrape_s = scrape_interval_s
        self._retention_s = retention_s
        self._clock = clock
        self.accountant = Accountant(max_gap_s=max(30.0, 3 * flush_interval_s))
        self._last_flush = clock()
        self._last_prune = 0.0
        self._flushing = asyncio.Lock()

    def observe(self) -> None:
        """Accrue up to now from what the reconciler believes (cheap; no I/O)."""
        counters = None
        if self._scraper is not None:
            counters = {
                sid: {m: Counters(t.requests, t.compute_us) for m, t in models.items()}
                for sid, models in self._scraper.latest().items()
            }
        state = self._reconciler.state
        self.accountant.observe(metering.observe(state, self._clock(), counters))

    async def run(self) -> None:
        while True:
            try:
                with contextlib.suppress(TimeoutError):
                    # The next tick as it comes: `wait_ticks` would wake the loop, and this
                    # loop following it would make the reconciler tick back to back.
                    await self._reconciler.next_tick(self._flush_s)
                if self._scraper is not None:
                    live = [s for s in self._reconciler.state.snapshot.servers if s.live]
                    await self._scraper.refresh(live, self._clock(), self._scrape_s)
                self.observe()
                if self._clock() - self._last_flush >= self._flush_s:
                    await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # accounting failing must never stop; the next pass retries
                log.exception("usage accounting pass failed")
                await asyncio.sleep(self._flush_s)

    async def flush(self) -> None:
        async with self._flushing:
            rows = self.accountant.drain()
            self._last_flush = self._clock()
            try:
                await self._store.add_usage(rows)
            except Exception:
                self.accountant.restore(rows)
                raise
            now = self._clock()
            if now - self._last_prune > 3600:
                self._last_prune = now
                pruned = await self._store.prune_usage(now - self._retention_s)
                if pruned:
                    log.info("usage: pruned %d row(s) older than the retention", pruned)

    async def rows(self, from_s: float, to_s: float, tenant: str | None) -> list[UsageRow]:
        """Stored rows plus what accrued since the last flush, up to this moment."""
        self.observe()
        stored = await self._store.usage(from_s, to_s, tenant)
        pending = [
            r
            for r in self.accountant.pending()
            if from_s <= r.bucket < to_s and (tenant is None or r.tenant == tenant)
        ]
        return merge(stored, pending)

    async def report(
        self, from_s: float, to_s: float, by: GroupBy, tenant: str | None
    ) -> list[dict[str, object]]:
        return aggregate(await self.rows(from_s, to_s, tenant), by)

    def totals(self) -> dict[str, UsageRow]:
        """Usage since this process started, per model (Prometheus counters)."""
        return self.accountant.totals
