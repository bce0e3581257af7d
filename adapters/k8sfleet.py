"""The Kubernetes fleet driver: Triton pods of a StatefulSet, found and scaled through the API.

Discovery is the informer pattern by hand: list the pods matching a label selector, then watch
from the list's `resourceVersion`, applying ADDED/MODIFIED/DELETED events to an in-memory view.
A watch that expires (`410 Gone`) is answered by listing again; any other failure (API server
unreachable, 5xx, timeouts) keeps the last known view and retries with jittered exponential
backoff, resuming the watch from the last version seen. Scaling goes through the StatefulSet's
`scale` subresource, the only write the chart's Role allows.

The `kubernetes` client is synchronous: every call runs in a worker thread (`asyncio.to_thread`)
with a client-side timeout, so the event loop never waits on the API server. This module is the
only place tritonfleet calls the `kubernetes` library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from controlplane.errors import (
    FieldProblem,
    FleetError,
    InvalidSpec,
    NotFound,
    Unauthorized,
)
from controlplane.fleet import FleetSnapshot, Server, ServerHealth

log = logging.getLogger(__name__)

DRIVER_NAME = "kubernetes"
CAPACITY_ANNOTATION = "tritonfleet.io/capacity-bytes"
PORT_ANNOTATIONS = {
    "http": "tritonfleet.io/http-port",
    "grpc": "tritonfleet.io/grpc-port",
    "metrics": "tritonfleet.io/metrics-port",
}
# Copied from the pod into Server.labels under these names, besides the pod's own labels.
NODE_LABEL = "tritonfleet.io/node"
PHASE_LABEL = "tritonfleet.io/phase"
# Errors that mean "the API server did not answer properly"; everything else is a bug.
_TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class K8sFleetConfig:
    """Where the fleet is and how to talk to its servers. Built once at the entry point.

    Ports are the defaults for every pod; a pod may override them with the annotations the
    chart sets (`tritonfleet.io/http-port`, ...). `capacity_bytes` likewise yields to the
    `tritonfleet.io/capacity-bytes` annotation.
    """

    namespace: str
    statefulset: str
    label_selector: str
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = 8002
    capacity_bytes: int = 0
    admin_key: str | None = None
    admin_header: str = "admin-key"
    request_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    # How long one watch request stays open (server-side timeoutSeconds); then it is re-opened
    # from the last resourceVersion. Bounds how long `stop()` can wait on a silent stream.
    watch_timeout_s: int = 60
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        problems: list[FieldProblem] = []
        for name in ("namespace", "statefulset", "label_selector"):
            if not getattr(self, name):
                problems.append(FieldProblem(name, "must not be empty"))
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if port is not None and not 0 < port < 65536:
                problems.append(FieldProblem(name, f"{port} is not a TCP port (1-65535)"))
        if self.capacity_bytes < 0:
            problems.append(FieldProblem("capacity_bytes", "must be >= 0"))
        if self.request_timeout_s <= 0 or self.connect_timeout_s <= 0:
            problems.append(FieldProblem("request_timeout_s", "timeouts must be > 0"))
        if self.watch_timeout_s < 1:
            problems.append(FieldProblem("watch_timeout_s", "must be >= 1 second"))
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            problems.append(FieldProblem("backoff_initial_s", "must be > 0 and <= backoff_max_s"))
        if problems:
            raise InvalidSpec(problems, subject="kubernetes fleet config")


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the step fixed, half random.

    The fixed half keeps a failing API server from being hammered; the random half keeps many
    control planes from retrying in lockstep.
    """

    initial_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay_s(self) -> float:
        step = min(self.max_s, self.initial_s * float(2**self.attempt))
        self.attempt += 1
        return step / 2 + self.rng.uniform(0, step / 2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True)
class ScaleStatus:
    """The StatefulSet's scale subresource: what was asked for and what exists."""

    desired: int
    current: int


class _WatchExpired(Exception):
    """The watch's resourceVersion is older than the API server keeps (410 Gone)."""


