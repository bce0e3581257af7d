"""Fuzzing the control API from its own OpenAPI document (schemathesis), over real HTTP.

`ServedApi` runs the real app (`create_app`) under a real uvicorn on a loopback port, over a
real SQLite store and registry, with a reconciler whose fleet is the in-memory `FakeFleet`
(an emulation: fuzzing thousands of specs through real Triton would take hours; the reconciler,
its views and the ensure path are the real code). The rest is wired as the production runtime
wires it (`adapters.runtime`: `api_context`, `autopilot`, `tenant_quotas` from `Settings`):
tenants, chargeback (`UsageRecorder`) and the dashboard's event feed and timeline are on, so the
tenant, usage, latency and event routes answer as users see them, not 501. `fuzz_operations` runs every operation with
schema-valid and schema-invalid inputs; `fuzz_lifecycle` runs the stateful machine schemathesis
derives from the document's links (register → read, update, ensure, delete).

Both check, on every response: no 5xx; the status code and Content-Type documented; the body
conforms to the documented schema; invalid input is refused (4xx); nothing is served after a
DELETE (schemathesis' `use_after_free`). With `ServedApi(api_token=...)` (auth on) the token
paths are fuzzed too: `fuzz_operations(tenancy=...)` draws a credential per call and
`fuzz_lifecycle(tenants=...)` walks the tenant routes' links (tests/api/fuzzauth.py). Shared by
tests/api/test_api_fuzz.py (limited examples) and `python -m benchmarks.api_fuzz` (long runs).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import httpx
import hypothesis
import schemathesis
import uvicorn
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from adapters.api.control import create_app
from adapters.runtime import api_context, autopilot, tenant_quotas
from adapters.settings import Settings
from adapters.sqlitestore import SqliteStore
from adapters.templatefiles import TemplateFiles
from adapters.tritonschema import ProtobufSchema
from adapters.usagerecorder import UsageRecorder
from controlplane.artifacts import ArtifactPolicy
from controlplane.configgen import Renderer
from controlplane.reconciler import Reconciler, ReconcilerConfig
from controlplane.registry import Registry
from controlplane.tenants import TenantRegistry
from tests.api.fuzzauth import (
    ADMIN,
    ADMIN_TOKEN,
    SCENARIO_TENANTS,
    Credential,
    Tenancy,
    TenantScenarios,
    credentials,
    scenario_specs,
    tenant_bodies,
)
from tests.fakes import FakeFleet, FakeTritonControl, InlineArtifacts
from tests.support import free_port_block, python_spec

MiB = 1 << 20
T = TypeVar("T")
# A spec the JSON Schema allows can still break a cross-field rule (inputs required unless an
# ensemble, batching needs max_batch_size > 0, ...) that JSON Schema cannot state: a 422 for it is
# right, so "schema-valid input must be accepted" is not checked. Everything else is.
# A 503 with Retry-After that the document promises (ensure: not READY yet) is an answer, not a
# server error; any other 5xx is.
# DELETE /v1/tenants/{name} revokes: the tenant stays readable (revoked, its models still its
# own, `rotate` re-activates it), as the document says; "deleted means 404" holds for the rest.
# schemathesis' `ignored_auth` would flag every 2xx without a valid token: an API without an
# `api_token` is open by design (a call without a token acts as the admin), and with one, the
# credentials drawn per call look "generated" to it (a valid admin token's 200 is flagged).
# `fuzzauth.Tenancy.check` states the token rules per credential instead, which is stronger.
EXCLUDED = [
    schemathesis.checks.ignored_auth,
    schemathesis.checks.positive_data_acceptance,
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.use_after_free,
]


def no_server_error(_ctx: Any, response: Any, case: Any) -> None:
    status = response.status_code
    if status < 500:
        return
    documented = str(status) in case.operation.definition.raw.get("responses", {})
    retry = "retry-after" in {k.lower() for k in response.headers}
    if not (status == 503 and documented and retry):
        raise AssertionError(f"server error {status}: {response.text[:500]}")


def gone_after_delete(ctx: Any, response: Any, case: Any) -> bool | None:
    if case.operation.path.startswith("/v1/tenants/"):
        return None
    result: bool | None = schemathesis.checks.use_after_free(ctx, response, case)
    return result


CHECKS = [no_server_error, gone_after_delete]
MAX_ENSURE_S = 0.5  # the fuzzer may ask ensure to hold 600 s; a run has no time for that
# GET /v1/events is a stream that ends only after TRITONFLEET_UI_STREAM_MAX_S (600 s by default);
# the fuzzer reads each response whole, so the served app ends each stream this soon.
STREAM_MAX_S = 0.2


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        return None


@dataclass
class ServedApi:
    """The control API on a loopback port, served from a thread with its own event loop."""

    root: Path
    servers: int = 3
    capacity_bytes: int = 1024 * MiB
    config: ReconcilerConfig = field(default_factory=lambda: ReconcilerConfig(interval_s=0.05))
    make_control: Callable[[FakeFleet], FakeTritonControl] = FakeTritonControl
    ensure_timeout_s: float = MAX_ENSURE_S
    api_token: str | None = None  # the admin token; None: the API is open (a local `up`)
    url: str = ""
    control: FakeTritonControl | None = None
    rec: Reconciler | None = None
    store: SqliteStore | None = None
    _thread: threading.Thread | None = None
    _server: _Server | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _failure: list[BaseException] = field(default_factory=list)

    def settings(self) -> Settings:
        """The production settings, but for the bounds a fuzz run cannot wait out: a short
        ensure hold, and event streams that end (with `bye`) after `STREAM_MAX_S`."""
        return Settings(
            data_dir=self.root,
            max_body_bytes=256 * 1024,
            ensure_timeout_s=self.ensure_timeout_s,
            ui_stream_max_s=STREAM_MAX_S,
            ui_stream_heartbeat_s=STREAM_MAX_S,
            usage_flush_interval_s=0.5,
            api_token=self.api_token,
        )

    def start(self) -> ServedApi:
        ready = threading.Event()
        port = free_port_block(1)
        self.url = f"http://127.0.0.1:{port}"

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            store = await SqliteStore(self.root / "db.sqlite").open()
            models = self.root / "models"
            (models / "m" / "1").mkdir(parents=True, exist_ok=True)
            (models / "m" / "1" / "model.py").write_text("x = 1\n")
            policy = ArtifactPolicy(PurePosixPath(str(models)))
            settings = self.settings()
            # Wired as `adapters.runtime.Runtime.start` wires it: tenants, chargeback and the
            # dashboard's event feed and timeline on, so every route answers as users see it.
            tenants = await TenantRegistry(store, time.time).load()
            registry = Registry(
                store, Renderer(ProtobufSchema(), TemplateFiles()), policy, time.time, tenants
            )
            fleet = FakeFleet(self.servers, self.capacity_bytes)
            self.control = self.make_control(fleet)
            self.store = store
            self.rec = rec = Reconciler(
                fleet,
                self.control,
                store,
                InlineArtifacts(),
                clock=time.time,
                rng=random.Random(0),
                config=self.config,
                autopilot=autopilot(settings),
                quotas=lambda: tenant_quotas(tenants),
            )
            tenants.subscribe(rec.wake)

            async def changed(_: str) -> None:
                rec.wake()

            registry.subscribe(changed)
            loop_task = asyncio.create_task(rec.run())
            # No Triton /metrics behind the fake fleet: usage counts replica time and memory
            # from what the reconciler believes, without request counters (scraper None).
            usage = UsageRecorder(
                rec, store, None, flush_interval_s=settings.usage_flush_interval_s
            )
            usage_task = asyncio.create_task(usage.run())
            app = create_app(api_context(settings, registry, rec, tenants, usage))
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"
            )
            self._server = _Server(config)
            serving = asyncio.create_task(self._server.serve())
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            ready.set()
            try:
                await serving
            finally:
                loop_task.cancel()
                usage_task.cancel()
                await asyncio.gather(loop_task, usage_task, return_exceptions=True)
                await rec.close()
                await store.close()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # surfaced by stop()
                self._failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="control-api", daemon=True)
        self._thread.start()
        if not ready.wait(30) or self._failure:
            raise RuntimeError(f"control API did not start: {self._failure}")
        return self

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's event loop (where the reconciler lives) and wait."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(120)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
        if self._failure:
            raise self._failure[0]


def load_schema(url: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=SchemathesisConfig())
    schema.config.base_url = url

    @schema.hook
    def map_query(_ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
        value = (query or {}).get("timeout_s")
        if isinstance(value, int | float) and value > MAX_ENSURE_S:
            assert query is not None
            query["timeout_s"] = MAX_ENSURE_S
        return query

    return schema


def operations(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


def fuzz_settings(max_examples: int, deadline_s: float | None = None) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=deadline_s is None,  # the suite's run is the same every time
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )


@dataclass
class FuzzReport:
    calls: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    def add(self, status: int) -> None:
        self.calls += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1


def fuzz_operations(
    schema: Any,
    max_examples: int,
    report: FuzzReport,
    mode: str = "all",
    tenancy: Tenancy | None = None,
) -> list[tuple[str, BaseException]]:
    """Every operation, positive and negative inputs; returns each operation's failure.

    With `tenancy` (an app with auth on) each call carries a drawn `Credential`, and its
    properties are checked too (tests/api/fuzzauth.py)."""
    from schemathesis.generation import GenerationMode

    modes = {
        "all": [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        "positive": [GenerationMode.POSITIVE],
        "negative": [GenerationMode.NEGATIVE],
    }[mode]
    failures: list[tuple[str, BaseException]] = []
    for op in operations(schema):
        strategy = op.as_strategy(generation_mode=modes[0])
        for extra in modes[1:]:
            strategy = strategy | op.as_strategy(generation_mode=extra)

        creds = credentials() if tenancy is not None else st.none()

        @hypothesis.given(case=strategy, cred=creds)
        @fuzz_settings(max_examples)
        def run(case: Any, cred: Credential | None) -> None:
            before = None
            if tenancy is not None and cred is not None:
                tenancy.prepare()
                tenancy.apply(case, cred)
                if case.method.upper() != "GET" and cred.acts_as != ADMIN:
                    before = tenancy.before()
            response = case.call_and_validate(excluded_checks=EXCLUDED, additional_checks=CHECKS)
            report.add(response.status_code)
            if tenancy is not None and cred is not None:
                tenancy.check(case, cred, response, before)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup too
            failures.append((f"{op.method.upper()} {op.path}", exc))
    return failures


def valid_specs() -> st.SearchStrategy[dict[str, Any]]:
    """Specs that pass every rule (a random spec from the JSON Schema almost never does): the
    stateful run needs registrations that succeed to reach read, update and delete."""
    names = st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)
    policy = st.fixed_dictionaries(
        {
            "min_replicas": st.integers(0, 2),
            "max_replicas": st.just(3),
            "memory_bytes": st.integers(1, 600).map(lambda n: n * MiB),
            "priority": st.integers(0, 10),
        }
    )

    def spec(name: str, pol: dict[str, Any]) -> dict[str, Any]:
        return {**python_spec(name), "policy": pol, "artifact": {"uri": "m"}}

    return st.builds(spec, names, policy)


def lifecycle_schema(url: str) -> Any:
    """The schema with valid specs mixed into the generated register/update bodies.

    Without the tenant routes: this run is the open API's (no admin token), and a tenant
    cannot be deleted, so its scenarios need fresh tenant names to replay; the tenant routes'
    links are walked by `tenant_lifecycle_schema` with `TenantScenarios`, auth on."""
    schema = load_schema(url).exclude(path_regex="^/v1/tenants")

    @schema.hook
    def before_generate_body(ctx: Any, strategy: Any) -> Any:
        if ctx.operation is not None and ctx.operation.method.upper() in ("POST", "PUT"):
            return st.one_of(strategy, valid_specs())
        return strategy

    return schema


def tenant_lifecycle_schema(url: str) -> Any:
    """The schema with the tenant routes, for an app with an admin token (`TenantScenarios`):
    tenant creations name the scenario's tenants, specs are named under their prefixes."""
    schema = load_schema(url).include(path_regex="^/v1/(tenants|models)")

    @schema.hook
    def before_generate_body(ctx: Any, strategy: Any) -> Any:
        op = ctx.operation
        if op is None or op.method.upper() not in ("POST", "PUT"):
            return strategy
        if op.path == "/v1/tenants":
            return st.one_of(strategy, tenant_bodies(), tenant_bodies())
        if op.path.startswith("/v1/models"):
            return st.one_of(strategy, scenario_specs(), scenario_specs())
        return strategy

    @schema.hook
    def before_generate_path_parameters(ctx: Any, strategy: Any) -> Any:
        op = ctx.operation
        if op is None or not op.path.startswith("/v1/tenants/"):
            return strategy
        named = st.fixed_dictionaries({"name": st.sampled_from(SCENARIO_TENANTS)})
        return st.one_of(strategy, named, named)

    return schema


