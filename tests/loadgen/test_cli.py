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
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args, flag, capsys) -> None:
    rc = main([*args, "--url", "127.0.0.1:1"] if "--url" not in args else args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert flag in err and "Traceback" not in err


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
