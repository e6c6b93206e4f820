"""tests/shared_session.py with real processes, as xdist's workers are: one start, one stop, after the last user."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A worker: uses the resource "res" until told to let go, then ends its session as conftest.py does.
WORKER = """
import contextlib, sys, time
from pathlib import Path
from tests.shared_session import finish_owned, shared

root, me = Path(sys.argv[1]), sys.argv[2]

def note(line):
    with (root / "log").open("a") as log:
        log.write(line + "\\n")

@contextlib.contextmanager
def start():
    note(f"start {me}")
    yield {"by": me}
    note(f"stop {me}")

with shared("res", root, start, dump=lambda value: value, load=lambda record: record) as value:
    print(value["by"], flush=True)
    while not (root / f"release-{me}").exists():
        time.sleep(0.02)
    note(f"left {me}")  # in the block: before the resource learns it, so before any stop
finish_owned(poll_s=0.02)
"""


def _worker(root: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), name], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def _first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def _log(root: Path) -> list[str]:
    path = root / "log"
    return path.read_text().splitlines() if path.exists() else []


def _until_logged(root: Path, line: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while line not in _log(root):
        assert time.monotonic() < deadline, (line, _log(root))
        time.sleep(0.02)  # polled: another process writes the file


def test_the_first_worker_starts_it_the_others_use_it_and_it_stops_after_the_last(tmp_path: Path) -> None:
    a = _worker(tmp_path, "a")
    try:
        assert _first_line(a) == "a"  # a started it
        b = _worker(tmp_path, "b")
        try:
            assert _first_line(b) == "a"  # b uses a's
            (tmp_path / "release-a").touch()
            _until_logged(tmp_path, "left a")
            assert a.poll() is None  # a waits for b before it stops the resource
            (tmp_path / "release-b").touch()
            assert b.wait(30) == 0
        finally:
            b.kill()
        assert a.wait(30) == 0
    finally:
        a.kill()
    assert _log(tmp_path) == ["start a", "left a", "left b", "stop a"]

    c = _worker(tmp_path, "c")  # after the run's last user: a new one
    (tmp_path / "release-c").touch()
    assert _first_line(c) == "c"
    assert c.wait(30) == 0
    assert _log(tmp_path)[4:] == ["start c", "left c", "stop c"]


def test_without_xdist_it_is_the_context_manager_itself(tmp_path: Path) -> None:
    from tests.shared_session import shared, shared_root

    events: list[str] = []

    class Resource:
        def __enter__(self) -> str:
            events.append("start")
            return "value"

        def __exit__(self, *exc: object) -> None:
            events.append("stop")

    assert shared_root(tmp_path) is None or shared_root(tmp_path) == tmp_path.parent
    with shared("res", None, Resource, dump=lambda v: {"v": v}, load=lambda r: r["v"]) as value:
        assert (value, events) == ("value", ["start"])
    assert events == ["start", "stop"]
    assert list(tmp_path.iterdir()) == []  # no state file, no lock
