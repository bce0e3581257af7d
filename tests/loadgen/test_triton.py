"""End-to-end runs of `loadgen` against a real Triton server (see conftest.py)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loadgen.cli import main

pytestmark = pytest.mark.triton


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    rc = main(["run", "--quiet", "--json", str(out), *args])
    return rc, json.loads(out.read_text()) if out.exists() else {}


def test_open_loop_http_report_is_sane(triton, tmp_path: Path, capsys) -> None:
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    rc, doc = _run(
        tmp_path,
        "--url", triton.http, "-m", "fast", "--rate", "200", "--duration", "3s",
        "--warmup", "1s", "--server-metrics", triton.metrics_url, "--slo", "p99=2s,errors<1%",
        "--slo-window", "1s", "--html", str(html), "--png", str(png),
    )  # fmt: skip
    assert rc == 0, capsys.readouterr()
    assert doc["schema_version"] == 1 and doc["mode"] == "open-loop"
    assert doc["latency_origin"] == "intended"
    t = doc["totals"]
    assert t["requests"] == 400 and t["errors"] == 0  # 2 s measured at 200 req/s
    assert doc["warmup"]["requests"] == 200
    assert t["throughput_rps"] == pytest.approx(200, rel=0.1)
    lat = t["latency"]
    assert 0 < lat["p50_us"] <= lat["p95_us"] <= lat["p99_us"] <= lat["max_us"] < 2_000_000
    assert t["service_time"]["p50_us"] <= lat["p50_us"] * 1.01
    assert doc["schedule_lag"]["count"] == 400 and doc["schedule_lag"]["dropped"] == 0
    assert len(doc["per_second"]) >= 3 and doc["per_second"][0]["warmup"]
    server = doc["server_metrics"]["fast"]
    assert server["requests_success"] >= 400 and server["avg_compute_infer_us"] > 0
    assert doc["slo"]["passed"] and [o["held"] for o in doc["slo"]["objectives"]] == [True, True]
    windows = doc["slo_windows"]
    assert (windows["count"], windows["met"], windows["attainment"]) == (2, 2, 1.0)
    assert [(w["start_s"], w["end_s"]) for w in windows["windows"]] == [(1, 2), (2, 3)]
    assert sum(w["requests"] for w in windows["windows"]) == 400
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "SLO PASSED" in html.read_text()
    printed = capsys.readouterr().out
    assert "open-loop" in printed and "PASS" in printed
    assert "SLO per 1 s window: 2 of 2 met" in printed


def test_closed_loop_grpc_is_labelled_and_matches_service_time(triton, tmp_path: Path) -> None:
    rc, doc = _run(
        tmp_path,
        "--url", triton.grpc, "--protocol", "grpc", "-m", "sleepy", "--concurrency", "2",
        "--duration", "2.5s", "--warmup", "0.5s",
    )  # fmt: skip
    assert rc == 0
    assert doc["mode"] == "closed-loop" and "coordinated omission" in doc["note"]
    lat = doc["totals"]["latency"]
    assert lat["p50_us"] >= 5_000  # the model sleeps 5 ms per execution
    # two outstanding requests against a ~5 ms model: throughput ≈ 2 / latency
    expected = 2 / (lat["mean_us"] / 1e6)
    assert doc["totals"]["throughput_rps"] == pytest.approx(expected, rel=0.25)
    assert doc["totals"]["errors"] == 0


@pytest.mark.parametrize("protocol", ["http", "http/tritonclient", "grpc"])
def test_bytes_model_in_a_zipf_mix(triton, tmp_path: Path, protocol: str) -> None:
    url = triton.grpc if protocol == "grpc" else triton.http
    proto, _, client = protocol.partition("/")
    rc, doc = _run(
        tmp_path,
        "--url", url, "--protocol", proto, "-m", "text,fast", "--zipf", "1.5",
        "--rate", "150", "--arrival", "poisson", "--duration", "2s", "--warmup", "0.5s",
        "--client", client or "lean",
    )  # fmt: skip
    assert rc == 0
    assert doc["config"]["client"] == (client or "lean" if proto == "http" else "tritonclient")
    models = doc["models"]
    assert models["text"]["errors"] == 0 and models["fast"]["errors"] == 0
    assert models["text"]["requests"] > models["fast"]["requests"] > 0


def test_trace_replay(triton, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = [f"{i * 0.01:.3f},{'fast' if i % 3 else 'text'}" for i in range(150)]
    trace.write_text("timestamp,model\n" + "\n".join(rows) + "\n")
    rc, doc = _run(tmp_path, "--url", triton.http, "--trace", str(trace), "--warmup", "0.5s")
    assert rc == 0
    assert doc["models"]["text"]["requests"] + doc["models"]["fast"]["requests"] == 100
    assert doc["totals"]["errors"] == 0


def test_impossible_slo_exits_non_zero(triton, tmp_path: Path, capsys) -> None:
    rc, doc = _run(
        tmp_path,
        "--url", triton.http, "-m", "sleepy", "--rate", "50", "--duration", "1.5s",
        "--warmup", "0.5s", "--slo", "p50=1ms,errors<1%",
    )  # fmt: skip
    assert rc == 1
    assert doc["slo"]["passed"] is False
    assert [o["held"] for o in doc["slo"]["objectives"]] == [False, True]
    out = capsys.readouterr().out
    assert "FAIL" in out and "SLO FAILED" in out


def test_sweep_finds_a_rate_and_draws_the_curve(triton, tmp_path: Path, capsys) -> None:
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    rc = main([
        "sweep", "--quiet", "--url", triton.http, "-m", "fast", "--slo", "p99=1s",
        "--start-rate", "50", "--max-rate", "200", "--step-duration", "1.5s",
        "--warmup", "0.5s", "--max-lag", "100ms", "--json", str(out), "--png", str(png),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr()
    doc = json.loads(out.read_text())
    assert doc["sweep"]["best_rps"] == 200
    assert [s["rate_rps"] for s in doc["sweep"]["steps"]] == [50, 100, 200]
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["-m", "nope", "--rate", "10"], 3, "'nope'"),
        (["-m", "fast", "--rate", "10", "--batch-size", "64"], 2, "--batch-size"),
        (["-m", "fast", "--rate", "10", "--shape", "INPUT0:5"], 2, "--shape"),
    ],
)
def test_errors_found_at_the_server_are_clear(triton, capsys, args, code, needle) -> None:
    rc = main(["run", "--quiet", "--url", triton.http, "--duration", "1s", "--warmup", "0s", *args])
    err = capsys.readouterr().err
    assert rc == code and needle in err and "Traceback" not in err


def _lean(triton) -> Any:
    from loadgen.transport import ClientLibrary, LeanHttpTransport, Protocol_, Target

    return LeanHttpTransport(
        Target(
            triton.http, Protocol_.HTTP, timeout_s=10, max_connections=8, client=ClientLibrary.LEAN
        )
    )


def test_lean_http_against_triton_statuses_and_bytes(triton) -> None:
    """The lean client's answers from a real Triton: success for FP32 and BYTES (binary and
    JSON bodies), HTTP 400 / 404 with Triton's message for a bad shape / an unknown model."""
    import asyncio

    import numpy as np
    import uvloop

    from loadgen import leanhttp
    from loadgen.inputs import build_sets

    async def main() -> None:
        t = _lean(triton)
        try:
            for model, binary in (("fast", True), ("text", True), ("fast", False), ("text", False)):
                sig = await t.describe(model, "")
                sets = build_sets(
                    sig, batch_size=2, shapes={}, count=3, rng=np.random.default_rng(1)
                )
                t._target = replace(t._target, binary_data=binary)
                reqs = t.prepare(sig, sets)
                assert await t.check(reqs[0]) is None, (model, binary)
                kinds = await asyncio.gather(*(t.infer(r) for r in reqs * 20))
                assert kinds == [None] * 60, (model, binary)
            bad_shape = leanhttp.build_request(
                triton.http, "/v2/models/fast/infer",
                b'{"inputs":[{"name":"INPUT0","shape":[1,5],"datatype":"FP32",'
                b'"data":[1,2,3,4,5]}]}',
            )  # fmt: skip
            assert await t.infer(bad_shape) == "http_400"
            msg = await t.check(bad_shape)
            assert msg is not None and msg.startswith("HTTP 400:") and "INPUT0" in msg, msg
            unknown = leanhttp.build_request(triton.http, "/v2/models/nope/infer", b"{}")
            msg = await t.check(unknown)
            assert msg is not None and msg.startswith("HTTP 404:") and "'nope'" in msg, msg
            assert await t.infer(reqs[0]) is None  # the connection survives error answers
        finally:
            await t.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_triton_frames_infer_responses_with_content_length(triton) -> None:
    """What the lean client relies on least: Triton answers with Content-Length (not chunked)
    and keeps the connection open. httptools would handle chunked too; this documents it."""
    import socket

    import numpy as np

    from loadgen.inputs import ModelSignature, TensorSpec
    from loadgen.leanhttp import build_request
    from loadgen.transport import infer_bodies

    spec = TensorSpec("INPUT0", "FP32", (-1, 4))
    sig = ModelSignature("fast", "", 8, (spec,), (TensorSpec("OUTPUT0", "FP32", (-1, 4)),))
    ((body, size),) = infer_bodies(sig, [{"INPUT0": np.ones((1, 4), np.float32)}], binary=True)
    host, port = triton.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            build_request(triton.http, "/v2/models/fast/infer", body, json_header_size=size)
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
    head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 200")
    assert "content-length:" in head and "transfer-encoding" not in head, head
    assert "connection: close" not in head


