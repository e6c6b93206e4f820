"""`gateway.parent.stop_with_parent`, on real processes: a middle process starts a worker stand-in and dies;
the stand-in must get SIGTERM (from the kernel, or from its polling thread where there is no prctl)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The worker stand-in: watches the pid given, says so, then sleeps (SIGTERM's default action ends it).
WORKER = """
import os, sys, time
import gateway.parent as parent
if sys.argv[2] == "poll":
    parent._set_pdeathsig = lambda sig: False
how = parent.stop_with_parent(int(sys.argv[1]))
print(os.getpid(), how, flush=True)
time.sleep(60)
sys.exit(7)
"""

# The supervisor stand-in: starts the worker with its own pid, relays its line, and exits at once.
MIDDLE = """
import os, subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
print(worker.stdout.readline().decode().strip(), flush=True)
os._exit(0)
"""


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mode", ["pdeathsig", "poll"])
def test_a_worker_stops_when_its_parent_dies(mode: str) -> None:
    middle = subprocess.run(
        [sys.executable, "-c", MIDDLE, WORKER, mode], cwd=ROOT, capture_output=True, timeout=30, check=True
    )
    pid_text, how = middle.stdout.decode().split()
    pid = int(pid_text)
    assert how == mode
    deadline = time.monotonic() + 5
    while not gone(pid):
        assert time.monotonic() < deadline, f"worker {pid} outlived its parent ({mode})"
        time.sleep(0.05)


def test_a_worker_whose_parent_is_already_gone_stops_at_once() -> None:
    """The race: the parent died before the worker asked to be told; the pid check catches it."""
    worker = subprocess.run([sys.executable, "-c", WORKER, "1", "pdeathsig"], cwd=ROOT, capture_output=True, timeout=30)
    assert worker.returncode == -15, worker.stderr.decode()[-2000:]
