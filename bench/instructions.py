"""Instructions per event of the compiled pipeline: ``python -m bench.instructions [--events 2000]``.

`bench.pipeline_bench`'s work, counted by Valgrind's callgrind instead of timed: the instructions executed inside
the pipeline's per-record and per-commit calls (`AccountPipeline.process` and `end_of_batch`, the local store's
`TaskState.committed`), divided by the events. On a shared machine, where the CPU time of one run moves by ±20 %
from one minute to the next, this count moves by less than 0.1 %: it compares two trees of the hot path, not the
machine's speed (an instruction is not a fixed time; the CPU time is still what the targets are stated in).

It needs `valgrind` (`apt-get install valgrind`) and the compiled build (`make install`): collection is switched on
and off at the compiled functions' entry points, which the pure build does not have. About 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from processors.service import hot_path_compiled

#: The compiled entry points whose calls are counted (mypyc's names for the Python-callable wrappers).
ENTRY_POINTS = (
    "CPyPy_pipeline___AccountPipeline___process",
    "CPyPy_pipeline___AccountPipeline___end_of_batch",
    "CPyPy_state___TaskState___committed",
)


def count(events: int) -> int:
    """The instructions callgrind counted inside `ENTRY_POINTS` while the pipeline bench processed `events`."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no"]
        argv += [f"--toggle-collect={name}" for name in ENTRY_POINTS]
        argv += [sys.executable, "-m", "bench.pipeline_bench", "--events", str(events), "--rounds", "1"]
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
        found = re.search(r"Collected : ([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if not hot_path_compiled():
        raise SystemExit("the hot path is not compiled here: run `make install` (bench.instructions counts its calls)")
    print(f"[instructions] the pipeline bench under callgrind, {args.events:,} events (about 2 minutes)", flush=True)
    total = count(args.events)
    if total == 0:
        raise SystemExit("callgrind counted nothing inside the pipeline's entry points (renamed by mypyc?)")
    print(f"pipeline alone: {total / args.events:,.0f} instructions per event ({total:,} for {args.events:,} events)")


if __name__ == "__main__":
    main()
