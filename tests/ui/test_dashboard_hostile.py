"""Hostile text from the server stays text in the browser.

The control API here runs in-process over the core's fakes (`tests/api/test_dashboard.py`'s
`Rig`: the real reconciler and autopilot, a fake fleet and Triton), served by a real uvicorn in
a thread, with a usage source whose rows are hostile. Decision summaries
(which carry Triton's own error text), usage rows and tenant names are full of markup; the
page must show them literally and run none of it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from adapters.runtime import EmbeddedServer
from controlplane.events import EventKind
from tests.api.test_dashboard import Rig

pytestmark = pytest.mark.browser

XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


class HostileUsage:
    """A `UsageSource` whose rows carry markup where tenant names and tags go."""

    async def report(
        self, from_s: float, to_s: float, by: Any, tenant: str | None
    ) -> list[dict[str, object]]:
        return [
            {"tenant": XSS, "requests": 12, "replica_s": 3.5, "tags": {"x": XSS}},
            {"tenant": "team-b", "requests": 7, "replica_s": 1.25, "tags": {}},
        ]

    def totals(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def hostile_api() -> Iterator[str]:
    urls: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        rig = Rig()
        await rig.prepare(2)
        rig.rec.events.publish(EventKind.REPLICA, "a", f"load failed: {XSS}", rig.clock.now)
        app = rig.app(usage=HostileUsage())

        server = EmbeddedServer(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        urls.put(f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}")
        await asyncio.to_thread(stop.wait)
        server.should_exit = True
        await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        yield urls.get(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)


def test_markup_from_the_server_is_shown_as_text(hostile_api: str, chromium: Any) -> None:
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{hostile_api}/ui/")
    page.wait_for_function(
        "() => document.querySelectorAll('#events li[data-seq]').length >= 1"
        " && document.querySelector('#usage table') !== null"
        " && document.querySelectorAll('#fleet .server').length === 2"
    )
    summaries = page.locator("#events .summary").all_text_contents()
    assert f"load failed: {XSS}" in summaries
    cells = page.locator("#usage td").all_text_contents()
    assert XSS in cells and "team-b" in cells and "3.5" in cells
    assert page.locator("#usage th").all_text_contents() == [
        "tenant",
        "requests",
        "replica_s",
        "tags",
    ]
    # None of it became markup, and none of it ran.
    assert page.locator("#events img, #events script, #usage img, #usage script").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert errors == []
    page.close()
