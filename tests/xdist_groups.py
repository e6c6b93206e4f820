"""Which tests must run on one pytest-xdist worker, and the scheduler that keeps them there.

pytest-xdist's own `--dist loadgroup` reads the `xdist_group` marks in each worker and appends the group to the
test's node id, which its controller then groups by. pytest 9 builds a node id from a structured id, so that
assignment no longer changes it: every test was scheduled on its own, and grouped tests ran on several workers at
once (pytest-dev/pytest-xdist#1386, open; when a release with the fix is pinned, this module can go). Here the
workers write the group of each marked test to a file, in a directory the controller made for
the run (its path in `GROUPS_DIR_ENV`, which the workers inherit), and the controller's scheduler reads them when it
splits the collection into units of work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

GROUPS_DIR_ENV = "PINWHEEL_TEST_XDIST_GROUPS"


def configure(config: pytest.Config) -> None:
    """In xdist's controller (before it starts the workers): make the run's directory for the workers' groups."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ[GROUPS_DIR_ENV] = tempfile.mkdtemp(prefix="pinwheel-xdist-groups-")


def unconfigure() -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER") and (directory := os.environ.pop(GROUPS_DIR_ENV, None)):
        shutil.rmtree(directory, ignore_errors=True)


def record(items: list[pytest.Item]) -> None:
    """In a worker, after the marks are set: write the group of every test that has one."""
    worker, directory = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(GROUPS_DIR_ENV)
    if not worker or not directory:
        return
    groups = {}
    for item in items:
        names = sorted({str(mark.args[0]) for mark in item.iter_markers("xdist_group") if mark.args})
        if names:
            groups[item.nodeid] = "_".join(names)
    path = Path(directory) / f"{worker}.json"
    path.with_suffix(".tmp").write_text(json.dumps(groups))
    path.with_suffix(".tmp").replace(path)


class GroupScheduling(LoadScopeScheduling):
    """xdist's load-scope scheduling, with a test's scope its group (as the workers recorded it), else itself."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self._groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:  # first called once every worker has sent its collection
            self._groups = {}
            for path in sorted(Path(os.environ[GROUPS_DIR_ENV]).glob("*.json")):
                self._groups.update(json.loads(path.read_text()))
        return self._groups.get(nodeid, nodeid)
