"""The request lifecycle every door uses (`adapters/gateway/attempt.Attempt`), tested once.

Hypothesis drives many requests at a time through a real `Router` (in-memory directory, fake
clock, real metrics) with any interleaving of what can happen to them: admission (with a
limit), sends, good replies, replica failures (503/UNAVAILABLE, connection lost), the
router's upstream-timeout sweep, client cancels and connection loss, plus late events after a
request ended. Whatever the order, each request is counted exactly once and gives back
exactly what it took: at every step the router's counters equal what the live requests hold,
and once all have ended every count is back to zero. No sockets: the doors' own tests
(test_http, test_h2door, test_grpc, test_resilience) cover their wiring to this object.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from adapters.gateway.attempt import Attempt, IllegalTransition
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from controlplane.attempts import Phase
from controlplane.replicas import ModelRouting, Replica

TIMEOUT_S = 5.0


def _replicas(model: str, n: int) -> list[Replica]:
    return [Replica(model, f"s{i}", f"http://h{i}:1", f"h{i}:2") for i in range(n)]


class DoorRequest(Attempt):
    """What a door does on each event (the HTTP door's `_Exchange` pattern), minus sockets:
    records how often it finished, answered its client, and was expired."""

    __slots__ = ("answers", "expired", "finishes")

    def __init__(self, router: Router, model: str) -> None:
        super().__init__(router, model)
        self.answers = 0
        self.finishes = 0
        self.expired = 0

    def finish(self, code: str, ok: bool | None = None) -> bool:
        did = super().finish(code, ok)
        self.finishes += did
        return did

    def reply(self, status: int) -> None:
        if not self.outcome(status not in (502, 503, 504)):
            return  # a late reply: ignored
        if status == 503 and self.retry("503"):
            return
        if self.finish(str(status)):
            self.answers += 1

    def fail(self, sent: bool) -> None:
        if not self.outcome(False):
            return
        if self.retry("connection_lost" if sent else "connect"):
            return
        if self.finish("502"):
            self.answers += 1

    def expire(self) -> None:
        self.expired += 1
        if self.finish("504", ok=False):
            self.answers += 1


class Lifecycle(RuleBasedStateMachine):
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.directory = StaticDirectory()
        self.directory.register(ModelRouting(name="a", max_queue=3))
        self.directory.register(ModelRouting(name="b"))
        self.directory.register(ModelRouting(name="seq", sequence=True))
        self.directory.put_replicas("a", _replicas("a", 3))
        self.directory.put_replicas("b", _replicas("b", 1))
        self.directory.put_replicas("seq", _replicas("seq", 2))
        self.metrics = GatewayMetrics()
        self.router = Router(
            self.directory,
            GatewayConfig(upstream_timeout_s=TIMEOUT_S, eject_after_failures=2),
            self.metrics,
            clock=lambda: self.now,
        )
        self.all: list[DoorRequest] = []
        self.refused = 0

    # --- what can happen ---------------------------------------------------------------
    @rule(target=requests, model=st.sampled_from(["a", "b", "seq"]))
    def arrive(self, model: str) -> DoorRequest:
        req = DoorRequest(self.router, model)
        self.all.append(req)
        rt = self.directory.routing(model)
        assert rt is not None
        if not req.admit(rt):
            self.refused += 1
            assert req.finish("429")
            return req
        return req

    @rule(req=requests)
    def send(self, req: DoorRequest) -> None:
        if req.phase is Phase.ADMITTED and req.replica is None:
            req.send(self.directory.replicas(req.model))

    @rule(req=requests, status=st.sampled_from([200, 400, 500, 502, 503, 504]))
    def reply(self, req: DoorRequest, status: int) -> None:
        if req.phase in (Phase.SENT, Phase.DONE):
            req.reply(status)

    @rule(req=requests, sent=st.booleans())
    def connection_fails(self, req: DoorRequest, sent: bool) -> None:
        if req.phase in (Phase.SENT, Phase.DONE):
            req.fail(sent)

    @rule(req=requests)
    def client_cancels(self, req: DoorRequest) -> None:
        # the h2 door's RST_STREAM, a lost client connection, grpcio's CancelledError
        req.cancel()

    @rule(req=consumes(requests))
    def client_connection_lost(self, req: DoorRequest) -> None:
        req.cancel()
        assert req.done

    @rule(dt=st.floats(min_value=0.0, max_value=2 * TIMEOUT_S))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.router.expire_overdue(self.now, TIMEOUT_S)

    @precondition(lambda self: any(r.phase is Phase.SENT for r in self.all))
    @rule()
    def send_twice_is_a_bug(self) -> None:
        req = next(r for r in self.all if r.phase is Phase.SENT)
        with pytest.raises(IllegalTransition):
            req.send(self.directory.replicas(req.model))
        assert req.phase is Phase.SENT  # the illegal event changed nothing

    # --- what must hold ----------------------------------------------------------------
    @invariant()
    def counters_match_live_requests(self) -> None:
        held: dict[str, int] = {}
        sent: dict[str, int] = {}
        for r in self.all:
            if r.phase in (Phase.ADMITTED, Phase.SENT):
                held[r.model] = held.get(r.model, 0) + 1
            if r.phase is Phase.SENT:
                assert r.replica is not None
                sent[r.replica.server_id] = sent.get(r.replica.server_id, 0) + 1
            assert r.finishes == (1 if r.done else 0)  # finished exactly once, if at all
            assert r.answers <= 1 and r.tries <= r.max_tries
            if r.model == "seq" or r.model == "b":
                assert r.tries <= 1  # never retried: a sequence model, or nowhere else to go
        assert self.router.model_inflight == held
        for sid, state in self.router.servers.items():
            assert state.rif == sent.get(sid, 0) == len(state.inflight)
        assert sum(self.router.replica_inflight.values()) == sum(sent.values())
        # every request counted in the metrics once it ended (not before), never twice
        counted = sum(self.metrics.requests.values())
        assert counted == sum(r.finishes for r in self.all)
        limit = 3  # model a's admission limit holds at every step
        assert held.get("a", 0) <= limit

    def teardown(self) -> None:
        for r in self.all:  # every client goes away: nothing may stay held
            r.cancel()
            r.cancel()  # a second cancel is a no-op
            assert r.done
        self.counters_match_live_requests()
        assert self.router.model_inflight == {}
        assert self.router.replica_inflight == {}
        assert all(s.rif == 0 and not s.inflight for s in self.router.servers.values())


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _router(**config: float) -> tuple[Router, StaticDirectory, list[float]]:
    now = [0.0]
    directory = StaticDirectory()
    directory.put_replicas("m", _replicas("m", 2))
    router = Router(directory, GatewayConfig(**config), GatewayMetrics(), clock=lambda: now[0])
    return router, directory, now


def test_retry_goes_to_the_other_replica_once() -> None:
    router, directory, _ = _router()
    req = DoorRequest(router, "m")
    assert req.admit(ModelRouting(name="m"))
    first = req.send(directory.replicas("m"))
    req.reply(503)
    assert req.phase is Phase.SENT and req.tries == 2
    assert req.replica is not None and req.replica.server_id != first.server_id
    req.reply(503)  # the retry failed too: answered, not retried again
    assert req.done and req.answers == 1
    assert router.metrics.retries["m", "503"] == 1
    assert router.model_inflight == {}


def test_retry_budget_spent_means_no_retry() -> None:
    router, directory, _ = _router(retry_ratio=0.0, retry_min_per_s=0.0)
    req = DoorRequest(router, "m")
    assert req.admit(ModelRouting(name="m"))
    req.send(directory.replicas("m"))
    req.fail(sent=True)
    assert req.done and req.tries == 1
    assert router.metrics.rejections["m", "retry_budget"] == 1


def test_cancel_is_not_a_replica_failure_and_not_a_latency_sample() -> None:
    router, directory, now = _router(eject_after_failures=1)
    for _ in range(5):
        req = DoorRequest(router, "m")
        assert req.admit(ModelRouting(name="m"))
        replica = req.send(directory.replicas("m"))
        now[0] += 30.0  # a client that gives up after a long wait
        assert req.cancel()
        assert router.servers[replica.server_id].failures == 0
        assert router.servers[replica.server_id].ejected_until == 0.0
    assert router.latency == {}
    assert router.metrics.requests  # counted, under the door's cancel code
    assert {k[3] for k in router.metrics.requests} == {"499"}


def test_timeout_sweep_expires_once_and_late_reply_is_ignored() -> None:
    router, directory, now = _router(upstream_timeout_s=TIMEOUT_S)
    req = DoorRequest(router, "m")
    assert req.admit(ModelRouting(name="m"))
    req.send(directory.replicas("m"))
    now[0] += TIMEOUT_S
    router.expire_overdue(now[0], TIMEOUT_S)
    router.expire_overdue(now[0], TIMEOUT_S)  # no longer tracked: not expired twice
    assert req.expired == 1 and req.done and req.answers == 1
    req.reply(200)  # the replica answers after all
    req.fail(sent=True)
    assert req.answers == 1 and req.finishes == 1
    assert router.model_inflight == {} and router.replica_inflight == {}