# Last in the file: if the stall ever takes the server down, the other tests have run.
def _stalled(triton, tmp_path: Path, *load: str) -> dict[str, Any]:
    """Run 4 s of load with the server process frozen (SIGSTOP) from t≈1.5 s to t≈2.5 s."""

    def stall() -> None:
        triton.freeze()
        threading.Timer(1.0, triton.thaw).start()

    timer = threading.Timer(1.5, stall)
    timer.start()
    try:
        rc, doc = _run(
            tmp_path, "--url", triton.http, "-m", "fast", "--duration", "4s",
            "--warmup", "0.5s", "--timeout", "10s", *load,
        )  # fmt: skip
    finally:
        timer.join()
        triton.thaw()
    assert rc == 0
    return doc


def test_a_one_second_stall_shows_in_open_loop_p99_and_hides_in_closed_loop(
    triton, tmp_path: Path
) -> None:
    open_doc = _stalled(triton, tmp_path, "--rate", "200")
    closed_doc = _stalled(triton, tmp_path, "--concurrency", "1")
    open_p99 = open_doc["totals"]["latency"]["p99_us"]
    closed_p99 = closed_doc["totals"]["latency"]["p99_us"]
    # ~200 requests were due during the stall: 200/700 of the window waited up to 1 s
    assert open_p99 >= 500_000, open_doc["totals"]["latency"]
    # (≥ half the stall: on a loaded box the timer that freezes the server fires late, and
    # part of the stall can fall in the warm-up; unstalled requests take a few ms)
    assert open_doc["totals"]["latency"]["max_us"] >= 500_000
    # the same stall, closed loop: one request waits, the rest is never sent
    assert closed_doc["totals"]["latency"]["max_us"] >= 500_000
    assert open_p99 > 5 * closed_p99, (open_p99, closed_p99)
    # the open-loop service time (from the actual send) hides the stall much less than the
    # closed loop, but the intended-time latency is the one that tells the truth
    assert open_p99 >= open_doc["totals"]["service_time"]["p99_us"]


