"""A real small filesystem for tests that must hit ENOSPC: a tmpfs of a given size, mounted for the test.

Mounting needs root (CI runs as root); elsewhere the test is skipped with that reason. No imitation: a
file-size limit (RLIMIT_FSIZE) gives EFBIG and a signal, not a full disk's ENOSPC and short writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(directory: Path, size_bytes: int) -> Iterator[Path]:
    """`directory` as the mount point of a `size_bytes` tmpfs, unmounted (lazily, so a test's open files
    cannot block it) at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(path: Path, chunk: int = 4096) -> int:
    """Write `path` until the filesystem is full (ENOSPC); returns how many bytes it took."""
    written = 0
    with path.open("ab") as fh:
        while True:
            try:
                written += os.write(fh.fileno(), b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
