"""The spool's directories: `<spool_dir>/worker-<n>/`, one per worker process, each owned by the process that
holds the flock on its `LOCK` file.

A worker claims the first directory no live process holds (a restarted worker thus takes over a dead one's);
the directories of stopped workers are found (`worker_dirs`) and adopted (`gateway.spool.worker_spools`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "LOCK"


class SpoolLockedError(Exception):
    """Another live process owns this spool directory."""


def try_lock(directory: Path) -> int | None:
    """Open and flock `directory/LOCK`; the fd (keep it open to hold the lock) or None if held.

    flock locks die with their process, so a worker killed with -9 leaves its directory claimable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_worker_dir(root: Path) -> tuple[Path, int]:
    """The first `worker-<n>` directory no live process holds, locked.

    A restarted worker thus takes over the directory (and the spooled events) of a dead one.
    """
    for index in range(10_000):
        directory = root / f"worker-{index}"
        fd = try_lock(directory)
        if fd is not None:
            return directory, fd
    raise SpoolLockedError(f"no free spool directory under {root}")


def worker_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("worker-"))
