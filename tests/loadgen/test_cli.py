"""Flag handling: bad values are reported with the flag's name and exit code 2, no traceback."""

from __future__ import annotations

import pytest

from loadgen.cli import main


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["run", "-m", "x", "--rate", "10", "--slo", "p95=soon"], "--slo"),
        (["run", "-m", "x"], "--rate"),
        (["run", "-m", "x", "--rate", "10", "--concurrency", "2"], "--rate"),
        (["run", "-m", "x", "--rate", "-5"], "--rate"),
        (["run", "-m", "x", "--rate", "10", "--duration", "forever"], "--duration"),
        (["run", "-m", "x", "--rate", "10", "--duration", "2s", "--warmup", "3s"], "--warmup"),
        (["run", "-m", "x", "--rate", "10", "--url", "nohost"], "--url"),
        (["run", "--rate", "10"], "--model"),
        (["run", "-m", "x", "--profile", "100@soon"], "--profile"),
        (["run", "-m", "x", "--rate", "10", "--shape", "IN:a,b"], "--shape"),
        (["run", "-m", "x", "--rate", "10", "--protocol", "smtp"], "--protocol"),
        (["sweep", "-m", "x"], "--slo"),
        (["sweep", "-m", "x", "--slo", "p99=1s", "--max-rate", "1"], "--max-rate"),
        (["run", "-m", "x", "--rate", "ten"], "--rate"),
        (["run", "-m", "x", "--rate", "10", "--slo-window", "10s"], "--slo-window"),
        (
            [
                "run",
                "-m",
                "x",
                "--rate",
                "10",
                "--warmup",
                "2.5s",
                "--slo",
                "p99=1s",
                "--slo-window",
                "5s",
            ],
            "--slo-window",
        ),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args, flag, capsys) -> None:
    rc = main([*args, "--url", "127.0.0.1:1"] if "--url" not in args else args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert flag in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("window", "says"),
    [
        ("0", "above zero"),
        ("-5s", "cannot read"),
        ("soon", "cannot read"),
        ("1.5s", "whole number of seconds"),
        ("26s", "longer than the measured period (25 s"),
    ],
)
def test_bad_slo_windows_exit_2_naming_the_flag(window: str, says: str, capsys) -> None:
    rc = main(
        ["run", "-m", "x", "--rate", "10", "--url", "127.0.0.1:1", "--duration", "30s",
         "--warmup", "5s", "--slo", "p99=1s", f"--slo-window={window}"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "--slo-window" in err and says in err and "Traceback" not in err


def test_unreachable_server_exits_3(capsys) -> None:
    rc = main(
        [
            "run",
            "-q",
            "-m",
            "x",
            "--rate",
            "10",
            "--url",
            "127.0.0.1:1",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ]
    )
    assert rc == 3
    assert "--url" in capsys.readouterr().err


def test_help_exits_0(capsys) -> None:
    assert main(["run", "--help"]) == 0
    assert "--slo" in capsys.readouterr().out


def test_a_good_slo_window_passes_the_flag_checks(capsys) -> None:
    rc = main(
        ["run", "-q", "-m", "x", "--rate", "10", "--url", "127.0.0.1:1", "--duration", "2s",
         "--warmup", "0s", "--slo", "p99=1s", "--slo-window", "2s"]
    )  # fmt: skip
    assert rc == 3, capsys.readouterr().err  # got as far as the (absent) server
