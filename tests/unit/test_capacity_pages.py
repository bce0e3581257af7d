"""`tritonfleet up` asks each Triton for /metrics once: the gateway's signal feed hands its
pages to the autopilot's `TritonCapacity`, which then fetches only servers the feed has not
covered. An httpx MockTransport stands in for Triton's /metrics and counts the fetches."""

from __future__ import annotations

import asyncio

import httpx

from adapters.loadsignals import TritonCapacity
from controlplane.fleet import Server
from controlplane.spec import ModelSpec
from tests.support import python_spec


def _page(n: int) -> str:
    return (
        f'nv_inference_count{{model="m",version="1"}} {100 * n}\n'
        f'nv_inference_exec_count{{model="m",version="1"}} {100 * n}\n'
        f'nv_inference_compute_infer_duration_us{{model="m",version="1"}} {500_000 * n}\n'
        f'nv_inference_request_success{{model="m",version="1"}} {100 * n}\n'
    )


def _server(i: int) -> Server:
    return Server(f"s{i}", f"http://s{i}:8000", f"s{i}:8001", f"http://s{i}:8002/metrics", 1 << 30)


def test_pages_from_the_feed_replace_fetches_and_give_the_same_capacity() -> None:
    fetched: list[str] = []
    now = [1000.0]

    def triton(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.host)
        return httpx.Response(200, text=_page(int(now[0] - 1000) + 1))

    cap = TritonCapacity(clock=lambda: now[0], transport=httpx.MockTransport(triton))
    spec = ModelSpec.model_validate(python_spec("m"))
    fed, unfed = _server(0), _server(1)
    models = {"m": (spec, [fed, unfed])}
    ingest = cap.fed_by(1.0)

    async def run() -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for _ in range(5):
            ingest("s0", _page(int(now[0] - 1000) + 1))  # the feed's page, just fetched
            out = await cap.measure(models, now[0])
            await cap.refresh([fed, unfed], now[0], max_age_s=0.5)  # chargeback's refresh
            now[0] += 1.0
        await cap.close()
        return out

    caps = asyncio.run(run())
    # s0 came from the feed every time; s1, which the feed does not cover, was fetched by
    # the autopilot each round and never twice in one (the refresh found its page fresh).
    assert fetched == ["s1"] * 5
    # Both histories advance the same way: 100 inferences in 0.5 s of compute per second.
    assert caps["m"] is not None and abs(caps["m"] - 200.0) < 1e-6


def test_without_a_feed_every_measure_fetches() -> None:
    fetched: list[str] = []

    def triton(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.host)
        return httpx.Response(200, text=_page(len(fetched)))

    cap = TritonCapacity(transport=httpx.MockTransport(triton))
    spec = ModelSpec.model_validate(python_spec("m"))

    async def run() -> None:
        for t in range(3):
            await cap.measure({"m": (spec, [_server(0)])}, 1000.0 + t)
        await cap.close()

    asyncio.run(run())
    assert fetched == ["s0"] * 3
