"""What tenancy costs on the hot paths (pure, no servers needed).

- The gateway: parsing a KServe infer request head without and with `Authorization: Bearer`
  (uncached: the HTTP door's head cache makes a repeated head free), and the per-request
  `TenantGate.check` (a dict lookup of the token hash, plus a token bucket when the tenant has
  a rate limit).
- The planner: a full plan of 10,000 models on 1,000 servers without quotas, and with the
  models spread over 100 tenants, each with a replica and a memory quota.

    .venv/bin/python -m benchmarks.tenant_overhead [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

from adapters.gateway.framing import parse_request_head
from adapters.gateway.tenancy import TenantGate, token_hash
from benchmarks.planner_scale import make_fleet
from controlplane.placement import QuotaView, Snapshot, plan
from controlplane.replicas import ModelRouting, TenantAccess

HEAD = (
    b"POST /v2/models/search.ranker/infer HTTP/1.1\r\nHost: gateway:8000\r\n"
    b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 160\r\n"
    b"Content-Length: 176"
)
TOKEN = b"tft_" + b"x" * 43


class _Lookup:
    def __init__(self, access: dict[str, TenantAccess]) -> None:
        self.access = access

    def tenant_by_token(self, digest: str) -> TenantAccess | None:
        return self.access.get(digest)


def _per_call_us(fn: object, number: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=5)  # type: ignore[arg-type]
    return min(runs) / number * 1e6


def gateway(number: int) -> None:
    with_auth = HEAD + b"\r\nAuthorization: Bearer " + TOKEN
    plain_us = _per_call_us(lambda: parse_request_head(HEAD), number)
    auth_us = _per_call_us(lambda: parse_request_head(with_auth), number)
    digest = token_hash(b"Bearer " + TOKEN)
    assert digest
    tenants = {digest: TenantAccess("search")} | {
        f"{i:064x}": TenantAccess(f"t{i}") for i in range(1000)
    }
    clock = time.monotonic
    gate = TenantGate(True, _Lookup(tenants), clock=clock)
    rt = ModelRouting(name="search.ranker", tenant="search")
    check_us = _per_call_us(lambda: gate.check("search.ranker", rt, digest), number * 10)
    limited = {digest: TenantAccess("search", requests_per_s=1e9, burst=10**9)}
    gate_rl = TenantGate(True, _Lookup(limited), clock=clock)
    bucket_us = _per_call_us(lambda: gate_rl.check("search.ranker", rt, digest), number * 10)
    print(f"request head parse, no auth header     {plain_us:7.2f} us")
    print(f"request head parse, with bearer (hash) {auth_us:7.2f} us  (+{auth_us - plain_us:.2f})")
    print(f"TenantGate.check, 1001 tenants         {check_us:7.3f} us")
    print(f"TenantGate.check with a token bucket   {bucket_us:7.3f} us")


def planner(repeat: int, models: int, servers: int) -> None:
    fleet, views = make_fleet(models, servers, seed=7)
    tenants = 100
    owned = [type(v)(**{**v.__dict__, "tenant": f"t{i % tenants}"}) for i, v in enumerate(views)]
    total_floor = sum(v.min_replicas for v in owned)
    quotas = {
        f"t{i}": QuotaView(replicas=int(total_floor / tenants * 1.2), memory_bytes=2000 << 30)
        for i in range(tenants)
    }
    for label, snap in (
        ("no quotas", Snapshot(tuple(fleet), tuple(views), {}, now=1.0)),
        ("100 tenants' quotas", Snapshot(tuple(fleet), tuple(owned), {}, now=1.0, quotas=quotas)),
    ):
        times = []
        result = None
        for _ in range(repeat):
            start = time.perf_counter()
            result = plan(snap)
            times.append(time.perf_counter() - start)
        assert result is not None
        print(
            f"full plan, {label:<20} median {statistics.median(times) * 1e3:7.1f} ms  "
            f"(unplaced models: {len(result.unplaced)}, quota-capped: {len(result.quota_capped)})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, a smaller fleet")
    args = p.parse_args()
    gateway(2_000 if args.quick else 20_000)
    if args.quick:
        planner(3, 2_000, 200)
    else:
        planner(7, 10_000, 1_000)


if __name__ == "__main__":
    main()
