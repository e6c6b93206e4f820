"""`make run` and `make chaos` stop on SIGTERM like on Ctrl-C, also when started as a background job.

A shell starts background jobs (`make run &`) with SIGINT ignored; SIGTERM used to be turned into that ignored
SIGINT, so the run went on to its end with everything it started (found by the chaos harness).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a non-interactive shell starts a background job
from connector.run import stop_on_sigterm
stop_on_sigterm()

async def step() -> None:
    try:
        print("ready", flush=True)
        await asyncio.sleep(60)
    finally:
        print("cleaned up", flush=True)

try:
    asyncio.run(step())
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_sigterm_stops_a_background_run_through_its_cleanup() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert time.monotonic() - started < 10
    assert child.returncode == 130, out
    assert out.split() == ["cleaned", "up", "interrupted"]
