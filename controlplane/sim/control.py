"""The simulated reconciler and autopilot, calling the real policies the way the live ones do.

Each tick (every `interval_s`, or `tick_cost_s` after a wake, as `Reconciler.run` does):

1. **Autopilot** (`controlplane.autopilot.Autopilot.step`, step by step): feed each model's idle
   gaps into its `keepalive.IdleHistogram`, derive its keep windows, build `Knobs` and an
   `Observation` from the model's request windows, call `autoscale.decide`.
2. **Snapshot** exactly as `Reconciler._planner_snapshot` does: `wanted = max(ensure demand,
   autopilot)`, `shed_surplus` when load-driven, `blocked` during a failed load's backoff;
   placement = replicas not unloading.
3. **Plan** with `placement.plan` — only when some input changed since the last plan (the fleet,
   a model's target, a failed load). The plan is a pure function of those inputs and idempotent
   when they did not change, so this skips only plans that would have had no actions; at
   1,000 servers x 10,000 models it is what keeps an hour's simulation within minutes.
4. **Act** like `controlplane.actuator`: loads wait for a fleet-wide and a per-server slot, take
   `load_s`, may fail (backoff `base x 2^(n-1)`, jittered 0.5-1.5x, capped); unloads leave
   routing at once, wait for requests in flight (drains also for `drain_grace_s`), then free
   their memory after `unload_s`.

Only models "in play" (with a replica, a request in flight or held, recent demand, a warm floor,
or an open keep-alive window) are observed each tick; a model outside it would be decided idle
with no replica, which is what it has. Differences from the live loop: requests are recorded in
the windows on completion as the gateway's `RequestLog` does, but a model without an SLO gets a
window without quantiles (it has no use for them); `last_request_at` is the exact arrival time.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import TYPE_CHECKING

from controlplane import autoscale, batching, keepalive, placement
from controlplane.autoscale import Knobs, Observation, ScalerConfig
from controlplane.loadstats import RequestLog, Window
from controlplane.sim.engine import Engine
from controlplane.sim.metrics import Metrics
from controlplane.sim.scenario import Scenario
from controlplane.sim.serving import ModelRt, Outcome, Rep, Replica, Server
from controlplane.spec import Autoscaling, ScalingPolicy

if TYPE_CHECKING:
    from controlplane.sim.gateway import DataPlane

IDLE_GAP_S = 2.0  # Autopilot.idle_gap_s


class _Log:
    """Per-second counters of one model over the stable window (no latency histogram)."""

    __slots__ = ("busy", "completed", "errors", "lat", "rejected", "sec")

    def __init__(self, slots: int) -> None:
        self.sec = [-1] * slots
        self.completed = [0] * slots
        self.errors = [0] * slots
        self.rejected = [0] * slots
        self.lat = [0.0] * slots
        self.busy = [0.0] * slots

    def slot(self, now: float) -> int:
        s = int(now)
        i = s % len(self.sec)
        if self.sec[i] != s:
            self.sec[i] = s
            self.completed[i] = self.errors[i] = self.rejected[i] = 0
            self.lat[i] = self.busy[i] = 0.0
        return i

    def window(self, span_s: float, now: float) -> tuple[Window, float, int]:
        """The window, plus busy seconds and completions in it (for measured capacity)."""
        span = max(1, min(math.ceil(span_s), len(self.sec) - 1))
        top = int(now)
        completed = errors = rejected = 0
        lat = busy = 0.0
        for i, s in enumerate(self.sec):
            if top - span < s <= top:
                completed += self.completed[i]
                errors += self.errors[i]
                rejected += self.rejected[i]
                lat += self.lat[i]
                busy += self.busy[i]
        elapsed = (span - 1) + (now - top)
        w = Window(now, max(elapsed, 1e-3), completed, errors, rejected, lat)
        return w, busy, completed


class Control:
    def __init__(
        self,
        engine: Engine,
        scn: Scenario,
        models: list[ModelRt],
        servers: list[Server],
        metrics: Metrics,
        rng: random.Random,
    ) -> None:
        self.engine = engine
        self.scn = scn
        self.cfg = scn.reconciler
        self.models = models
        self.servers = servers
        self.metrics = metrics
        self.rng = rng
        self.dp: DataPlane | None = None
        pol = scn.policies
        self.scaler = ScalerConfig(
            stable_window_s=pol.stable_window_s, panic_window_s=pol.panic_window_s
        )
        self.policy = ScalingPolicy(pol.autoscale)
        self.shed = pol.keep_warm != "lru" and self.policy is not ScalingPolicy.STATIC
        # The simulated fleet never changes size: `auto` resolves as the reconciler's would.
        setting = "pack" if pol.placement == "best-fit" else pol.placement
        self.strategy = placement.PlacementSetting(setting).resolve(elastic=False)
        self._slots = math.ceil(max(pol.stable_window_s, pol.panic_window_s)) + 2
        self._logs: dict[int, _Log] = {}
        self._slo_log = RequestLog(self._slots)
        self.active: set[int] = {m.idx for m in models if m.group.min_replicas > 0}
        self._sig: dict[int, tuple[int, bool, bool]] = {}
        self._model_views: dict[int, placement.ModelView] = {}
        self._touched: set[int] = set()
        self._views: tuple[placement.ServerView, ...] | None = None
        self.dirty = True
        self._tick_at = 0.0
        self._load_queue: deque[Replica] = deque()
        self._loads_active = 0
        self.last_plan: placement.Plan | None = None
        self._index = {m.name: m.idx for m in models}
        self._pilot_every = pol.autopilot_interval_s
        self._pilot_at = -math.inf
        self.decisions = 0  # autoscale.decide calls
        self.memo_hits = 0  # decisions known without the call (see _pilot)
        self.memo = True  # tests turn the quiet-decision shortcut off to compare
        self.always_plan = False  # tests plan every tick to compare with skipping

    # --- what the gateway tells the control plane ---------------------------------------
    def start(self) -> None:
        self.engine.at(0.0, self._tick_event, 0.0)

    def on_cold(self, m: ModelRt) -> None:
        """`ensure`: a request found no replica; want one for `demand_ttl_s`, tick soon."""
        m.last_used = self.engine.now
        m.demand_until = self.engine.now + self.cfg.demand_ttl_s
        self.active.add(m.idx)
        self._touched.add(m.idx)
        self.engine.at(m.demand_until, self._demand_over, m)
        self.wake()

    def _demand_over(self, m: ModelRt) -> None:
        if self.engine.now >= m.demand_until:
            self._touched.add(m.idx)

    def on_arrival(self, m: ModelRt) -> None:
        self.active.add(m.idx)

    def on_end(self, m: ModelRt, outcome: Outcome, latency_s: float) -> None:
        now = self.engine.now
        slo = m.group.p95_ms is not None or m.group.p99_ms is not None
        if outcome is Outcome.REFUSED:
            if slo:
                self._slo_log.reject(m.name, now)
            log = self._log(m)
            log.rejected[log.slot(now)] += 1
            return
        ok = outcome is Outcome.COMPLETED
        if slo:
            self._slo_log.record(m.name, latency_s, ok, now)
        log = self._log(m)
        i = log.slot(now)
        log.completed[i] += 1
        log.lat[i] += latency_s
        if not ok:
            log.errors[i] += 1

    def on_busy(self, m: ModelRt, busy_s: float) -> None:
        log = self._log(m)
        log.busy[log.slot(self.engine.now)] += busy_s

    def _log(self, m: ModelRt) -> _Log:
        log = self._logs.get(m.idx)
        if log is None:
            log = self._logs[m.idx] = _Log(self._slots)
        return log

    # --- the loop ----------------------------------------------------------------------
    def wake(self) -> None:
        t = self.engine.now + self.cfg.tick_cost_s
        if t < self._tick_at:
            self._tick_at = t
            self.engine.at(t, self._tick_event, t)

    def _tick_event(self, t: float) -> None:
        if t != self._tick_at:
            return  # superseded by an earlier (woken) tick
        self.tick()
        self._tick_at = self.engine.now + self.cfg.interval_s
        self.engine.at(self._tick_at, self._tick_event, self._tick_at)

    def tick(self) -> None:
        now = self.engine.now
        self.metrics.ticks += 1
        changed = self.dirty
        sig, cache = self._sig, self._model_views
        pilot = self._pilot_every is None or now >= self._pilot_at + self._pilot_every - 1e-9
        if pilot:
            self._pilot_at = now
            todo = sorted(self.active)
        else:
            # Between autopilot steps only demand, backoff and new models change a target.
            todo = sorted(self._touched & self.active)
        self._touched.clear()
        quiet: list[int] = []
        for idx in todo:
            m = self.models[idx]
            if pilot or m.knobs is None:
                m.load = self._pilot(m, now)
            load = m.load
            demand = 1 if now < m.demand_until else 0
            wanted = demand if load is None else max(demand, load)
            blocked = now < m.retry_at
            key = (wanted, blocked, load is not None)
            if sig.get(idx) != key:
                sig[idx] = key
                cache.pop(idx, None)
                changed = True
            if (
                pilot
                and wanted == 0
                and not m.replicas
                and not m.held
                and m.inflight == 0
                and m.group.min_replicas == 0
                and not self._may_prewarm(m, now)
            ):
                quiet.append(idx)
        for idx in quiet:
            self.active.discard(idx)
            sig.pop(idx, None)
            cache.pop(idx, None)
        if not changed and not self.always_plan:
            return
        self.dirty = False
        self._plan(now)

    def _plan(self, now: float) -> None:
        """Steps 2-4: the snapshot `Reconciler._planner_snapshot` builds, the plan, the acts."""
        views = []
        current: dict[str, tuple[str, ...]] = {}
        cache, sig = self._model_views, self._sig
        fresh_s = self.cfg.interval_s
        for idx in sorted(self.active):
            m = self.models[idx]
            wanted, blocked, load_driven = sig.get(idx) or (0, now < m.retry_at, False)
            if not m.replicas and not wanted and not m.group.min_replicas:
                continue  # neither placed nor wanted: the plan would not look at it
            v = cache.get(idx)
            # last_used as the live reconciler sees it: observed once per tick.
            if v is None or m.last_used > v.last_used + fresh_s:
                g = m.group
                v = cache[idx] = placement.ModelView(
                    name=m.name,
                    memory_bytes=m.memory_bytes,
                    min_replicas=g.min_replicas,
                    max_replicas=g.max_replicas,
                    wanted=wanted,
                    shed_surplus=load_driven and self.shed,
                    priority=g.priority,
                    last_used=m.last_used,
                    blocked=blocked,
                )
            views.append(v)
            if m.replicas:
                held = m.placed
                if held is None:
                    held = m.placed = tuple(
                        r.server.id for r in m.replicas.values() if r.state <= Rep.READY
                    )
                if held:
                    current[m.name] = held
        if self._views is None:
            self._views = tuple(
                placement.ServerView(s.id, s.capacity_bytes, s.live) for s in self.servers
            )
        snap = placement.Snapshot(self._views, tuple(views), current, now, strategy=self.strategy)
        plan = placement.plan(snap)
        self.last_plan = plan
        self.metrics.plans += 1
        actions = plan.actions
        self.metrics.plan_actions += len(actions)
        for a in actions:
            self._act(a)

    def _touch(self, m: ModelRt) -> None:
        self._touched.add(m.idx)

    def preload(self, wanted: set[int]) -> None:
        """Place one replica of each of `wanted` (plus warm floors) and make them ready now."""
        views = tuple(
            placement.ModelView(
                name=m.name,
                memory_bytes=m.memory_bytes,
                min_replicas=m.group.min_replicas,
                max_replicas=m.group.max_replicas,
                wanted=1 if m.idx in wanted else 0,
                priority=m.group.priority,
            )
            for m in self.models
            if m.idx in wanted or m.group.min_replicas > 0
        )
        servers = tuple(placement.ServerView(s.id, s.capacity_bytes, s.live) for s in self.servers)
        snap = placement.Snapshot(servers, views, {}, 0.0, strategy=self.strategy)
        for a in placement.plan(snap).actions:
            m = self.models[self._index[a.model]]
            r = self._add_replica(m, self._server(a.server))
            r.state = Rep.READY
            m.ready.append(r)
            m.last_request_at = m.seen_at = 0.0
            self.active.add(m.idx)

    # --- 1. the autopilot --------------------------------------------------------------
    def _pilot(self, m: ModelRt, now: float) -> int | None:
        """The autopilot's desired replicas for `m`, None when it has no opinion (static)."""
        if self.policy is ScalingPolicy.STATIC:
            return None
        last = m.last_request_at
        if last is not None and last != m.seen_at:  # Autopilot.saw
            prev, m.seen_at = m.seen_at, last
            if prev is not None and last - prev >= IDLE_GAP_S:
                m.hist.add(last - prev)
                m.knobs = None  # new keep windows
        knobs = m.knobs
        if knobs is None:
            knobs = m.knobs = self._knobs(m)
        log = self._logs.get(m.idx)
        cfg = self.scaler
        slo = m.group.p95_ms is not None or m.group.p99_ms is not None
        if log is None:
            stable = Window(now, cfg.stable_window_s)
            panic = Window(now, cfg.panic_window_s)
            busy = 0.0
            done = 0
        elif slo:
            stable = self._slo_log.window(m.name, cfg.stable_window_s, now)
            panic = self._slo_log.window(m.name, cfg.panic_window_s, now)
            _, busy, done = log.window(cfg.stable_window_s, now)
        else:
            stable, busy, done = log.window(cfg.stable_window_s, now)
            panic = log.window(cfg.panic_window_s, now)[0]
        capacity = m.instances * done / busy if busy > 0 and done else None
        # A quiet model (nothing completed, refused, in flight or held) whose last decision was
        # also quiet, at 0 or 1 replica with a floor of at most 1, gets the same decision and
        # state again unless its keep window opened or closed: `decide` is skipped then (an
        # exact shortcut; tests run scenarios with and without it and compare).
        quiet = (
            stable.arrivals == 0
            and panic.arrivals == 0
            and m.inflight == 0
            and not m.held
            and knobs.min_replicas <= 1
            and self.scn.gateway.admission == "static"
        )
        if quiet:
            idle = last is None or not knobs.keep_windows.wanted(now - last)
            if (
                self.memo
                and m.quiet_idle is idle
                and m.load is not None
                and m.load <= 1
                and m.scale.desired == m.load
            ):
                self.memo_hits += 1
                return m.load
        self.decisions += 1
        obs = Observation(
            at=now,
            ready=len(m.ready),
            stable=stable,
            panic=panic,
            inflight=float(m.inflight),
            capacity_rps=capacity,
            last_request_at=last,
            fresh=True,
        )
        d = autoscale.decide(m.name, knobs, obs, m.scale, cfg, now)
        m.scale = d.state
        m.quiet_idle = idle if quiet else None
        if m.group.batching is not None and self.policy is ScalingPolicy.SLO:
            self._tune_batching(m, knobs, obs, d.state.capacity_peak_rps, now)
        if self.dp is not None and self.scn.gateway.admission == "auto":
            self.dp.auto_limits[m.idx] = d.admission_limit
        return d.desired

    def _tune_batching(
        self, m: ModelRt, knobs: Knobs, obs: Observation, peak: float | None, now: float
    ) -> None:
        """`Autopilot._tune_batching`: AIMD on the queue delay; the new config is a reload, so
        the old delay serves until a load time has passed."""
        bounds = m.group.batching
        assert bounds is not None
        current = batching.clamp(bounds, m.delay_us)
        step = autoscale.batching_step(
            knobs, obs, self.scaler, bounds, current, peak, now - m.delay_changed_at
        )
        if step is None:
            return
        m.delay_us, m.delay_changed_at = step.delay_us, now
        self.metrics.batching_changes += 1
        self.engine.at(now + m.load_s, self._delay_applied, (m, step.delay_us))

    def _delay_applied(self, arg: tuple[ModelRt, int]) -> None:
        m, delay_us = arg
        if m.delay_us == delay_us:
            m.delay_s = delay_us / 1e6

    def _knobs(self, m: ModelRt) -> Knobs:
        g = m.group
        a = Autoscaling()
        keep = None
        if self.scn.policies.keep_warm == "histogram":
            keep = keepalive.windows(m.hist, g.idle_to_zero_s)
        return Knobs(
            policy=self.policy,
            min_replicas=g.min_replicas,
            max_replicas=g.max_replicas,
            target_inflight=a.target_inflight,
            target_utilization=a.target_utilization,
            scale_down_delay_s=a.scale_down_delay_s,
            idle_to_zero_s=g.idle_to_zero_s,
            p95_s=g.p95_ms / 1000 if g.p95_ms else None,
            p99_s=g.p99_ms / 1000 if g.p99_ms else None,
            max_error_rate=self.scaler.default_max_error_rate,
            max_batch_size=g.max_batch_size,
            instances=g.instances,
            keep=keep,
        )

    def _may_prewarm(self, m: ModelRt, now: float) -> bool:
        """Its keep window may still open or is open: keep observing it."""
        if m.last_request_at is None or m.knobs is None:
            return False
        k = m.knobs.keep_windows
        return now - m.last_request_at < k.prewarm_s + k.keepalive_s

    # --- 4. act ------------------------------------------------------------------------
    def _act(self, a: placement.Action) -> None:
        m = self.models[self._index[a.model]]
        srv = self._server(a.server)
        r = m.replicas.get(srv.idx)
        if a.kind is placement.ActionKind.LOAD:
            if r is not None or not srv.live:
                return
            self._load_queue.append(self._add_replica(m, srv))
            self._start_loads()
            return
        if r is None or r.state >= Rep.DRAINING:
            return
        if a.evicts:
            self.metrics.evictions += 1
            self.metrics.bucket(self.engine.now).evictions += 1
        if r.state is Rep.LOADING:
            if r in self._load_queue:
                self._load_queue.remove(r)
                self._free(r)
            else:
                r.state = Rep.UNLOADING  # unloaded as soon as its load finishes
                m.placed = None
            return
        m.ready.remove(r)
        r.state = Rep.DRAINING if a.drain else Rep.UNLOADING
        m.placed = None
        if r.inflight == 0:
            self.on_drained(r)

    def _add_replica(self, m: ModelRt, srv: Server) -> Replica:
        r = Replica(m, srv, self.engine.now)
        m.replicas[srv.idx] = r
        m.placed = None
        if not srv.replicas:
            self.metrics.servers(self.engine.now, +1)
        srv.replicas[m.idx] = r
        srv.used_bytes += m.memory_bytes
        self.metrics.memory(self.engine.now, m.memory_bytes)
        self.metrics.replica_count(self.engine.now, +1)
        return r

    def on_drained(self, r: Replica) -> None:
        """Nothing in flight on a replica leaving: unload it (after the drain grace)."""
        if r.timer_at == -2.0:
            return  # already unloading
        r.timer_at = -2.0
        delay = r.model.group.unload_s
        if r.state is Rep.DRAINING:
            delay += max(0.0, self.cfg.drain_grace_s - (self.engine.now - r.since))
        r.state = Rep.UNLOADING
        self.engine.after(delay, self._unloaded, (r, r.server.epoch))

    def _unloaded(self, arg: tuple[Replica, int]) -> None:
        r, epoch = arg
        if r.server.epoch != epoch:
            return
        self.metrics.unloads += 1
        self._free(r)

    def _free(self, r: Replica) -> None:
        m, srv = r.model, r.server
        now = self.engine.now
        if m.replicas.get(srv.idx) is r:
            del m.replicas[srv.idx]
            m.placed = None
        if srv.replicas.get(m.idx) is r:
            del srv.replicas[m.idx]
            srv.used_bytes -= m.memory_bytes
            self.metrics.memory(now, -m.memory_bytes)
            self.metrics.replica_count(now, -1)
            if not srv.replicas:
                self.metrics.servers(now, -1)

    def _start_loads(self) -> None:
        q = self._load_queue
        cap, per = self.cfg.max_concurrent_loads, self.cfg.max_loads_per_server
        if not q or self._loads_active >= cap:
            return
        waiting: deque[Replica] = deque()
        while q and self._loads_active < cap:
            r = q.popleft()
            if r.server.loads_active >= per:
                waiting.append(r)
                continue
            r.server.loads_active += 1
            self._loads_active += 1
            self.engine.after(r.model.load_s, self._loaded, (r, r.server.epoch))
        waiting.extend(q)
        self._load_queue = waiting

    def _loaded(self, arg: tuple[Replica, int]) -> None:
        r, epoch = arg
        srv, m = r.server, r.model
        if srv.epoch != epoch:
            return
        now = self.engine.now
        srv.loads_active -= 1
        self._loads_active -= 1
        self._start_loads()
        if r.state is Rep.UNLOADING:
            self.on_drained(r)
            return
        if m.group.load_failure_rate and self.rng.random() < m.group.load_failure_rate:
            self.metrics.load_failures += 1
            self._free(r)
            m.failures += 1
            base, cap = self.cfg.backoff_base_s, self.cfg.backoff_max_s
            backoff = min(cap, base * 2.0 ** max(0, m.failures - 1)) * (0.5 + self.rng.random())
            m.retry_at = now + backoff
            self._touched.add(m.idx)
            self.dirty = True
            self.engine.at(m.retry_at, self._backoff_over, m)
            return
        m.failures = 0
        r.state = Rep.READY
        r.since = now
        m.ready.append(r)
        self.metrics.loads += 1
        self.metrics.bucket(now).loads += 1
        assert self.dp is not None
        self.dp.release_held(m)

    def _backoff_over(self, m: ModelRt) -> None:
        self.active.add(m.idx)
        self._touched.add(m.idx)
        self.wake()

    # --- failures ----------------------------------------------------------------------
    def _server(self, sid: str) -> Server:
        return self.servers[int(sid.rsplit("-", 1)[1])]

    def fail(self, srv: Server) -> None:
        if not srv.live:
            return
        now = self.engine.now
        self.metrics.server_failures += 1
        srv.live = False
        srv.epoch += 1
        for r in list(srv.replicas.values()):
            m = r.model
            if r in m.ready:
                m.ready.remove(r)
            if r.state is Rep.LOADING and r in self._load_queue:
                self._load_queue.remove(r)
            r.queue.clear()
            self._free(r)
        self._loads_active -= srv.loads_active
        srv.loads_active = 0
        assert self.dp is not None
        self.dp.server_failed(srv)
        self._views = None
        self.dirty = True
        self.wake()
        self._start_loads()
        self.engine.at(now + self.scn.fleet.restart_s, self._restarted, srv)

    def _restarted(self, srv: Server) -> None:
        srv.live = True
        self._views = None
        self.dirty = True
        self.wake()
