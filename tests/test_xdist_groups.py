"""tests/xdist_groups.py in a real pytest-xdist run: the tests of a group run on one worker, the others anywhere.

A small test project is run with `-n 2 --dist loadgroup` and a conftest that schedules as ours does. Each test
notes the worker it ran on. Under xdist's own loadgroup scheduling (pytest 9) the grouped tests spread over both
workers; this test fails then.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.xdist_groups import GROUPS_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import pytest
from tests import xdist_groups

def pytest_collection_modifyitems(items):
    for item in items:
        if "grouped" in item.name:
            item.add_marker(pytest.mark.xdist_group("together"))
    xdist_groups.record(items)

def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group: one worker")
    xdist_groups.configure(config)

def pytest_unconfigure():
    xdist_groups.unconfigure()

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return xdist_groups.GroupScheduling(config, log)
"""

TESTS = """
import os, time
import pytest

def note(tmp_path_factory, name):
    time.sleep(0.2)  # long enough that a free worker would take the next test
    seen = tmp_path_factory.getbasetemp().parent.parent / "seen"
    (seen / name).write_text(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.parametrize("n", range(6))
def test_grouped(n, tmp_path_factory):
    note(tmp_path_factory, f"grouped-{n}")

@pytest.mark.parametrize("n", range(6))
def test_free(n, tmp_path_factory):
    note(tmp_path_factory, f"free-{n}")
"""


def test_a_group_runs_on_one_worker_and_the_rest_on_both(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_sample.py").write_text(TESTS)
    base = tmp_path / "base"
    (tmp_path / "seen").mkdir()
    # A run of its own even when this test runs in an xdist worker (whose variables it would inherit).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != GROUPS_DIR_ENV}
    env |= {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q",
         f"--basetemp={base}", "-c", "/dev/null", f"--rootdir={project}", str(project)],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    seen = {path.name: path.read_text() for path in (tmp_path / "seen").iterdir()}
    assert len(seen) == 12, seen
    grouped = {worker for name, worker in seen.items() if name.startswith("grouped-")}
    assert len(grouped) == 1, seen
    assert set(seen.values()) == {"gw0", "gw1"}, seen  # the other worker was not idle: the rest spread
