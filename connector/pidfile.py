"""A background JVM recorded by a pid file: found again, measured and stopped by that pid alone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def running_pid(pid_file: Path, marker: bytes) -> int | None:
    """The pid in `pid_file` if that process runs and its command line contains `marker`, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ProcessLookupError, FileNotFoundError):
        return None
    return pid if marker in cmdline else None


def stop_pid(pid: int, timeout_s: float) -> None:
    """SIGTERM, escalating to SIGKILL after the timeout."""
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, timeout_s):
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10.0)


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # Reap it if it is our own child, so it does not linger as a zombie.
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return True
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return False
