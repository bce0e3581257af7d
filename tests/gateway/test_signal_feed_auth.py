"""The Prometheus signal feed sends the chart's bearer token.

A tiny local HTTP server stands in for Prometheus (no real Prometheus needed to see a header):
it answers every query with an empty vector and records the Authorization header it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from adapters.gateway import signalfeed
from adapters.gateway.config import GatewayConfig
from adapters.gateway.router import Router

EMPTY = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()


@pytest.fixture
def prometheus() -> Iterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(EMPTY)))
            self.end_headers()
            self.wfile.write(EMPTY)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Router:
    def __init__(self) -> None:
        self.metrics_urls: dict[str, str] = {}

    def set_signal(self, server_id: str, signal: Any) -> None:  # pragma: no cover - no data
        pass


async def _feed_once(config: GatewayConfig, seen: list[str | None]) -> None:
    task = asyncio.create_task(signalfeed.feed(cast(Router, _Router()), config))
    for _ in range(200):
        if len(seen) >= 3:  # one round: one query per signal
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("token", ["s3cret-token", None])
def test_prometheus_feed_sends_the_bearer_token(
    prometheus: tuple[str, list[str | None]], token: str | None
) -> None:
    url, seen = prometheus
    config = GatewayConfig(prometheus_url=url, prometheus_bearer_token=token, signal_interval_s=5)
    asyncio.run(_feed_once(config, seen))
    assert len(seen) >= 3
    assert set(seen) == {f"Bearer {token}" if token else None}
    assert token is None or token not in repr(config)  # never in a log line
