"""The smallest honest emulation of the Kubernetes API endpoints `adapters.k8sfleet` uses.

No Kubernetes API server (nor kind, k3s, envtest's etcd) can run on the machines these tests run
on, so the adapter is tested against this instead: a real HTTP/1.1 server on a loopback port
that the real `kubernetes` Python client talks to. It serves exactly:

- `GET /api/v1/namespaces/{ns}/pods?labelSelector=...`: a PodList with `metadata.resourceVersion`;
- the same with `watch=true&resourceVersion=N&timeoutSeconds=T`: newline-delimited JSON events
  (ADDED/MODIFIED/DELETED) sent with chunked transfer encoding, replayed from N; a version older
  than the compaction horizon gets an `ERROR` event carrying a 410 `Expired` Status, as the real
  server does, and `expire_watches()` ends open watches the same way;
- `GET`/`PATCH /apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale` (autoscaling/v1 Scale;
  merge, strategic-merge and JSON patch content types), 404 and 403 as `Status` objects.

What it does not emulate, so the tests cannot claim it: authentication, set-based label
selectors (answered with 400), bookmarks (servers may omit them), field selectors, pagination,
and the StatefulSet controller (scaling changes `spec.replicas` only; tests add pods themselves).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based selectors only: `k=v`, `k==v`, `k!=v`, `k`, `!k`."""
    terms = [t.strip() for t in selector.split(",") if t.strip()]
    for term in terms:
        if ("=" not in term and " " in term) or "(" in term:
            raise ValueError(f"set-based selector {term!r} is not emulated")
    for term in terms:
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeCluster:
    """The emulated cluster's state: pods, StatefulSet scales and the event history.

    Survives `ApiServer` restarts, as etcd survives an API server restart.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._cond = threading.Condition()
        self._rv = 1000
        self._pods: dict[str, dict[str, Any]] = {}
        self._history: list[tuple[int, str, dict[str, Any]]] = []
        self._compacted_rv = 0
        self._epoch = 0  # bumped by expire_watches(); open watches end with a 410
        self.closing = False
        self.scales: dict[str, int] = {}
        self.forbid_scale = False
        self.list_delay_s = 0.0
        self.scale_delay_s = 0.0
        self.requests: list[Request] = []

    # ------------------------------------------------------------ test-side mutations

    def _bump(self, kind: str, pod: dict[str, Any]) -> None:
        self._rv += 1
        pod["metadata"]["resourceVersion"] = str(self._rv)
        self._history.append((self._rv, kind, json.loads(json.dumps(pod))))
        self._cond.notify_all()

    def add_pod(
        self,
        name: str,
        *,
        ip: str | None = "10.0.0.1",
        ready: bool = True,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        node: str | None = "gpu-node-1",
        phase: str = "Running",
    ) -> None:
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": f"uid-{name}",
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
            },
            "spec": {
                "nodeName": node,
                "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver"}],
            },
            "status": {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
        if ip:
            pod["status"]["podIP"] = ip
        with self._cond:
            kind = "MODIFIED" if name in self._pods else "ADDED"
            self._pods[name] = pod
            self._bump(kind, pod)

    def set_ready(self, name: str, ready: bool) -> None:
        with self._cond:
            pod = self._pods[name]
            pod["status"]["conditions"] = [
                {"type": "Ready", "status": "True" if ready else "False"}
            ]
            self._bump("MODIFIED", pod)

    def delete_pod(self, name: str) -> None:
        with self._cond:
            pod = self._pods.pop(name)
            self._bump("DELETED", pod)

    @contextlib.contextmanager
    def expire_watches(self) -> Iterator[None]:
        """Changes made inside never reach open watches: they end with a 410 instead, and the
        history up to now is compacted, so only a fresh list shows the changes."""
        with self._cond:
            self._epoch += 1
            yield
            self._compacted_rv = self._rv
            self._cond.notify_all()

    def add_statefulset(self, name: str, replicas: int) -> None:
        with self._cond:
            self.scales[name] = replicas

    def requests_to(self, method: str, path_suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    # ------------------------------------------------------------ server-side reads

    @property
    def resource_version(self) -> int:
        return self._rv

    def list_pods(self, selector: str) -> dict[str, Any]:
        with self._cond:
            items = [
                json.loads(json.dumps(p))
                for p in self._pods.values()
                if _selector_matches(selector, p["metadata"]["labels"])
            ]
            return {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def watch_events(
        self, selector: str, since: int | None, timeout_s: float
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events after `since` until the timeout, shutdown or expiry."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            epoch = self._epoch
            if since is None:
                # No resourceVersion: synthetic ADDED events for the current state first.
                start = self._rv
                initial = [
                    {"type": "ADDED", "object": json.loads(json.dumps(p))}
                    for p in self._pods.values()
                    if _selector_matches(selector, p["metadata"]["labels"])
                ]
            elif since < self._compacted_rv:
                yield {
                    "type": "ERROR",
                    "object": _status(
                        410,
                        "Expired",
                        f"too old resource version: {since} ({self._compacted_rv})",
                    ),
                }
                return
            else:
                start, initial = since, []
        yield from initial
        sent = start
        while True:
            with self._cond:
                while True:
                    if self.closing:
                        return
                    if self._epoch != epoch:
                        yield {
                            "type": "ERROR",
                            "object": _status(410, "Expired", "watch expired by the emulator"),
                        }
                        return
                    pending = [h for h in self._history if h[0] > sent]
                    if pending:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(remaining)
            for rv, kind, obj in pending:
                sent = rv
                if _selector_matches(selector, obj["metadata"]["labels"]):
                    yield {"type": kind, "object": obj}

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    @property
    def cluster(self) -> FakeCluster:
        return self.server.cluster

    def _record(self) -> tuple[list[str], dict[str, str]]:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.cluster.requests.append(
            Request(self.command, url.path, query, self.headers.get("Content-Type"))
        )
        return [p for p in url.path.split("/") if p], query

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what: str) -> None:
        self._json(404, _status(404, "NotFound", f"{what} not found"))

    def do_GET(self) -> None:
        parts, query = self._record()
        ns = self.cluster.namespace
        if parts[:4] == ["api", "v1", "namespaces", ns] and parts[4:] == ["pods"]:
            selector = query.get("labelSelector", "")
            try:
                _selector_matches(selector, {})
            except ValueError as exc:
                self._json(400, _status(400, "BadRequest", str(exc)))
                return
            if query.get("watch") in ("true", "1"):
                self._watch(selector, query)
            else:
                time.sleep(self.cluster.list_delay_s)
                self._json(200, self.cluster.list_pods(selector))
            return
        if self._scale_target(parts) is not None:
            self._scale(self._scale_target(parts) or "", None)
            return
        self._not_found(self.path)

    def do_PATCH(self) -> None:
        parts, _ = self._record()
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        name = self._scale_target(parts)
        if name is None:
            self._not_found(self.path)
            return
        self._scale(name, body)

    def _scale_target(self, parts: list[str]) -> str | None:
        ns = self.cluster.namespace
        prefix = ["apis", "apps", "v1", "namespaces", ns, "statefulsets"]
        if parts[:6] == prefix and len(parts) == 8 and parts[7] == "scale":
            return parts[6]
        return None

    def _scale(self, name: str, patch: bytes | None) -> None:
        cluster = self.cluster
        time.sleep(cluster.scale_delay_s)
        if cluster.forbid_scale:
            self._json(
                403,
                _status(
                    403,
                    "Forbidden",
                    f'statefulsets.apps "{name}" is forbidden: cannot '
                    f"{'patch' if patch else 'get'} resource statefulsets/scale",
                ),
            )
            return
        if name not in cluster.scales:
            self._not_found(f'statefulsets.apps "{name}"')
            return
        if patch is not None:
            replicas = self._patched_replicas(patch)
            if replicas is None:
                return
            cluster.scales[name] = replicas
        current = sum(
            1
            for p in cluster.list_pods("")["items"]
            if p["metadata"]["name"].startswith(f"{name}-")
        )
        self._json(
            200,
            {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    "name": name,
                    "namespace": cluster.namespace,
                    "resourceVersion": str(cluster.resource_version),
                },
                "spec": {"replicas": cluster.scales[name]},
                "status": {"replicas": current, "selector": "app.kubernetes.io/component=triton"},
            },
        )

    def _patched_replicas(self, patch: bytes) -> int | None:
        """Apply a patch the way the API server interprets its content type."""
        kind = (self.headers.get("Content-Type") or "").split(";")[0]
        try:
            doc = json.loads(patch)
            if kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(doc, dict):
                    raise ValueError("a merge patch must be a JSON object")
                replicas = doc["spec"]["replicas"]
            elif kind == "application/json-patch+json":
                if not isinstance(doc, list):
                    raise ValueError("a JSON patch must be a list of operations")
                (op,) = [o for o in doc if o.get("path") == "/spec/replicas"]
                if op.get("op") not in ("replace", "add"):
                    raise ValueError(f"unsupported op {op.get('op')!r}")
                replicas = op["value"]
            else:
                self._json(415, _status(415, "UnsupportedMediaType", f"unsupported {kind!r}"))
                return None
        except (ValueError, KeyError, TypeError) as exc:
            self._json(
                400, _status(400, "BadRequest", f"the body of the request was invalid: {exc}")
            )
            return None
        if not isinstance(replicas, int) or replicas < 0:
            self._json(
                422,
                _status(
                    422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}: must be >= 0"
                ),
            )
            return None
        return replicas

    def _watch(self, selector: str, query: dict[str, str]) -> None:
        raw_rv = query.get("resourceVersion")
        since = int(raw_rv) if raw_rv not in (None, "", "0") else None
        timeout_s = float(query.get("timeoutSeconds", "1800"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.server.track(self.connection)
        try:
            for event in self.cluster.watch_events(selector, since, timeout_s):
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            if not self.cluster.closing:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            pass  # the client went away
        finally:
            self.server.untrack(self.connection)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cluster: FakeCluster) -> None:
        self.cluster = cluster
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket) -> None:
        with self._open_lock:
            self._open.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(conn)

    def drop_open_streams(self) -> None:
        with self._open_lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class ApiServer:
    """Serves a `FakeCluster` on 127.0.0.1; `stop()` and `start()` emulate an outage."""

    def __init__(self, cluster: FakeCluster, port: int = 0) -> None:
        self.cluster = cluster
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.cluster.closing = False
        self._server = _Server(("127.0.0.1", self.port), self.cluster)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go away abruptly: refuse connections and cut open watch streams mid-way."""
        server = self._server
        if server is None:
            return
        self.cluster.closing = True
        self.cluster.wake_all()
        server.drop_open_streams()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
