"""`tritonfleet sim run`: a scenario file in, report.json and a PNG out; bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters import cli

SCENARIO = """
name: tiny
duration_s: 60
fleet: {servers: 2, memory_mib: 4096}
models:
  - {name: a, memory_mib: 1024, load_s: 1}
  - {name: b, count: 2, memory_mib: 1024}
workload: {kind: poisson, rate_rps: 20}
report: {interval_s: 10}
"""


def test_sim_run_writes_report_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SCENARIO)
    out = tmp_path / "out"
    assert cli.main(["sim", "run", str(path), "--out", str(out), "--seed", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["seed"] == 2 and report["requests"]["arrived"] > 0
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "tiny:" in captured.out and "simulated 100%" in captured.err


def test_trace_scenario_replays_relative_file(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp_s,model\n0.1,a\n0.2,a\n5,b-1\n")
    path = tmp_path / "t.yaml"
    path.write_text(
        SCENARIO.replace("{kind: poisson, rate_rps: 20}", "{kind: trace, trace: t.csv}")
    )
    assert cli.main(["sim", "run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["requests"]["arrived"] == 3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SCENARIO.replace("servers: 2", "servers: 0"), "fleet.servers"),
        (SCENARIO.replace("rate_rps: 20", "rate_rps: 20, colour: red"), "workload.colour"),
        (SCENARIO.replace("duration_s: 60", "duration_s: [60"), "malformed YAML"),
        ("- just a list", "must hold one mapping"),
        (
            SCENARIO.replace("{kind: poisson, rate_rps: 20}", "{kind: trace, trace: no.csv}"),
            "no.csv",
        ),
    ],
)
def test_bad_scenarios_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["sim", "run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_an_unwritable_out_dir_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SCENARIO)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["sim", "run", str(path), "--out", str(blocker), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report" in err and "Traceback" not in err