def test_lean_http_timeouts_are_counted_while_the_server_is_frozen(triton, tmp_path: Path) -> None:
    """SIGSTOP for 1 s with a 300 ms timeout: requests due in the stall time out (and are
    counted as such), the frozen connections are replaced, and traffic recovers after it."""

    def stall() -> None:
        triton.freeze()
        threading.Timer(1.0, triton.thaw).start()

    timer = threading.Timer(1.5, stall)
    timer.start()
    try:
        rc, doc = _run(
            tmp_path, "--url", triton.http, "-m", "fast", "--rate", "200", "--duration", "4s",
            "--warmup", "0.5s", "--timeout", "300ms",
        )  # fmt: skip
    finally:
        timer.join()
        triton.thaw()
    assert rc == 0
    t = doc["totals"]
    assert set(t["errors_by_kind"]) == {"timeout"}, t["errors_by_kind"]
    # ~200 requests were due in the stall; those in its last 300 ms may still be answered
    assert 100 <= t["errors_by_kind"]["timeout"] <= 260, t["errors_by_kind"]
    assert t["successes"] >= 400
    # The last full second of the 4 s schedule (a trailing bucket may hold only late answers).
    last = next(b for b in doc["per_second"] if b["t_s"] == 3)
    assert last["ok"] > 150 and last["errors"] == 0, last  # recovered after the thaw
    assert t["latency"]["max_us"] < 1_000_000  # nothing took longer than the timeout
