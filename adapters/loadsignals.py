"""Per-model load signals for the autopilot: from the in-process gateway, or from Prometheus.

- `GatewaySignals` (`tritonfleet up`): the gateway in this process records every request in a
  `RequestLog`; windows come from there, requests in flight from its router, and each
  replica's measured capacity from its Triton `/metrics` (busy time per inference), scraped
  here once per tick.
- `PrometheusSignals` (a gateway in another pod, the Helm chart): the same quantities as
  PromQL over the gateway's own histograms and Triton's counters, through
  `prometheus-api-client` in a thread. A failed query makes every model stale (the autopilot
  holds); a model without series is stale too, never "zero load".
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import httpx

from adapters import promtext
from controlplane import tritonmetrics
from controlplane.autopilot import Measured
from controlplane.fleet import Server
from controlplane.loadstats import RequestLog, Window
from controlplane.spec import ModelSpec

log = logging.getLogger(__name__)

Models = Mapping[str, tuple[ModelSpec, Sequence[Server]]]


def _instances(spec: ModelSpec) -> int:
    return max(1, sum(g.count for g in spec.instance_groups))


class TritonCapacity:
    """Scrapes replicas' /metrics and turns busy time into inferences per second per replica.

    With the gateway in the same process (`tritonfleet up`), its signal feed already fetches
    every server it routes to each `signal_interval_s`: `fed_by` hands this object those
    pages (`ingest`), and a server with a page younger than the feed's interval is not fetched
    a second time."""

    def __init__(
        self,
        span_s: float = 10.0,
        timeout_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._span_s = span_s
        self._clock = clock
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._history: dict[str, deque[tuple[float, dict[str, tritonmetrics.ModelTotals]]]] = {}
        self._fresh_s = 0.0  # a page from the feed this young is not fetched again
        self._fed_at: dict[str, float] = {}  # server id -> when the feed last handed a page

    def fed_by(self, interval_s: float) -> Callable[[str, str], None]:
        """The callback a signal feed that fetches each server every `interval_s` calls with
        (server id, page); from now on such pages stand in for this object's own fetches."""
        self._fresh_s = 1.5 * interval_s  # a late feed round still counts
        return self.ingest

    def ingest(self, server_id: str, page: str) -> None:
        """Record a /metrics page someone else fetched from `server_id` just now."""
        now = self._clock()
        self._fed_at[server_id] = now
        self._record(server_id, now, page)

    async def close(self) -> None:
        await self._http.aclose()

    def latest(self) -> dict[str, dict[str, tritonmetrics.ModelTotals]]:
        """The last scrape of each server: {server id: {model: totals}} (chargeback reads it)."""
        return {sid: hist[-1][1] for sid, hist in self._history.items() if hist}

    async def refresh(self, servers: Sequence[Server], now: float, max_age_s: float) -> None:
        """Scrape the servers whose last scrape is older than `max_age_s` (the autopilot's
        scrapes count: usage accounting adds none while the autopilot scrapes anyway)."""
        stale = [
            s
            for s in servers
            if not (hist := self._history.get(s.id)) or hist[-1][0] < now - max_age_s
        ]
        await asyncio.gather(*(self._scrape(s, now) for s in stale))
        live = {s.id for s in servers}
        for sid in [k for k in self._history if k not in live]:
            del self._history[sid]
            self._fed_at.pop(sid, None)

    async def _scrape(self, server: Server, now: float) -> None:
        if not server.metrics_url:
            return
        try:
            r = await self._http.get(server.metrics_url)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            log.debug("scraping %s failed: %s", server.metrics_url, exc)
            return
        self._record(server.id, now, r.text)

    def _record(self, server_id: str, now: float, page: str) -> None:
        hist = self._history.setdefault(server_id, deque(maxlen=256))
        totals = tritonmetrics.model_totals(promtext.samples(page, tritonmetrics.MODEL_FAMILIES))
        hist.append((now, totals))
        while hist and hist[0][0] < now - 4 * self._span_s:
            hist.popleft()

    def _fed(self, server_id: str, now: float) -> bool:
        at = self._fed_at.get(server_id)
        return at is not None and now - at < self._fresh_s

    def _samples(self, server_id: str, model: str) -> list[tritonmetrics.ExecSample]:
        """Per-interval (batch, time per execution) points of `model` on one server."""
        hist = self._history.get(server_id)
        out: list[tritonmetrics.ExecSample] = []
        if not hist:
            return out
        prev = None
        for _, totals in hist:
            cur = totals.get(model)
            if prev is not None and cur is not None:
                sample = tritonmetrics.exec_sample(prev, cur)
                if sample is not None:
                    out.append(sample)
            prev = cur
        return out

    def _capacity(self, server_id: str, model: str, spec: ModelSpec, now: float) -> float | None:
        """At full batches from the fitted service time when the history allows, else at the
        batch sizes seen (a lower bound for a batching model)."""
        instances = _instances(spec)
        if spec.max_batch_size > 1:
            fit = tritonmetrics.fit_service_time(self._samples(server_id, model))
            if fit is not None:
                return tritonmetrics.capacity_at(*fit, spec.max_batch_size, instances)
        hist = self._history.get(server_id)
        if not hist or len(hist) < 2:
            return None
        cur = hist[-1][1].get(model)
        if cur is None:
            return None
        for at, totals in hist:  # the oldest sample inside the span: the longest interval
            if at >= now - self._span_s and totals is not hist[-1][1]:
                prev = totals.get(model)
                if prev is not None:
                    return tritonmetrics.capacity_rps(prev, cur, instances)
        return None

    async def measure(self, models: Models, now: float) -> dict[str, float | None]:
        servers = {s.id: s for _, held in models.values() for s in held}
        await asyncio.gather(
            *(self._scrape(s, now) for s in servers.values() if not self._fed(s.id, now))
        )
        for sid in [k for k in self._history if k not in servers]:
            del self._history[sid]
            self._fed_at.pop(sid, None)
        out: dict[str, float | None] = {}
        for name, (spec, held) in models.items():
            caps = [c for s in held if (c := self._capacity(s.id, name, spec, now)) is not None]
            out[name] = sum(caps) / len(caps) if caps else None
        return out


