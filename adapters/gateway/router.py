"""Live per-replica state and the application of the routing policy, shared by both doors.

The policy (`controlplane.routing`) is pure; this module keeps what it reads (requests in
flight, peak-EWMA latency, oldest outstanding request, Triton signals), filters ejected
replicas, admits or sheds requests per model and spends the retry budget. Everything runs on
the gateway's one event loop, so plain attributes need no locks.

Every per-key dict stays bounded: in-flight counts drop their key at zero, and `prune` (from
the timeout watch) forgets latency and server state not touched for `FORGET_S`, so servers that left
and models no longer asked for cost nothing (and are no longer scraped).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from adapters.gateway.config import GatewayConfig
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.tenancy import TenantGate
from controlplane import routing
from controlplane.replicas import ModelRouting, Replica, ReplicaDirectory, TenantLookup
from controlplane.routing import OutlierRule, ReplicaStats, RetryBudget, ServerSignal

log = logging.getLogger(__name__)

FORGET_S = 300.0  # state untouched this long is dropped (a peak-EWMA is long decayed by then)
PRUNE_EVERY_S = 10.0


class Expirable(Protocol):
    def expire(self) -> None:
        """The request has waited longer than the upstream timeout: fail it now."""
        ...


class _ServerState:
    __slots__ = (
        "ejected_until",
        "failures",
        "inflight",
        "key",
        "last_used",
        "rif",
        "signal",
        "times_ejected",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.rif = 0
        self.inflight: dict[Expirable, float] = {}  # insertion order = start order
        self.failures = 0
        self.ejected_until = 0.0
        self.times_ejected = 0
        self.signal: ServerSignal | None = None
        self.last_used = 0.0


class Router:
    def __init__(
        self,
        directory: ReplicaDirectory,
        config: GatewayConfig,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        tenants: TenantLookup | None = None,
        admin_token_sha256: str | None = None,
    ) -> None:
        self.directory = directory
        if tenants is None and hasattr(directory, "tenant_by_token"):
            tenants = cast(TenantLookup, directory)  # a gateway apart: the remote directory
        self.gate = TenantGate(
            config.auth == "tenants", tenants, admin_token_sha256=admin_token_sha256, clock=clock
        )
        self.config = config
        self.metrics = metrics
        self.policy = routing.make(config.policy)
        self.clock = clock
        self.rng = rng or random.Random()
        self.outliers = OutlierRule(
            failures=config.eject_after_failures,
            base_ejection_s=config.eject_base_s,
            max_ejected_fraction=config.max_ejected_fraction,
        )
        self.budget = RetryBudget(ratio=config.retry_ratio, min_per_s=config.retry_min_per_s)
        self.servers: dict[str, _ServerState] = {}
        self.metrics_urls: dict[str, str] = {}  # what the signal feed scrapes
        self.latency: dict[
            tuple[str, str], tuple[float, float]
        ] = {}  # (model, server) -> (ewma, at)
        self.model_inflight: dict[str, int] = {}
        self.replica_inflight: dict[tuple[str, str], int] = {}  # (model, server): drains read it
        metrics.inflight = self.model_inflight
        metrics.registered = lambda model: directory.routing(model) is not None
        self._seq = 0
        self._window_start = 0.0
        self._window_requests = 0
        self._window_retries = 0

    # --- choosing ----------------------------------------------------------------------
    def _state(self, key: str) -> _ServerState:
        st = self.servers.get(key)
        if st is None:
            st = self.servers[key] = _ServerState(key)
        return st

    def pick(self, model: str, replicas: Sequence[Replica], exclude: str | None = None) -> Replica:
        """The replica of `model` to send to, never `exclude` unless it is the only one."""
        now = self.clock()
        cands = [r for r in replicas if r.server_id != exclude] or list(replicas)
        if len(cands) > 1:
            live = [r for r in cands if self._state(r.server_id).ejected_until <= now]
            cands = live or cands
            if len(cands) == 1:
                return cands[0]
        else:
            return cands[0]
        stats = []
        for r in cands:
            st = self._state(r.server_id)
            lat = self.latency.get((model, r.server_id))
            oldest = now - next(iter(st.inflight.values())) if st.inflight else 0.0
            stats.append(
                ReplicaStats(r.server_id, st.rif, lat[0] if lat else None, oldest, st.signal)
            )
        self._seq += 1
        return cands[self.policy.choose(stats, now=now, rng=self.rng, seq=self._seq)]

    # --- bookkeeping around one upstream attempt ---------------------------------------
    def begin(self, replica: Replica, handle: Expirable) -> float:
        st = self._state(replica.server_id)
        st.rif += 1
        if replica.metrics_url:
            self.metrics_urls[replica.server_id] = replica.metrics_url
        now = self.clock()
        st.inflight[handle] = now
        st.last_used = now
        key = (replica.model, replica.server_id)
        self.replica_inflight[key] = self.replica_inflight.get(key, 0) + 1
        self._window_requests += 1
        return now

    def end(
        self, model: str, replica: Replica, handle: Expirable, start: float, ok: bool | None
    ) -> float:
        """Record one attempt's outcome; returns its latency in seconds.

        `ok`: a good reply (feeds the latency EWMA, clears the failure streak); False: a
        replica failure (counts towards ejection); None: neither (a client cancel).
        """
        now = self.clock()
        st = self._state(replica.server_id)
        st.rif -= 1
        st.inflight.pop(handle, None)
        key = (model, replica.server_id)
        left = self.replica_inflight.get(key, 1) - 1
        if left > 0:
            self.replica_inflight[key] = left
        else:
            self.replica_inflight.pop(key, None)
        elapsed = now - start
        if ok is None:
            return elapsed
        if ok:
            st.failures = 0
            key = (model, replica.server_id)
            prev = self.latency.get(key)
            self.latency[key] = (
                routing.peak_ewma(
                    prev[0] if prev else None,
                    elapsed,
                    now - prev[1] if prev else 0.0,
                    self.config.latency_tau_s,
                ),
                now,
            )
        else:
            st.failures += 1
            if st.failures >= self.outliers.failures and st.ejected_until <= now:
                self._maybe_eject(st, now)
        return elapsed

    def _maybe_eject(self, st: _ServerState, now: float) -> None:
        ejected = sum(1 for s in self.servers.values() if s.ejected_until > now)
        if (ejected + 1) > self.outliers.max_ejected_fraction * len(self.servers):
            return
        st.times_ejected += 1
        span = self.outliers.ejection_s(st.times_ejected)
        st.ejected_until = now + span
        st.failures = 0
        self.metrics.ejections[st.key] += 1
        log.warning("replica %s: serving → ejected for %.0fs", st.key, span)

    # --- admission and retries ---------------------------------------------------------
    def admit(self, model: str, rt: ModelRouting) -> bool:
        limit = rt.max_queue if rt.max_queue is not None else self.config.default_max_queue
        n = self.model_inflight.get(model, 0)
        if limit is not None and n >= limit:
            self.metrics.reject(model, "queue_full")
            return False
        self.model_inflight[model] = n + 1
        return True

    def release(self, model: str) -> None:
        left = self.model_inflight[model] - 1
        if left > 0:
            self.model_inflight[model] = left
        else:
            del self.model_inflight[model]

    def inflight(self, model: str, server_id: str) -> int:
        """Requests to `model` on `server_id` still outstanding (the reconciler's drain)."""
        return self.replica_inflight.get((model, server_id), 0)

    def spend_retry(self, model: str, reason: str) -> bool:
        """Take one retry from the budget (counted under `reason`); False when it is spent.
        Whether a request may be retried at all is `controlplane.attempts.may_retry`."""
        now = self.clock()
        if now - self._window_start > self.budget.window_s:
            self._window_start, self._window_requests, self._window_retries = now, 0, 0
        if not self.budget.allows(self._window_requests, self._window_retries):
            self.metrics.rejections[model, "retry_budget"] += 1
            return False
        self._window_retries += 1
        self.metrics.retries[model, reason] += 1
        return True

    # --- cold models -------------------------------------------------------------------
    async def hold(self, model: str) -> Sequence[Replica]:
        """Ask the control plane to warm `model`; wait up to `cold_hold_s` for a replica."""
        timeout = self.config.cold_hold_s
        try:
            got = await asyncio.wait_for(self.directory.ensure(model, timeout), timeout + 1.0)
        except (TimeoutError, Exception) as exc:
            if not isinstance(exc, TimeoutError):
                log.warning("ensure(%s) failed: %s", model, exc)
            got = ()
        got = got or self.directory.replicas(model)
        self.metrics.cold_holds[model, "warm" if got else "timeout"] += 1
        return got

    # --- signals and timeouts ----------------------------------------------------------
    def set_signal(self, server_id: str, signal: ServerSignal) -> None:
        self._state(server_id).signal = signal

    async def watch_timeouts(self, interval_s: float = 0.25) -> None:
        """Fail requests a replica has held past the upstream timeout (one timer, not one each)."""
        limit = self.config.upstream_timeout_s
        next_prune = self.clock() + PRUNE_EVERY_S
        while True:
            await asyncio.sleep(interval_s)
            now = self.clock()
            if now >= next_prune:
                self.prune(now)
                next_prune = now + PRUNE_EVERY_S
            self.expire_overdue(now, limit)

    def expire_overdue(self, now: float, limit_s: float) -> None:
        """Expire every request a replica has held for `limit_s` or longer (one pass of the watch)."""
        for st in list(self.servers.values()):
            expired = []
            for handle, start in st.inflight.items():
                if now - start < limit_s:
                    break
                expired.append(handle)
            for handle in expired:
                try:
                    handle.expire()
                except Exception:  # one broken handle never stops the watch
                    log.exception("expiring a request to %s failed", st.key)

    def prune(self, now: float) -> None:
        """Forget latency and server state untouched for FORGET_S (servers that left, idle pairs).

        A server is kept while it has requests in flight or is ejected, so pruning never
        loses an outstanding request or shortens an ejection.
        """
        horizon = now - FORGET_S
        for key, (_, at) in list(self.latency.items()):
            if at < horizon:
                del self.latency[key]
        for sid, st in list(self.servers.items()):
            if st.last_used < horizon and not st.inflight and st.ejected_until <= now:
                del self.servers[sid]
                self.metrics_urls.pop(sid, None)