def server_from_pod(pod: client.V1Pod, config: K8sFleetConfig) -> Server | None:
    """Map one pod to the control plane's `Server`; None for a pod with no IP yet.

    Health: LIVE when the pod's Ready condition is True (with `--strict-readiness=false` that
    means Triton is up, whatever its models are doing); DOWN when it is terminating or has
    exited; STARTING otherwise.
    """
    meta = pod.metadata
    status = pod.status
    ip = status.pod_ip if status else None
    if meta is None or not meta.name or not ip:
        return None
    annotations: Mapping[str, str] = meta.annotations or {}
    phase = (status.phase if status else None) or "Unknown"

    ready = any(
        c.type == "Ready" and c.status == "True"
        for c in ((status.conditions if status else None) or [])
    )
    if meta.deletion_timestamp is not None or phase in ("Failed", "Succeeded"):
        health = ServerHealth.DOWN
    elif ready:
        health = ServerHealth.LIVE
    else:
        health = ServerHealth.STARTING

    def port(kind: str, default: int | None) -> int | None:
        raw = annotations.get(PORT_ANNOTATIONS[kind])
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            log.warning(
                "pod %s: ignoring annotation %s=%r (not an integer)",
                meta.name,
                PORT_ANNOTATIONS[kind],
                raw,
            )
            return default

    capacity = config.capacity_bytes
    if CAPACITY_ANNOTATION in annotations:
        try:
            capacity = int(annotations[CAPACITY_ANNOTATION])
        except ValueError:
            log.warning(
                "pod %s: ignoring annotation %s=%r (not an integer)",
                meta.name,
                CAPACITY_ANNOTATION,
                annotations[CAPACITY_ANNOTATION],
            )

    host = f"[{ip}]" if ":" in ip else ip
    metrics_port = port("metrics", config.metrics_port)
    labels = dict(meta.labels or {})
    labels[PHASE_LABEL] = phase
    if pod.spec is not None and pod.spec.node_name:
        labels[NODE_LABEL] = pod.spec.node_name
    return Server(
        id=meta.name,
        http_url=f"http://{host}:{port('http', config.http_port)}",
        grpc_url=f"{host}:{port('grpc', config.grpc_port)}",
        metrics_url=None if metrics_port is None else f"http://{host}:{metrics_port}/metrics",
        capacity_bytes=capacity,
        health=health,
        admin_header=config.admin_header,
        admin_key=config.admin_key,
        labels=labels,
    )