def fuzz_lifecycle(
    schema: Any, max_examples: int, report: FuzzReport, tenants: TenantScenarios | None = None
) -> None:
    """The stateful machine from the document's links: sequences over one registry. With
    `tenants` (an app with an admin token), the tenant routes and their tokens too."""
    machine = schema.as_state_machine()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if tenants is not None else {}
    http = httpx.Client(timeout=30, headers=admin)

    class Machine(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            # Every scenario starts from an empty registry: hypothesis replays choice sequences
            # and needs the same calls to get the same answers.
            base = schema.config.base_url
            for record in http.get(f"{base}/v1/models").json()["models"]:
                http.delete(f"{base}/v1/models/{record['name']}")
            if tenants is not None:
                tenants.setup()

        def before_call(self, case: Any) -> None:
            super().before_call(case)
            if tenants is not None:
                tenants.before_call(case)

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            report.add(response.status_code)
            if tenants is not None:
                tenants.after_call(response, case)

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(
                response,
                additional_checks=[*(additional_checks or []), *CHECKS],
                excluded_checks=EXCLUDED,
                transport_kwargs=kwargs or None,
                recorder=getattr(self, "recorder", None),
            )

    try:
        Machine.run(
            settings=hypothesis.settings(
                fuzz_settings(max_examples), stateful_step_count=12, max_examples=max_examples
            )
        )
    finally:
        http.close()
