"""The collector settings the services start with (in a child process: the test runner's own GC stays as it is)."""

from __future__ import annotations

import json
import subprocess
import sys

from common.gc_tuning import FIRST_GENERATION_THRESHOLD

PROBE = """
import gc, json
from common.gc_tuning import tune_for_throughput
before = gc.get_threshold()
tune_for_throughput()
cycle = []
cycle.append(cycle)  # a reference cycle made after start-up
del cycle
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "collected": gc.collect()}))
"""


def test_tuning_raises_the_first_threshold_freezes_start_up_and_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    assert report["after"][0] == FIRST_GENERATION_THRESHOLD != report["before"][0]
    assert report["after"][1:] == report["before"][1:]
    assert report["frozen"] > 1000  # the modules imported before it
    assert report["collected"] >= 1  # cycles made afterwards are not frozen
