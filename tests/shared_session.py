"""Session resources (the Kafka broker, the schema registry) shared by pytest-xdist's workers.

Without xdist (`JOBS=1`, `-p no:xdist`) a resource is its context manager, entered and left by the session.
Under xdist each worker is a process of its own: the first worker that needs a resource starts it (under a lock
file) and writes what the others need to reach it in a state file, in the run's temporary directory (the parent
of the workers' `tmp_path_factory` bases, so two runs never share). The others read it and add their pid to its
users. A user leaves when its session tears its fixtures down; the worker that started the resource keeps its
context manager open until the end of its session (`finish_owned`, from `pytest_sessionfinish`), waits there
until every other user has left (or died), then leaves it: the broker is stopped, its directory removed, as
without xdist. A worker that needs the resource after that starts a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_OWNED: list[tuple[Path, ExitStack]] = []  # (state file, the open context manager) of what this worker started


def shared_root(basetemp: Path) -> Path | None:
    """Where the workers of this run meet (None: not an xdist worker)."""
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def shared(
    name: str,
    root: Path | None,
    start: Callable[[], AbstractContextManager[T]],
    dump: Callable[[T], dict[str, Any]],
    load: Callable[[dict[str, Any]], T],
) -> Iterator[T]:
    """The resource `name`: `start()` entered here, or the one another worker of the run started (`load` of what
    its `dump` wrote)."""
    if root is None:
        with start() as value:
            yield value
        return
    state, lock, me = root / f"{name}.json", root / f"{name}.lock", os.getpid()
    with _locked(lock):
        record = json.loads(state.read_text()) if state.exists() else None
        if record is not None and _alive(record["owner"]):
            value = load(record["value"])
            record["users"].append(me)
        else:
            stack = ExitStack()
            value = stack.enter_context(start())
            _OWNED.append((state, stack))
            record = {"owner": me, "users": [me], "value": dump(value)}
        state.write_text(json.dumps(record))
    try:
        yield value
    finally:
        with _locked(lock):
            if state.exists():
                record = json.loads(state.read_text())
                record["users"] = [pid for pid in record["users"] if pid != me]
                state.write_text(json.dumps(record))


def finish_owned(poll_s: float = 0.5) -> None:
    """At the end of this worker's session: stop what it started, once no other worker of the run uses it."""
    while _OWNED:
        state, stack = _OWNED.pop()
        lock = state.with_suffix(".lock")
        while True:
            with _locked(lock):
                record = json.loads(state.read_text())
                if not [pid for pid in record["users"] if pid != os.getpid() and _alive(pid)]:
                    state.unlink()
                    break
            time.sleep(poll_s)  # another worker still runs tests on it
        stack.close()
