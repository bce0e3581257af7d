"""Tying tritonserver processes' lives to the control plane that started them.

Three mechanisms, each covering what the others miss:

- **Parent-death signal** (Linux): each tritonserver is started with `PR_SET_PDEATHSIG` =
  SIGKILL (set in the child, before exec), so the kernel kills it the moment the control plane
  dies, whatever killed it (SIGKILL, the OOM killer, a crash).
- **Lifeline** (portable): a tiny watchdog process reads process-group ids from a pipe whose
  write end only the control plane holds. When the control plane dies, the kernel closes the
  pipe; the watchdog reads EOF and stops every group it was told about (SIGTERM, then SIGKILL):
  the servers *and* their Python-backend stubs, which a parent-death signal cannot reach (they
  are the server's children, and Triton's stub outlives a killed server for 10+ s here). A
  clean stop says `exit` first, so the watchdog leaves without touching anything.
- **Records** (`ServerRecord`): what was started (pid, its start time from /proc, ports, a
  fingerprint of the admin key), one JSON file per server in the run directory. A restart reads
  them: a live server whose pid *and* start time match is ours (adopted or stopped, as the user
  chose); a record whose pid is dead or now belongs to another process is stale and is only
  deleted, never acted on.

Where /proc or prctl are missing (not Linux), start times are unknown (records are then
treated as stale and never killed) and only the lifeline applies.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

# The watchdog: stdin lines "+PGID" / "-PGID" / "exit"; on EOF, stop every group still held.
_WATCHDOG = r"""
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line == "exit":
        sys.exit(0)
    if line[:1] in "+-" and line[1:].isdigit():
        (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
def each(sig):
    for g in list(groups):
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            groups.discard(g)
each(signal.SIGTERM)
deadline = time.monotonic() + float(sys.argv[1])
while groups and time.monotonic() < deadline:
    time.sleep(0.1)
    for g in list(groups):
        try:
            os.killpg(g, 0)
        except (ProcessLookupError, PermissionError):
            groups.discard(g)
each(signal.SIGKILL)
"""


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die with its parent (Linux), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class Lifeline:
    """The watchdog that stops every guarded process group when this process dies."""

    def __init__(self, grace_s: float = 2.0) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._grace_s = grace_s

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self._grace_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to our group must not take it down first
        )

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(f"{line}\n".encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            log.warning("the lifeline watchdog is gone; servers may outlive a crash")

    def guard(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def release(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        """A clean stop: the watchdog leaves without touching anything."""
        if self._proc is None:
            return
        self._send("exit")
        stdin: IO[bytes] | None = self._proc.stdin
        if stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def key_fingerprint(admin_key: str | None) -> str:
    return hashlib.sha256((admin_key or "").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServerRecord:
    server_id: str
    pid: int
    start_time: int | None
    http_port: int
    grpc_port: int
    metrics_port: int
    admin_key_fingerprint: str
    kept: bool  # started to outlive the control plane (--keep-servers)

    def alive(self) -> bool:
        """Still the very process that was recorded (a reused pid has another start time)."""
        return self.start_time is not None and start_time(self.pid) == self.start_time

    def path(self, run_dir: Path) -> Path:
        return run_dir / f"{self.server_id}.json"

    def save(self, run_dir: Path) -> None:
        tmp = self.path(run_dir).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(self.path(run_dir))

    def remove(self, run_dir: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(run_dir).unlink()


def records(run_dir: Path) -> Iterator[ServerRecord]:
    """Every readable record in `run_dir`; unreadable ones are logged and removed."""
    for path in sorted(run_dir.glob("local-*.json")):
        try:
            yield ServerRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable server record %s: %s", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()


def stop_group(pid: int, grace_s: float) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL after `grace_s` (not our child: poll)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.killpg(pid, 0)
            time.sleep(0.05)
        os.killpg(pid, signal.SIGKILL)


def orphan_stubs(stub: Path) -> list[int]:
    """Pids of Python-backend stubs of this install whose server is gone (re-parented to 1)."""
    if not sys.platform.startswith("linux"):
        return []
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "exe")) != stub:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[1] == "1":  # ppid
            out.append(int(entry.name))
    return out


class Adopted:
    """A server a previous control plane started, as far as LocalFleet needs a process handle."""

    def __init__(self, record: ServerRecord) -> None:
        self.pid = record.pid
        self._record = record
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._record.alive():
            self.returncode = -1  # not our child: its exit code is not ours to read
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.05)
        return -1
