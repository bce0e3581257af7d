"""The data plane: the gateway (admission, cold hold, replica choice, retries) and Triton's
dynamic batcher on every replica.

Replica choice is the real `controlplane.routing` policy, given the same `ReplicaStats` the live
router builds (`adapters/gateway/router.py`): requests in flight from the gateway to the server,
the peak-EWMA latency of this model there, and the age of the server's oldest outstanding
request. Triton's signals (scraped metrics) and outlier ejection are not modelled: a failed
server is known to the gateway at once, and its requests are retried elsewhere.

Batcher (Triton's dynamic batcher, per replica): with an instance free, a queue of at least
`max_batch_size` goes as a full batch; else the largest preferred size that the queue reaches;
else, once the oldest request has waited `max_queue_delay_us` (at once when that is 0), the whole
queue. A batch of n takes (a + b x n) x the server's slow factor (exponential around it when the
model says so). With `fleet.gpu_slots` set, a server executes at most that many batches at once
across all its models (one GPU shared by the models packed on it); ready batches wait in FIFO
order of their replicas. Without it, models on one server never slow each other down.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from controlplane import routing
from controlplane.routing import ReplicaStats
from controlplane.sim.engine import Engine
from controlplane.sim.metrics import Metrics
from controlplane.sim.scenario import GatewaySpec
from controlplane.sim.serving import ModelRt, Outcome, Rep, Replica, Request, Server


class DataPlane:
    def __init__(
        self,
        engine: Engine,
        spec: GatewaySpec,
        metrics: Metrics,
        route_rng: random.Random,
        service_rng: random.Random,
        on_cold: Callable[[ModelRt], None],
        on_end: Callable[[ModelRt, Outcome, float], None],
        on_busy: Callable[[ModelRt, float], None],
        on_drained: Callable[[Replica], None],
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.metrics = metrics
        self.policy = routing.make(spec.routing)
        self.rng = route_rng
        self.service_rng = service_rng
        self.seq = 0
        self.auto_limits: dict[int, int | None] = {}  # model index -> autopilot admission limit
        self._on_cold = on_cold
        self._on_end = on_end
        self._on_busy = on_busy
        self._on_drained = on_drained
        self._tau = spec.latency_tau_s
        self.gpu_slots: int | None = None  # set from the fleet spec

    # --- the gateway ---------------------------------------------------------------------
    def arrive(self, req: Request) -> None:
        m = req.model
        now = self.engine.now
        self.metrics.arrived(now)
        m.last_request_at = now
        limit = (
            m.group.max_inflight if self.spec.admission == "static" else self.auto_limits.get(m.idx)
        )
        if limit is not None and m.inflight >= limit:
            self._finish(req, Outcome.REFUSED)
            return
        m.inflight += 1
        self.route(req)

    def route(self, req: Request, exclude: Server | None = None) -> None:
        m = req.model
        ready = m.ready
        if not ready:
            self._hold(req)
            return
        n = len(ready)
        if n == 1:
            r = ready[0]
        else:
            cands = ready
            if exclude is not None:
                cands = [x for x in ready if x.server is not exclude] or ready
                n = len(cands)
            if n == 1:
                r = cands[0]
            else:
                now = self.engine.now
                stats = []
                for x in cands:
                    srv = x.server
                    oldest = now - next(iter(srv.inflight.values())) if srv.inflight else 0.0
                    stats.append(ReplicaStats(srv.id, srv.rif, x.ewma_s, oldest))
                self.seq += 1
                r = cands[self.policy.choose(stats, now=now, rng=self.rng, seq=self.seq)]
        self._send(req, r)

    def _hold(self, req: Request) -> None:
        if not req.cold:
            req.cold = True
            req.model.cold_starts += 1
            self.metrics.cold(self.engine.now)
        req.held = True
        req.model.held.append(req)
        self.engine.after(self.spec.cold_hold_s, self._hold_expired, req)
        self._on_cold(req.model)

    def _hold_expired(self, req: Request) -> None:
        if req.held and not req.done:
            req.held = False
            req.model.held.remove(req)
            req.model.inflight -= 1
            self._finish(req, Outcome.TIMED_OUT)

    def release_held(self, m: ModelRt) -> None:
        """A replica of `m` became ready: route every request that was waiting for one."""
        held = m.held
        while held and m.ready:
            req = held.popleft()
            req.held = False
            self.route(req)

    def _send(self, req: Request, r: Replica) -> None:
        now = self.engine.now
        req.attempts += 1
        req.replica = r
        req.sent_s = now
        srv = r.server
        srv.rif += 1
        srv.inflight[req] = now
        r.inflight += 1
        r.queue.append(req)
        self._kick(r)

    def _finish(self, req: Request, outcome: Outcome) -> None:
        if req.done:
            raise AssertionError(f"request of {req.model.name} at {req.t0} ended twice")
        req.done = True
        latency = self.engine.now - req.t0
        self.metrics.ended(self.engine.now, outcome, latency, req.tenant)
        self._on_end(req.model, outcome, latency)

    # --- Triton's dynamic batcher ------------------------------------------------------
    def _kick(self, r: Replica) -> None:
        q = r.queue
        m = r.model
        now = self.engine.now
        slots = self.gpu_slots
        srv = r.server
        while q and r.busy < m.instances:
            if slots is not None and srv.executing >= slots:
                if r not in srv.waiting:
                    srv.waiting.append(r)
                return
            n = len(q)
            mb = m.max_batch
            if n >= mb:
                k = mb
            elif m.preferred and n >= m.preferred[0]:
                k = max(p for p in m.preferred if p <= n)
            elif m.delay_s <= 0 or now >= q[0].sent_s + m.delay_s:
                k = n
            else:
                wake = q[0].sent_s + m.delay_s
                if r.timer_at != wake:
                    r.timer_at = wake
                    self.engine.at(wake, self._timer, r)
                return
            batch = [q.popleft() for _ in range(k)]
            r.busy += 1
            srv.executing += 1
            dur = (m.a_s + m.b_s * k) * srv.slow
            if m.exponential and dur > 0:
                dur = self.service_rng.expovariate(1.0 / dur)
            self.engine.at(now + dur, self._done, (r, batch, r.server.epoch, dur))

    def _timer(self, r: Replica) -> None:
        if r.timer_at == self.engine.now:
            r.timer_at = -1.0
            self._kick(r)

    def _done(self, arg: tuple[Replica, list[Request], int, float]) -> None:
        r, batch, epoch, dur = arg
        srv = r.server
        if srv.epoch != epoch:
            return  # the server failed meanwhile; these requests were retried or failed
        now = self.engine.now
        r.busy -= 1
        srv.executing -= 1
        m = r.model
        m.last_used = now
        tau = self._tau
        for req in batch:
            srv.rif -= 1
            del srv.inflight[req]
            r.inflight -= 1
            m.inflight -= 1
            sample = now - req.sent_s
            prev = r.ewma_s
            r.ewma_s = routing.peak_ewma(prev, sample, now - r.ewma_at, tau)
            r.ewma_at = now
            self._finish(req, Outcome.COMPLETED)
        self._on_busy(m, dur)
        self._kick(r)
        waiting = srv.waiting
        while waiting and (self.gpu_slots is None or srv.executing < self.gpu_slots):
            self._kick(waiting.popleft())
        if r.inflight == 0 and r.state >= Rep.DRAINING:
            self._on_drained(r)

    # --- failures ----------------------------------------------------------------------
    def server_failed(self, srv: Server) -> None:
        """Every request on `srv` is retried elsewhere (within `retries`) or fails."""
        victims = list(srv.inflight)
        srv.inflight.clear()
        srv.rif = 0
        srv.executing = 0
        srv.waiting.clear()
        for req in victims:
            r = req.replica
            if r is not None:
                r.inflight -= 1
            if req.attempts <= self.spec.retries:
                self.metrics.retries += 1
                self.route(req, exclude=srv)
            else:
                req.model.inflight -= 1
                self._finish(req, Outcome.FAILED)
