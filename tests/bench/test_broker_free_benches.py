"""The benches that need no broker run to their figure on a small input: a change to the logic's inputs (e.g. job
ids that must be UUIDs) breaks them here, not on the next person to measure."""

from __future__ import annotations

import subprocess
import sys

import pytest

RUNS = {
    "bench.logic_bench": (["300"], "µs/event"),
    "bench.pipeline_bench": (["--events", "300", "--batch", "50", "--rounds", "1"], "µs CPU per event"),
}


@pytest.mark.parametrize("module", sorted(RUNS))
def test_runs_to_its_figure(module: str) -> None:
    args, figure = RUNS[module]
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert figure in done.stdout
