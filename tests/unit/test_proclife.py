"""Process-lifetime mechanisms of the local fleet, on plain processes (no Triton needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters import proclife

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def _wait_dead(p: subprocess.Popen[bytes], timeout_s: float = 10) -> bool:
    try:
        p.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_lifeline_stops_guarded_groups_when_its_owner_vanishes() -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    line = proclife.Lifeline(grace_s=1)
    line.start()
    line.guard(child.pid)
    assert line._proc is not None and line._proc.stdin is not None
    line._proc.stdin.close()  # what the kernel does when the control plane dies
    assert _wait_dead(child), "the watchdog stopped the guarded group"
    line._proc.wait(5)


def test_lifeline_clean_exit_and_release_touch_nothing() -> None:
    kept = subprocess.Popen(["sleep", "60"], start_new_session=True)
    released = subprocess.Popen(["sleep", "60"], start_new_session=True)
    line = proclife.Lifeline(grace_s=1)
    line.start()
    line.guard(kept.pid)
    line.guard(released.pid)
    line.release(released.pid)
    line.close()
    time.sleep(0.3)
    assert kept.poll() is None and released.poll() is None
    kept.kill()
    released.kill()
    kept.wait()
    released.wait()


@linux
def test_records_round_trip_and_tell_a_reused_pid_apart(tmp_path: Path) -> None:
    me = proclife.start_time(os.getpid())
    assert me is not None
    rec = proclife.ServerRecord("local-0", os.getpid(), me, 1, 2, 3, "fp", kept=False)
    rec.save(tmp_path)
    (back,) = proclife.records(tmp_path)
    assert back == rec and back.alive()
    assert not proclife.ServerRecord("local-1", os.getpid(), me + 1, 1, 2, 3, "", False).alive()
    assert not proclife.ServerRecord("local-2", 2**22 + 7, me, 1, 2, 3, "", False).alive()
    (tmp_path / "local-9.json").write_text("{not json")
    assert len(list(proclife.records(tmp_path))) == 1
    assert not (tmp_path / "local-9.json").exists(), "unreadable records are removed"


@linux
def test_parent_death_signal_kills_the_child_with_its_parent(tmp_path: Path) -> None:
    # A parent that starts a child with the preexec hook and then dies by SIGKILL.
    pidfile = tmp_path / "child.pid"
    script = (
        "import os, signal, subprocess, sys\n"
        "from adapters import proclife\n"
        "c = subprocess.Popen(['sleep', '60'], preexec_fn=proclife.pdeathsig_preexec())\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proclife.start_time(pid) is not None:
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
        if " Z " in stat:  # a zombie waiting for init: dead
            break
        time.sleep(0.05)
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    assert not stat or " Z " in stat, "the child died with its parent"
