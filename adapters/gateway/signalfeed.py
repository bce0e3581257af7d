"""Feeds Triton's own load signals into the router: scraped directly, or read from Prometheus.

The default scrapes each known server's `/metrics` every `signal_interval_s`; with
`prometheus_url` set, one PromQL query per signal asks Prometheus instead (through
`prometheus-api-client`, in a thread, sending `prometheus_bearer_token` when set). Either way
a failure only leaves that server's signal to go stale, which the policy then ignores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from adapters import promtext
from adapters.gateway.config import GatewayConfig
from adapters.gateway.router import Router
from controlplane import tritonmetrics
from controlplane.routing import ServerSignal

log = logging.getLogger(__name__)


PageSink = Callable[[str, str], None]  # (server id, the /metrics page just fetched)


async def feed(router: Router, config: GatewayConfig, pages: PageSink | None = None) -> None:
    """Keep the router's server signals fresh; `pages` also gets every page fetched (the
    control plane in the same process reads its capacity from them instead of fetching
    again)."""
    if config.prometheus_url:
        await _from_prometheus(router, config)
    else:
        await _scrape(router, config, pages)


async def _scrape(router: Router, config: GatewayConfig, pages: PageSink | None = None) -> None:
    prev: dict[str, tritonmetrics.Totals] = {}
    timeout = max(config.signal_interval_s, 0.5)
    async with httpx.AsyncClient(timeout=timeout) as client:

        async def one(server_id: str, url: str) -> None:
            try:
                r = await client.get(url)
                r.raise_for_status()
            except httpx.HTTPError as exc:
                log.debug("scraping %s (%s) failed: %s", url, server_id, exc)
                return
            cur = tritonmetrics.totals(promtext.samples(r.text, tritonmetrics.SERVER_FAMILIES))
            router.set_signal(
                server_id, tritonmetrics.derive(prev.get(server_id), cur, time.monotonic())
            )
            prev[server_id] = cur
            if pages is not None:
                try:
                    pages(server_id, r.text)
                except Exception:  # a broken reader never stops the router's signals
                    log.exception("handing %s's /metrics page on failed", server_id)

        while True:
            targets = dict(router.metrics_urls)
            await asyncio.gather(*(one(k, u) for k, u in targets.items()))
            await asyncio.sleep(config.signal_interval_s)


_QUERIES = {
    "pending": "sum by (instance) (nv_inference_pending_request_count)",
    "queue_s": "sum by (instance) (rate(nv_inference_queue_duration_us[30s])) / 1e6"
    " / sum by (instance) (rate(nv_inference_request_success[30s]))",
    "latency_s": "sum by (instance) (rate(nv_inference_request_duration_us[30s])) / 1e6"
    " / sum by (instance) (rate(nv_inference_request_success[30s]))",
}


async def _from_prometheus(router: Router, config: GatewayConfig) -> None:
    from prometheus_api_client import PrometheusConnect

    assert config.prometheus_url is not None
    token = config.prometheus_bearer_token
    prom = PrometheusConnect(
        url=config.prometheus_url,
        headers={"Authorization": f"Bearer {token}"} if token else None,
        disable_ssl=True,
    )
    while True:
        try:
            results = {
                k: await asyncio.to_thread(prom.custom_query, query=q) for k, q in _QUERIES.items()
            }
        except Exception as exc:
            log.debug("querying Prometheus at %s failed: %s", config.prometheus_url, exc)
        else:
            apply_prometheus(router, results, time.monotonic())
        await asyncio.sleep(config.signal_interval_s)


def apply_prometheus(router: Router, results: dict[str, list[dict[str, Any]]], now: float) -> None:
    """Match Prometheus `instance` labels (host:port of /metrics) to the router's servers."""
    by_instance = {
        url.split("//", 1)[-1].split("/", 1)[0]: sid for sid, url in router.metrics_urls.items()
    }
    values: dict[str, dict[str, float]] = {}
    for key, series in results.items():
        for s in series:
            sid = by_instance.get(s.get("metric", {}).get("instance", ""))
            if sid is None:
                continue
            try:
                v = float(s["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if v == v:  # NaN when nothing completed
                values.setdefault(sid, {})[key] = v
    for sid, fields in values.items():
        router.set_signal(sid, ServerSignal(at=now, **fields))