class GatewaySignals:
    """`LoadSignals` over the in-process gateway's request log and router."""

    def __init__(
        self, requests: RequestLog, inflight: Mapping[str, int], capacity: TritonCapacity
    ) -> None:
        self._log = requests
        self._inflight = inflight
        self._capacity = capacity

    async def read(
        self, models: Models, stable_s: float, panic_s: float, now: float
    ) -> Mapping[str, Measured]:
        self._log.retain(models)
        caps = await self._capacity.measure(models, now)
        return {
            name: Measured(
                stable=self._log.window(name, stable_s, now),
                panic=self._log.window(name, panic_s, now),
                inflight=float(self._inflight.get(name, 0)),
                last_request_at=self._log.last_request_at(name),
                capacity_rps=caps.get(name),
            )
            for name in models
        }


def _queries(span_s: float) -> dict[str, str]:
    w = f"{max(1, math.ceil(span_s))}s"
    ok = 'code=~"200|OK"'
    return {
        "completed": f"sum by (model) (rate(tritonfleet_gateway_requests_total[{w}]))",
        "ok": f"sum by (model) (rate(tritonfleet_gateway_requests_total{{{ok}}}[{w}]))",
        "rejected": "sum by (model) (rate(tritonfleet_gateway_rejections_total"
        f'{{reason="queue_full"}}[{w}]))',
        "latency_sum": "sum by (model) (rate(tritonfleet_gateway_request_duration_seconds_sum"
        f"[{w}]))",
        "p95": "histogram_quantile(0.95, sum by (model, le) (rate("
        f"tritonfleet_gateway_request_duration_seconds_bucket[{w}])))",
        "p99": "histogram_quantile(0.99, sum by (model, le) (rate("
        f"tritonfleet_gateway_request_duration_seconds_bucket[{w}])))",
    }


_CAPACITY = (
    "sum by (model) (rate(nv_inference_count[{w}])) / "
    "(sum by (model) (rate(nv_inference_compute_infer_duration_us[{w}])) / 1e6)"
)
_INFLIGHT = "sum by (model) (tritonfleet_gateway_inflight)"


class PrometheusSignals:
    """`LoadSignals` read from Prometheus (the gateway runs apart from the control plane)."""

    def __init__(self, url: str, bearer_token: str | None = None, timeout_s: float = 5.0) -> None:
        from prometheus_api_client import PrometheusConnect

        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
        self._prom = PrometheusConnect(url=url, headers=headers, disable_ssl=True)
        self._timeout_s = timeout_s
        self._last_active: dict[str, float] = {}

    def _query(self, q: str) -> dict[str, float]:
        out: dict[str, float] = {}
        timeout = f"{max(1, round(self._timeout_s))}s"  # Prometheus durations take no decimals
        for s in self._prom.custom_query(query=q, params={"timeout": timeout}):
            model = s.get("metric", {}).get("model")
            try:
                v = float(s["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if model and math.isfinite(v):
                out[model] = v
        return out

    def _window(self, span_s: float, now: float) -> dict[str, Window]:
        r = {k: self._query(q) for k, q in _queries(span_s).items()}
        out = {}
        for model, rate in r["completed"].items():
            completed = round(rate * span_s)
            out[model] = Window(
                at=now,
                span_s=span_s,
                completed=completed,
                errors=max(0, completed - round(r["ok"].get(model, 0.0) * span_s)),
                rejected=round(r["rejected"].get(model, 0.0) * span_s),
                latency_sum_s=r["latency_sum"].get(model, 0.0) * span_s,
                p95_s=r["p95"].get(model),
                p99_s=r["p99"].get(model),
            )
        return out

    def _read(
        self, stable_s: float, panic_s: float, now: float
    ) -> tuple[dict[str, Window], dict[str, Window], dict[str, float], dict[str, float]]:
        stable, panic = self._window(stable_s, now), self._window(panic_s, now)
        capacity = self._query(_CAPACITY.format(w=f"{max(5, math.ceil(panic_s * 2))}s"))
        inflight = self._query(_INFLIGHT)
        return stable, panic, capacity, inflight

    async def read(
        self, models: Models, stable_s: float, panic_s: float, now: float
    ) -> Mapping[str, Measured]:
        stable, panic, capacity, inflight = await asyncio.to_thread(
            self._read, stable_s, panic_s, now
        )
        out = {}
        for name, (spec, _) in models.items():
            if name not in stable:
                continue  # no series: stale, never "no load"
            cap = capacity.get(name)
            if stable[name].arrivals or inflight.get(name):
                self._last_active[name] = now
            out[name] = Measured(
                stable=stable[name],
                panic=panic.get(name, Window(at=now, span_s=panic_s)),
                inflight=inflight.get(name, 0.0),
                last_request_at=self._last_active.get(name),
                capacity_rps=cap * _instances(spec) if cap else None,
            )
        return out