class K8sFleet:
    """`FleetDriver` over a StatefulSet's pods. Construct with an `ApiClient` the entry point
    configured (in-cluster service account, or a kubeconfig); see `in_cluster()`."""

    name = DRIVER_NAME

    def __init__(
        self,
        config: K8sFleetConfig,
        api_client: client.ApiClient,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._rng = rng or random.Random()
        # The view is written by worker threads and read by the event loop: one lock, and an
        # immutable snapshot swapped in whole so `snapshot()` never takes it.
        self._lock = threading.Lock()
        self._servers: dict[str, Server] = {}
        self._snapshot = FleetSnapshot(servers=(), driver=DRIVER_NAME)
        self._resource_version: str | None = None
        self._stopping = threading.Event()
        self._wake = asyncio.Event()
        self._watch: watch.Watch | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.last_sync_monotonic: float | None = None
        self.relists = 0
        self.api_failures = 0  # calls the API server did not answer (outages), since start

    @classmethod
    def in_cluster(cls, config: K8sFleetConfig) -> K8sFleet:
        """A driver using the pod's service account (what the chart deploys)."""
        from kubernetes import config as kube_config

        configuration = client.Configuration()
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # the kubernetes client is untyped
        return cls(config, client.ApiClient(configuration))

    # ------------------------------------------------------------------ FleetDriver

    async def start(self) -> FleetSnapshot:
        if self._task is not None and not self._task.done():
            return self._snapshot
        self._stopping.clear()
        try:
            await asyncio.to_thread(self._relist)
        except _TRANSIENT as exc:
            raise FleetError(
                f"cannot list Triton pods ({self.config.label_selector}) in namespace "
                f"{self.config.namespace!r}: {_describe(exc)}. Check that the API server is "
                "reachable and the service account may list pods there (the chart's Role)."
            ) from exc
        self._task = asyncio.create_task(self._watch_loop(), name="k8sfleet-watch")
        return self._snapshot

    async def refresh(self) -> FleetSnapshot:
        """The watch-maintained view. Never raises: while the API server is unreachable it is
        the last known view (see `last_error`), and the watch is retried right away."""
        if self.last_error is not None:
            self._wake.set()
        return self._snapshot

    def snapshot(self) -> FleetSnapshot:
        return self._snapshot

    async def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise InvalidSpec(
                [FieldProblem("replicas", f"{replicas} is negative; ask for 0 or more")],
                subject="scale request",
            )
        body = {"spec": {"replicas": replicas}}
        await self._call(
            "patch the scale of",
            self._apps.patch_namespaced_stateful_set_scale,
            self.config.statefulset,
            self.config.namespace,
            body,
            _content_type="application/merge-patch+json",
        )
        log.info(
            "statefulset %s/%s scaled to %d",
            self.config.namespace,
            self.config.statefulset,
            replicas,
        )

    async def read_scale(self) -> ScaleStatus:
        """The StatefulSet's desired and current replica counts."""
        scale = await self._call(
            "read the scale of",
            self._apps.read_namespaced_stateful_set_scale,
            self.config.statefulset,
            self.config.namespace,
        )
        return ScaleStatus(
            desired=int((scale.spec and scale.spec.replicas) or 0),
            current=int((scale.status and scale.status.replicas) or 0),
        )

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        current = self._watch
        if current is not None:
            # shuts the streaming socket down so the worker thread returns
            current.stop()  # type: ignore[no-untyped-call]  # the kubernetes client is untyped
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, timeout=self.config.request_timeout_s)
        except TimeoutError:
            log.warning(
                "k8s watch did not stop within %.1fs; abandoning it", self.config.request_timeout_s
            )

    # ------------------------------------------------------------------ internals

    async def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call in a thread, with a timeout, mapped onto tritonfleet's errors."""
        target = f"statefulset {self.config.namespace}/{self.config.statefulset}"
        timeout = (self.config.connect_timeout_s, self.config.request_timeout_s)
        try:
            return await asyncio.to_thread(method, *args, _request_timeout=timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound("statefulset", self.config.statefulset) from exc
            if exc.status in (401, 403):
                raise Unauthorized(
                    f"not allowed to {what} {target} (HTTP {exc.status}): the service account "
                    "needs get/patch on statefulsets/scale for that name (the chart's Role)"
                ) from exc
            raise FleetError(f"could not {what} {target}: {_describe(exc)}") from exc
        except _TRANSIENT as exc:
            raise FleetError(f"could not {what} {target}: {_describe(exc)}") from exc

    def _relist(self) -> None:
        """List the pods and replace the view (worker thread)."""
        pods = self._core.list_namespaced_pod(
            self.config.namespace,
            label_selector=self.config.label_selector,
            _request_timeout=(self.config.connect_timeout_s, self.config.request_timeout_s),
        )
        servers = {}
        for pod in pods.items or []:
            server = server_from_pod(pod, self.config)
            if server is not None:
                servers[server.id] = server
        with self._lock:
            self._servers = servers
            self._resource_version = pods.metadata.resource_version if pods.metadata else None
            self._publish()
        self.relists += 1
        self.last_error = None
        self.last_sync_monotonic = time.monotonic()

    def _watch_once(self) -> None:
        """Stream events from the last resourceVersion until the server closes (worker thread)."""
        stream = watch.Watch()  # type: ignore[no-untyped-call]  # the kubernetes client is untyped
        self._watch = stream
        try:
            if self._stopping.is_set():
                return
            events = stream.stream(  # type: ignore[no-untyped-call]
                self._core.list_namespaced_pod,
                self.config.namespace,
                label_selector=self.config.label_selector,
                resource_version=self._resource_version,
                allow_watch_bookmarks=True,
                # A server-side timeout also makes `Watch` raise on ERROR events (410 included)
                # instead of silently retrying with a stale version.
                timeout_seconds=self.config.watch_timeout_s,
                _request_timeout=(self.config.connect_timeout_s, self.config.watch_timeout_s + 5),
            )
            for event in events:
                self._apply(event)
                self.last_error = None
                if self._stopping.is_set():
                    stream.stop()  # type: ignore[no-untyped-call]  # the kubernetes client is untyped
        except ApiException as exc:
            if exc.status == 410:
                raise _WatchExpired(str(exc.reason)) from exc
            raise
        finally:
            self._watch = None

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event["type"]
        if kind == "BOOKMARK":
            version = event["raw_object"].get("metadata", {}).get("resourceVersion")
            if version:
                with self._lock:
                    self._resource_version = version
            return
        pod: client.V1Pod = event["object"]
        if pod.metadata is None or not pod.metadata.name:
            return
        name: str = pod.metadata.name
        server = None if kind == "DELETED" else server_from_pod(pod, self.config)
        with self._lock:
            before = self._servers.get(name)
            if server is None:
                self._servers.pop(name, None)
            else:
                self._servers[name] = server
            self._resource_version = pod.metadata.resource_version
            self._publish()
        old = before.health.value if before else "absent"
        new = server.health.value if server else "absent"
        if old != new:
            log.info("triton pod %s: %s -> %s", name, old, new)

    def _publish(self) -> None:
        """Swap in a new snapshot (caller holds the lock)."""
        servers = tuple(sorted(self._servers.values(), key=lambda s: s.id))
        self._snapshot = FleetSnapshot(servers=servers, driver=DRIVER_NAME)

    async def _watch_loop(self) -> None:
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s, self._rng)
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    await asyncio.to_thread(self._relist)
                await asyncio.to_thread(self._watch_once)
                self.last_error = None
                backoff.reset()
            except _WatchExpired as exc:
                # Events between our version and now are gone: only a fresh list is correct.
                log.info("pod watch expired (%s); listing again", exc)
                with self._lock:
                    self._resource_version = None
            except _TRANSIENT as exc:
                if self._stopping.is_set():
                    break
                self.api_failures += 1
                message = _describe(exc)
                if message != self.last_error:
                    log.warning(
                        "kubernetes API unavailable, keeping the last fleet view: %s", message
                    )
                self.last_error = message
                self._wake.clear()
                delay = backoff.next_delay_s()
                # Woken early by refresh()/stop(). asyncio.timeout, not wait_for: on 3.11 a
                # cancel landing as wait_for times out is swallowed (CPython gh-86296).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            except Exception:
                # A bug, not an outage: log it loudly but keep the view being maintained.
                log.exception("unexpected error in the pod watch; retrying")
                await asyncio.sleep(backoff.next_delay_s())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"
