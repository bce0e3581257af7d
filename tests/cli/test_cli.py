"""The CLI as a user runs it: clear one-line errors and exit codes, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.tritonbin import check_python_stub
from controlplane.errors import FleetError
from tests.support import EXAMPLES


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_malformed_yaml_is_a_clear_cli_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbackend: python\ninputs: [ {name: a, dims: [1]\n")
    r = run("config", "render", str(bad), "--offline")
    assert r.returncode == 2
    assert "malformed YAML" in r.stderr and "line" in r.stderr
    assert "Traceback" not in r.stderr


def test_invalid_spec_names_each_field(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: ../up\nbackend: caffe\nmax_batch_size: 0\n"
        "inputs: [{name: a, datatype: FP32, dims: []}]\n"
        "outputs: [{name: b, datatype: FP32, dims: [1]}]\n"
        "artifact: {files: {'1/model.py': 'x=1'}}\n"
    )
    r = run("config", "render", str(spec), "--offline")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "name:" in r.stderr and "backend: unknown backend 'caffe'" in r.stderr
    assert "inputs.0.dims: has rank 0" in r.stderr


def test_offline_render_of_an_example(tmp_path: Path) -> None:
    r = run("config", "render", str(EXAMPLES / "batch_sleep" / "spec.yaml"), "--offline")
    assert r.returncode == 0, r.stderr
    assert 'name: "batch_sleep"' in r.stdout and "preferred_batch_size: [ 4, 8, 16 ]" in r.stdout


def test_unreachable_api_and_missing_file_and_bad_flag(tmp_path: Path) -> None:
    r = run("models", "list", "--api", "http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot reach the control API" in r.stderr
    r = run("models", "register", str(tmp_path / "nope.yaml"), "--api", "http://127.0.0.1:9")
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = run("up", "--servers", "0")
    assert r.returncode == 2 and "--servers" in r.stderr and "Traceback" not in r.stderr
    r = run("up", "--tritonserver", str(tmp_path / "missing"), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1 and "install the local extra" in r.stderr, r.stderr


def test_python_stub_check_says_what_to_install() -> None:
    with pytest.raises(FleetError, match="apt-get install -y python3 python3-numpy"):
        check_python_stub(("/nonexistent/python3",))
    with pytest.raises(FleetError, match="apt-get install -y python3-numpy"):
        check_python_stub((sys.executable, "-c", "raise SystemExit('No module named numpy')", "--"))


def test_servers_flag_takes_a_count_or_urls() -> None:
    from adapters.cli import build_parser, to_settings
    from adapters.settings import FleetKind

    s = to_settings(build_parser().parse_args(["up", "--servers", "3"]))
    assert s.fleet is FleetKind.LOCAL and s.servers == 3
    s = to_settings(
        build_parser().parse_args(["up", "--servers", "http://10.0.0.5:8000,10.0.0.6:8000"])
    )
    assert s.fleet is FleetKind.STATIC
    assert s.static_servers == ["http://10.0.0.5:8000", "10.0.0.6:8000"]


def test_bad_fleet_config_names_the_entry(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text("servers:\n  - {url: 'http://10.0.0.5'}\n")
    r = run(
        "controlplane",
        "--fleet",
        "static",
        "--fleet-config",
        str(cfg),
        "--data-dir",
        str(tmp_path / "d"),
        "--port",
        "0",
    )
    assert r.returncode == 1 and "servers[0].url" in r.stderr and "with a port" in r.stderr, (
        r.stderr
    )
    assert "Traceback" not in r.stderr


def test_fleet_size_flags_map_to_settings_and_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters.cli import CliError, build_parser, to_settings
    from adapters.settings import Settings

    s = to_settings(build_parser().parse_args(["up", "--servers", "2", "--max-servers", "4"]))
    assert (s.servers, s.min_servers, s.max_servers) == (2, None, 4)
    # Kubernetes: the bounds are the StatefulSet's; --servers (local only) does not constrain them.
    s = to_settings(
        build_parser().parse_args(
            ["controlplane", "--fleet", "kubernetes", "--min-servers", "3", "--max-servers", "6"]
        )
    )
    assert (s.min_servers, s.max_servers) == (3, 6)
    with pytest.raises(CliError, match=r"max_servers \(2\) is below servers \(3\).*--max-servers"):
        to_settings(build_parser().parse_args(["up", "--servers", "3", "--max-servers", "2"]))
    with pytest.raises(CliError, match=r"min_servers \(3\) is above servers \(2\)"):
        to_settings(build_parser().parse_args(["up", "--min-servers", "3", "--max-servers", "4"]))
    with pytest.raises(CliError, match=r"min_servers \(5\) is greater than max_servers \(4\)"):
        to_settings(
            build_parser().parse_args(
                [
                    "controlplane",
                    "--fleet",
                    "kubernetes",
                    "--min-servers",
                    "5",
                    "--max-servers",
                    "4",
                ]
            )
        )
    with pytest.raises(
        CliError, match=r"^--max-servers: Input should be greater than or equal to 1"
    ):
        to_settings(build_parser().parse_args(["up", "--max-servers", "0"]))
    monkeypatch.setenv("TRITONFLEET_MAX_SERVERS", "5")
    assert Settings().max_servers == 5


def test_fleet_sizes_out_of_order_are_one_clear_line() -> None:
    r = run("up", "--servers", "3", "--max-servers", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "tritonfleet: max_servers (2) is below servers (3): the local fleet starts with "
        "--servers; raise --max-servers to 3 or more"
    )


def test_autopilot_flags_are_checked_in_one_clear_line() -> None:
    r = run("up", "--autopilot-stable-window-s", "5", "--autopilot-panic-window-s", "10")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "autopilot_panic_window_s (10) exceeds autopilot_stable_window_s (5)" in r.stderr
    r = run("up", "--slo-p95-ms", "-1")
    assert r.returncode == 2 and "--slo-p95-ms" in r.stderr and "Traceback" not in r.stderr
    r = run("explain", "m", "--api", "http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot reach the control API" in r.stderr


def test_dashboard_flags_map_to_settings_and_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters.cli import CliError, build_parser, to_settings
    from adapters.settings import Settings

    s = to_settings(build_parser().parse_args(["up"]))
    assert (s.ui_enabled, s.ui_stream_max_clients) == (True, 16)
    s = to_settings(
        build_parser().parse_args(["controlplane", "--no-ui", "--ui-stream-max-clients", "3"])
    )
    assert (s.ui_enabled, s.ui_stream_max_clients) == (False, 3)
    with pytest.raises(
        CliError,
        match=r"^--ui-stream-max-clients: Input should be greater than or equal to 1.*"
        r"TRITONFLEET_UI_STREAM_MAX_CLIENTS",
    ):
        to_settings(build_parser().parse_args(["up", "--ui-stream-max-clients", "0"]))
    monkeypatch.setenv("TRITONFLEET_UI_STREAM_HEARTBEAT_S", "5")
    assert Settings().ui_stream_heartbeat_s == 5


def test_placement_flag_maps_to_settings_and_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters.cli import CliError, build_parser, to_settings
    from adapters.settings import Settings
    from controlplane.placement import PlacementSetting

    assert (
        to_settings(build_parser().parse_args(["up"])).placement_strategy is PlacementSetting.AUTO
    )
    for argv in (["up", "--placement", "spread"], ["controlplane", "--placement", "spread"]):
        assert (
            to_settings(build_parser().parse_args(argv)).placement_strategy
            is PlacementSetting.SPREAD
        )
    monkeypatch.setenv("TRITONFLEET_PLACEMENT_STRATEGY", "pack")
    assert Settings().placement_strategy is PlacementSetting.PACK
    assert (
        to_settings(build_parser().parse_args(["up"])).placement_strategy is PlacementSetting.PACK
    )
    monkeypatch.setenv("TRITONFLEET_PLACEMENT_STRATEGY", "bestfit")
    with pytest.raises(
        CliError,
        match=r"^--placement-strategy: Input should be 'auto', 'pack' or 'spread' "
        r"\(got 'bestfit'\) \[env TRITONFLEET_PLACEMENT_STRATEGY\]",
    ):
        to_settings(build_parser().parse_args(["up"]))
    r = run("up", "--placement", "worst")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--placement" in r.stderr and "'auto', 'pack', 'spread'" in r.stderr


def test_bad_slo_in_a_spec_names_the_field(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "batch_sleep", tmp_path / "m")
    spec = tmp_path / "m" / "spec.yaml"
    spec.write_text(spec.read_text() + "slo: {p95_ms: 300, p99_ms: 200}\n")
    r = run("config", "render", str(spec), "--offline")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "slo: p95_ms (300) exceeds p99_ms (200)" in r.stderr, r.stderr
