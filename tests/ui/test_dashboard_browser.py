"""The dashboard in a real browser against a real `tritonfleet up` under load.

`tritonfleet up` starts two real Triton servers with the example models; a few client threads
put requests through its gateway; headless Chromium opens `/ui/` with the API token entered
once. The test checks that the fleet map shows both servers and their models, that a latency
chart draws live points that keep coming, that the decision stream shows what the control
plane did, that usage per tenant comes once the token is there, that
the token is sent as a header and never in a URL, and that the page raised no error and no
Content-Security-Policy violation. The screenshot is kept in the test's tmp dir and, when
TRITONFLEET_ARTIFACTS names a directory, there too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.tritonbin import TritonInstall
from tests.support import free_port_block, wait_until

pytestmark = [pytest.mark.triton, pytest.mark.browser]

TOKEN = "dashboard-test-token"
MODEL = "batch_sleep"


@pytest.fixture
def fleet(triton_install: TritonInstall, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real `tritonfleet up` (two servers, the example models, SLO defaults for the chart)."""
    ready = tmp_path / "ready.json"
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adapters.cli",
                "up",
                "--data-dir",
                str(tmp_path / "data"),
                "--api-port",
                str(free_port_block(1)),
                "--api-token",
                TOKEN,
                "--ready-file",
                str(ready),
                "--gateway-http-port",
                "0",
                "--gateway-grpc-port",
                "0",
                "--slo-p95-ms",
                "40",
                "--slo-p99-ms",
                "80",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TRITONFLEET_RECONCILE_INTERVAL_S": "0.5"},
        )
        try:
            wait_until(lambda: ready.exists() or proc.poll() is not None, 120)
            assert proc.poll() is None, log_path.read_text()
            info = json.loads(ready.read_text())

            def all_ready() -> bool:
                models = httpx.get(f"{info['api_url']}/v1/models", timeout=5).json()["models"]
                states = [
                    httpx.get(f"{info['api_url']}/v1/models/{m['name']}/status", timeout=5).json()[
                        "state"
                    ]
                    for m in models
                ]
                return bool(states) and all(s == "READY" for s in states)

            wait_until(all_ready, 90)
            yield info
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Load:
    """A few threads sending KServe v2 JSON requests through the gateway until stopped."""

    def __init__(self, gateway_url: str, threads: int = 3) -> None:
        self.url = f"{gateway_url}/v2/models/{MODEL}/infer"
        self.stop = threading.Event()
        self.ok = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        body = {
            "inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]
        }
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    good = client.post(self.url, json=body).status_code == 200
                except httpx.HTTPError:
                    good = False
                with self._lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=30)


def test_dashboard_shows_the_live_fleet(
    fleet: dict[str, str], chromium: Any, tmp_path: Path
) -> None:
    api = fleet["api_url"]
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    requests: list[tuple[str, str | None]] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def console(msg: Any) -> None:
        text = msg.text
        # The usage fetch before the token is entered is refused (401): expected.
        usage_401 = "/v1/usage" in (msg.location or {}).get("url", "") and "401" in text
        if msg.type == "error" and not usage_401:
            problems.append(f"console: {text}")
        if "Content Security Policy" in text:
            problems.append(f"CSP: {text}")

    page.on("console", console)
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))

    with Load(fleet["gateway_http_url"]) as load:
        page.goto(f"{api}/ui/")
        page.fill("#token", TOKEN)
        page.click("#token-form button[type=submit]")
        assert page.evaluate("sessionStorage.getItem('tritonfleet.token')") == TOKEN

        # The fleet map: both servers, with memory in use and the models on them.
        page.wait_for_function("() => document.querySelectorAll('#fleet .server').length === 2")
        chips = page.locator("#fleet .model-chip").all_text_contents()
        assert any(c.startswith(f"{MODEL} · READY") for c in chips), chips
        assert "in use" in page.locator("#fleet .server .mem-text").first.text_content()

        # A latency chart with live points, and new points arriving.
        card = f'.model[data-model="{MODEL}"]'
        p99 = f"{card} svg.chart.latency path.series.p99"
        page.wait_for_function(
            "sel => { const p = document.querySelector(sel);"
            " return p && Number(p.dataset.points) >= 3; }",
            arg=p99,
            timeout=30_000,
        )
        first = page.get_attribute(p99, "d")
        assert first is not None and first.count("L") >= 2
        page.wait_for_function(
            "([sel, d]) => { const p = document.querySelector(sel);"
            " return p && p.getAttribute('d') !== d; }",
            arg=[p99, first],
            timeout=20_000,
        )
        rate = page.text_content(f"{card} .stat-rate b") or ""
        assert rate.endswith("req/s") and float(rate.split()[0]) > 0, rate
        assert (page.text_content(f"{card} .stat-p99 b") or "").endswith("ms")
        assert page.locator(f"{card} svg.chart.latency line.slo.p99").count() == 1
        assert "p99 ≤ 80 ms" in (page.text_content(f"{card} .slo-text") or "")

        # The decision stream: what the control plane did (at least the initial loads).
        page.wait_for_function(
            "() => document.querySelectorAll('#events li[data-seq]').length >= 2"
        )
        assert page.get_attribute("#conn", "data-state") == "live"
        kinds = set(page.locator("#events .kind").all_text_contents())
        assert kinds & {"placement", "replica"}, kinds

        # Usage per tenant, asked for again with the token once it was entered.
        page.wait_for_function(
            "() => document.querySelector('#usage table') !== null"
            " || (document.querySelector('#usage').textContent || '').includes('no usage')"
        )
        if page.locator("#usage table").count():
            assert page.locator("#usage th").first.text_content() == "tenant"
            assert page.locator("#usage tr").count() >= 2  # a header and a row

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
    assert load.ok > 0, (load.ok, load.failed)
    assert shot.stat().st_size > 10_000
    if os.environ.get("TRITONFLEET_ARTIFACTS"):
        out = Path(os.environ["TRITONFLEET_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "dashboard.png")

    # The token went as a header on the API calls after it was entered, never in a URL.
    assert not [u for u, _ in requests if TOKEN in u]
    sent = {u.split("?")[0].removeprefix(api) for u, auth in requests if auth == f"Bearer {TOKEN}"}
    assert {"/v1/fleet", "/v1/latency", "/v1/events"} <= sent, sent
    assert problems == []
    page.close()
