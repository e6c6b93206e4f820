"""Every benchmark and fault-run entry point answers ``--help`` with its usage and runs nothing.

A newcomer's first move with an unknown command is ``--help``; a bench that starts measuring (or a broker) instead is
a trap. Entry points are found on disk, so a new bench is covered without editing this list. The peers' jobs
(bench/peers/*_job.py) are not entry points: `make bench-peers` starts them in their own venv with Quix or Faust.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONCURRENT = 4


def entry_points() -> list[str]:
    modules = []
    for package in ("bench", "chaos"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                modules.append(".".join(path.parent.relative_to(ROOT).parts))
            elif 'if __name__ == "__main__":' in path.read_text() and not path.stem.endswith("_job"):
                modules.append(".".join(path.with_suffix("").relative_to(ROOT).parts))
    return modules


def test_every_entry_point_prints_usage_and_runs_nothing() -> None:
    modules = entry_points()
    assert {"bench.codec_bench", "bench.event_bench", "bench.logic_bench", "chaos"} <= set(modules)
    failures = []
    # A few at a time: each start costs ~1.5 CPU s of imports, and twenty at once on a loaded 2-core machine
    # (CI runs this beside other test workers) took over a minute.
    for start in range(0, len(modules), CONCURRENT):
        runs = {
            module: subprocess.Popen(
                [sys.executable, "-m", module, "--help"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for module in modules[start : start + CONCURRENT]
        }
        for module, run in runs.items():
            out, err = run.communicate(timeout=120)
            if run.returncode != 0 or not out.startswith("usage:"):
                failures.append(f"{module}: exit {run.returncode}, stdout {out[:200]!r}, stderr {err[-300:]!r}")
    # Usage first: a bench that ignored --help would print its table (or a broker's start) instead, or time out.
    assert not failures, "\n".join(failures)
