"""End-to-end runs of `loadgen` against a real Triton server (see conftest.py)."""

from __future__ import annotations

import json
import threading
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
        "--html", str(html), "--png", str(png),
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
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "SLO PASSED" in html.read_text()
    printed = capsys.readouterr().out
    assert "open-loop" in printed and "PASS" in printed


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


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bytes_model_in_a_zipf_mix(triton, tmp_path: Path, protocol: str) -> None:
    url = triton.http if protocol == "http" else triton.grpc
    rc, doc = _run(
        tmp_path,
        "--url", url, "--protocol", protocol, "-m", "text,fast", "--zipf", "1.5",
        "--rate", "150", "--arrival", "poisson", "--duration", "2s", "--warmup", "0.5s",
    )  # fmt: skip
    assert rc == 0
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
    assert open_doc["totals"]["latency"]["max_us"] >= 900_000
    # the same stall, closed loop: one request waits, the rest is never sent
    assert closed_doc["totals"]["latency"]["max_us"] >= 900_000
    assert open_p99 > 5 * closed_p99, (open_p99, closed_p99)
    # the open-loop service time (from the actual send) hides the stall much less than the
    # closed loop, but the intended-time latency is the one that tells the truth
    assert open_p99 >= open_doc["totals"]["service_time"]["p99_us"]
