"""What the one request lifecycle (`adapters/gateway/attempt.Attempt`) costs per request.

    PYTHONPATH=. python -m benchmarks.gateway_lifecycle [--requests 200000]

In this process, CPU only, no sockets: a `Router` over two replicas (hot-cold policy, the
default) and the gateway's metrics. `direct` is the bookkeeping the doors did inline before
(admit, pick, begin, end, observe, release); `attempt` is the same request through an
`Attempt` subclass (admit, send, outcome, finish), including creating it, as the doors do per
request; `attempt+retry` adds a failed first attempt and its retry. Microseconds per request,
median of 5 interleaved repetitions; the difference between the first two is the lifecycle's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from adapters.gateway.attempt import Attempt
from adapters.gateway.config import GatewayConfig
from adapters.gateway.directory import StaticDirectory
from adapters.gateway.metrics import GatewayMetrics
from adapters.gateway.router import Router
from controlplane.replicas import Replica

MODEL = "double_fp32"


class _Request(Attempt):
    """A door's request object with one field of its own, as `_Exchange` has several."""

    __slots__ = ("payload",)

    def __init__(self, router: Router, model: str, payload: bytes) -> None:
        super().__init__(router, model)
        self.payload = payload


class _Handle:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def expire(self) -> None:
        pass


def _setup() -> Router:
    d = StaticDirectory()
    d.put_replicas(MODEL, [Replica(MODEL, f"s{i}", f"http://h{i}:1", f"h{i}:2") for i in (0, 1)])
    return Router(d, GatewayConfig(), GatewayMetrics())


def direct(router: Router, n: int) -> None:
    rt = router.directory.routing(MODEL)
    assert rt is not None
    replicas = router.directory.replicas(MODEL)
    metrics = router.metrics
    for _ in range(n):
        handle = _Handle(b"")
        router.admit(MODEL, rt)
        replica = router.pick(MODEL, replicas)
        start = router.begin(replica, handle)
        elapsed = router.end(MODEL, replica, handle, start, True)
        metrics.observe(MODEL, replica.server_id, "http", "200", elapsed)
        router.release(MODEL)


def attempt(router: Router, n: int) -> None:
    rt = router.directory.routing(MODEL)
    assert rt is not None
    replicas = router.directory.replicas(MODEL)
    for _ in range(n):
        req = _Request(router, MODEL, b"")
        req.admit(rt)
        req.send(replicas)
        req.outcome(True)
        req.finish("200")


def attempt_retry(router: Router, n: int) -> None:
    rt = router.directory.routing(MODEL)
    assert rt is not None
    replicas = router.directory.replicas(MODEL)
    for _ in range(n):
        req = _Request(router, MODEL, b"")
        req.admit(rt)
        req.send(replicas)
        req.outcome(True)  # counted as good, so no replica is ever ejected here
        req.retry("503", replicas)
        req.outcome(True)
        req.finish("200")


def _once(fn: Callable[[Router, int], None], n: int) -> float:
    router = _setup()
    router.budget = type(router.budget)(ratio=1.0, min_per_s=1e9)  # retries always allowed
    t0 = time.perf_counter()
    fn(router, n)
    us = (time.perf_counter() - t0) / n * 1e6
    assert router.model_inflight == {} and router.replica_inflight == {}
    return us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200_000, help="requests per repetition")
    args = ap.parse_args()
    fns = {"direct": direct, "attempt": attempt, "attempt+retry": attempt_retry}
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(5):  # interleaved, so drift from other load hits each alike
        for name, fn in fns.items():
            runs[name].append(_once(fn, args.requests))
    results = {name: statistics.median(r) for name, r in runs.items()}
    print(f"{'bookkeeping':<16}{'µs/request':>12}")
    for name, us in results.items():
        print(f"{name:<16}{us:>12.2f}")
    print(f"lifecycle's own cost: {results['attempt'] - results['direct']:+.2f} µs/request")


if __name__ == "__main__":
    main()
