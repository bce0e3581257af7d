"""The long API fuzz: every control-API operation and the stateful lifecycle from the OpenAPI
links, with many more examples than the suite runs (tests/api/test_api_fuzz.py).

Twice: the API open (no admin token), then with auth on (an admin token, tenants; admin,
tenant, missing and hostile tokens drawn per call, tenant routes in the linked scenarios).
Real app, uvicorn, SQLite store, registry and reconciler; the fleet is the in-memory FakeFleet
(see tests/api/fuzzing.py). Prints the calls made, the answers by status code, and every
failed check (a finding); exits 1 when there is one.

    .venv/bin/python -m benchmarks.api_fuzz [--examples 500] [--lifecycle 500] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.api.fuzzauth import ADMIN_TOKEN, Tenancy, TenantScenarios, with_names
from tests.api.fuzzing import (
    CHECKS,
    EXCLUDED,
    FuzzReport,
    ServedApi,
    fuzz_lifecycle,
    fuzz_operations,
    lifecycle_schema,
    load_schema,
    tenant_lifecycle_schema,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="examples per operation")
    parser.add_argument("--lifecycle", type=int, default=500, help="stateful scenarios")
    parser.add_argument("--quick", action="store_true", help="50 and 50: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.examples = args.lifecycle = 50
    findings = 0
    with tempfile.TemporaryDirectory() as tmp:
        api = ServedApi(Path(tmp)).start()
        try:
            ops, life = FuzzReport(), FuzzReport()
            t0 = time.monotonic()
            schema = load_schema(api.url)
            n_ops = sum(1 for _ in schema.get_all_operations())
            failures = fuzz_operations(schema, args.examples, ops)
            t1 = time.monotonic()
            try:
                fuzz_lifecycle(lifecycle_schema(api.url), args.lifecycle, life)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(("lifecycle", exc))
            t2 = time.monotonic()
        finally:
            api.stop()
        # Auth on: an admin token, tenants; credentials drawn per call (tests/api/fuzzauth.py).
        api = ServedApi(Path(tmp) / "auth", api_token=ADMIN_TOKEN).start()
        try:
            auth_ops, auth_life = FuzzReport(), FuzzReport()
            tenancy = Tenancy(api.url)
            failures += [
                (f"{op} (auth on)", exc)
                for op, exc in fuzz_operations(
                    with_names(load_schema(api.url)), args.examples, auth_ops, tenancy=tenancy
                )
            ]
            t3 = time.monotonic()
            scenarios = TenantScenarios(api.url)
            try:
                fuzz_lifecycle(
                    tenant_lifecycle_schema(api.url), args.lifecycle, auth_life, scenarios
                )
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(("tenant lifecycle", exc))
            t4 = time.monotonic()
            tenancy.close()
            scenarios.close()
        finally:
            api.stop()
    findings = len(failures)
    print(f"operations: {n_ops}, {args.examples} examples each (positive and negative)")
    print(
        f"  calls {ops.calls} in {t1 - t0:.0f} s; by status {dict(sorted(ops.by_status.items()))}"
    )
    print(f"lifecycle: {args.lifecycle} scenarios of up to 12 linked calls")
    print(
        f"  calls {life.calls} in {t2 - t1:.0f} s; by status {dict(sorted(life.by_status.items()))}"
    )
    print(f"auth on: {args.examples} examples per operation, a credential drawn per call")
    print(
        f"  calls {auth_ops.calls} in {t3 - t2:.0f} s; refused {tenancy.refused}, "
        f"cross-tenant {tenancy.cross_tenant}; by status {dict(sorted(auth_ops.by_status.items()))}"
    )
    print(f"tenant lifecycle: {args.lifecycle} scenarios of up to 12 linked calls")
    print(
        f"  calls {auth_life.calls} in {t4 - t3:.0f} s; tenant-token calls "
        f"{scenarios.tenant_calls}, revoked tokens refused {scenarios.refused_after_revoke}; "
        f"by status {dict(sorted(auth_life.by_status.items()))}"
    )
    excluded = ", ".join(c.__name__ for c in EXCLUDED)
    added = ", ".join(c.__name__ for c in CHECKS)
    print(f"checks: schemathesis defaults + {added}, without {excluded}")
    for where, exc in failures:
        print(f"\nFINDING in {where}:\n{exc}")
    print(f"\nfindings: {findings}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
