"""Pure tests of the hot-path HTTP framing and of Triton /metrics parsing."""

from __future__ import annotations

import pytest

from adapters.gateway.framing import (
    FramingError,
    check_partial_head,
    parse_request_head,
    parse_response_head,
)
from adapters.promtext import samples
from controlplane import tritonmetrics


def test_plain_request_is_forwarded_verbatim() -> None:
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 9\r\nContent-Length: 20"
    h = parse_request_head(head)
    assert (h.method, h.target, h.length, h.keep_alive) == (
        b"POST",
        b"/v2/models/m/infer",
        20,
        True,
    )
    assert h.upstream_head == head + b"\r\n\r\n"


def test_hop_by_hop_and_admin_headers_are_dropped() -> None:
    h = parse_request_head(
        b"POST /v2/models/m/infer HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
        b"Admin-Key: guess\r\nContent-Type: application/json\r\nContent-Length: 2"
    )
    assert h.keep_alive and h.expect_continue
    assert h.upstream_head == (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: tritonfleet-gateway\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    )
    assert not parse_request_head(b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close").keep_alive


def test_headers_named_in_connection_and_the_hop_by_hop_set_are_dropped() -> None:
    h = parse_request_head(
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nConnection: X-Trace-Hop, te\r\n"
        b"X-Trace-Hop: 1\r\nTE: trailers\r\nTrailer: X-Sum\r\nKeep-Alive: timeout=5\r\n"
        b"Upgrade: h2c\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n"
        b"X-Kept: 2\r\nContent-Length: 2"
    )
    assert h.upstream_head == (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\n"
    )
    assert h.length == 2 and h.keep_alive
    # a header named in Connection but absent, or named in another case, is harmless
    h = parse_request_head(b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: X-Gone\r\nx-gone: 1")
    assert h.upstream_head == b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v2 HTTP/1.1",
        b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2",
    ],
)
def test_http11_without_host_is_400(head: bytes) -> None:
    with pytest.raises(FramingError, match="Host") as e:
        parse_request_head(head)
    assert e.value.status == 400


@pytest.mark.parametrize("option", [b"Content-Length", b"host", b"close, content-length"])
def test_connection_may_not_name_what_frames_or_routes_the_request(option: bytes) -> None:
    with pytest.raises(FramingError, match="Connection names") as e:
        parse_request_head(
            b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: %s\r\nContent-Length: 2" % option
        )
    assert e.value.status == 400


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GARBAGE", 400),
        (b"GET /v2 HTTP/3", 505),
        (b"POST /x HTTP/1.1\r\nContent-Length: -1", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked", 411),
        (b"GET v2 HTTP/1.1", 400),
        # RFC 9112 framing defects, refused by llhttp before anything is cached
        (b"GET /v2 HTTP/1.1\r\nX-A: a\r\n b", 400),  # obs-fold
        (b"GET /v2 HTTP/1.1\r\nHost: x\nX: y", 400),  # bare LF
        (b"GET /v2 HTTP/1.1\r\nHost : x", 400),  # whitespace before the colon
        (b"GET /v2 HTTP/1.1\r\nX\x01: y", 400),
        (b"GET /v2 HTTP/1.1\r\nX: a\x00b", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked", 400),
        (b"GET /v2 HTTP/1.1\r\nHost: a\r\nHost: b", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1", 414),
        (b"GET /v2 HTTP/1.1" + b"\r\nX: y" * 101, 431),
    ],
)
def test_bad_request_heads(head: bytes, status: int) -> None:
    with pytest.raises(FramingError) as e:
        parse_request_head(head)
    assert e.value.status == status


def test_a_head_still_arriving_is_refused_as_soon_as_it_cannot_be_valid() -> None:
    check_partial_head(b"GET /v2 HTTP/1.1\r\nHost: x\r")  # fine so far
    for partial, status in (
        (b"GET /v2 HTTP/1.1\nHost: x", 400),
        (b"GET /" + b"a" * 9000, 414),
        (b"GET /v2 HTTP/1.1\r\nX: " + b"b" * 70000, 431),
    ):
        with pytest.raises(FramingError) as e:
            check_partial_head(partial)
        assert e.value.status == status


def test_connection_close_wins_over_keep_alive() -> None:
    h = parse_request_head(
        b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close"
    )
    assert not h.keep_alive
    assert not parse_request_head(b"GET /v2 HTTP/1.0").keep_alive


def test_response_heads() -> None:
    r = parse_response_head(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 35\r\nContent-Type: text/plain"
    )
    assert (r.status, r.length, r.keep_alive) == (400, 35, True)
    assert not parse_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0"
    ).keep_alive
    with pytest.raises(FramingError):
        parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")


METRICS = """# HELP nv_inference_pending_request_count x
nv_inference_pending_request_count{model="a",version="1"} 3
nv_inference_pending_request_count{model="b",version="1"} 1
nv_inference_queue_duration_us{model="a",version="1"} 5000
nv_inference_request_duration_us{model="a",version="1"} 20000
nv_inference_request_success{model="a",version="1"} 10
nv_cpu_utilization 0.5
nv_inference_request_summary_us{model="a",version="1",quantile="0.5"} 1200
"""


def test_signal_totals_and_derivation() -> None:
    t0 = tritonmetrics.totals(samples(METRICS))
    assert (t0.pending, t0.queue_us, t0.success, t0.cpu) == (4, 5000, 10, 0.5)
    t1 = tritonmetrics.Totals(pending=1, queue_us=9000, request_us=40000, success=20, cpu=0.7)
    s = tritonmetrics.derive(t0, t1, at=3.0)
    assert s.pending == 1 and s.at == 3.0
    assert s.queue_s == pytest.approx(0.0004) and s.latency_s == pytest.approx(0.002)
    assert tritonmetrics.derive(None, t1, at=1.0).queue_s == 0.0
    assert tritonmetrics.totals(samples("garbage\nnv_cpu_utilization notanumber\n")).cpu == 0.0


def test_prometheus_results_map_to_servers_by_instance() -> None:
    from adapters.gateway.config import GatewayConfig
    from adapters.gateway.directory import StaticDirectory
    from adapters.gateway.metrics import GatewayMetrics
    from adapters.gateway.router import Router
    from adapters.gateway.signalfeed import apply_prometheus

    r = Router(StaticDirectory(), GatewayConfig(), GatewayMetrics())
    r.metrics_urls["s0"] = "http://127.0.0.1:8002/metrics"
    results = {
        "pending": [{"metric": {"instance": "127.0.0.1:8002"}, "value": [0, "4"]}],
        "queue_s": [
            {"metric": {"instance": "127.0.0.1:8002"}, "value": [0, "NaN"]},
            {"metric": {"instance": "elsewhere:1"}, "value": [0, "9"]},
        ],
    }
    apply_prometheus(r, results, now=12.0)
    sig = r.servers["s0"].signal
    assert sig is not None and sig.pending == 4 and sig.queue_s == 0.0 and sig.at == 12.0
