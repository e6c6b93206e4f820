"""`python -m chaos [scenario ...]`: run the fault-injection scenarios (all by default), one after the other.

`--scenario NAME` (repeatable) is the same as naming it; `--cluster` runs the scenarios on a 3-node cluster.

Prints progress and one `chaos <name>: PASS|FAIL ...` line per scenario, then refreshes docs/reliability.md
(the rows of the scenarios that ran). Exit status 0 only if every scenario passed.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from chaos.harness import Size
from chaos.report import DOC, write
from chaos.scenarios import CLUSTER_SCENARIOS, SCENARIOS, Result, run_scenario
from connector.run import stop_on_sigterm


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"any of: {', '.join(SCENARIOS)}")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME", help="a scenario to run")
    parser.add_argument("--cluster", action="store_true", help=f"the 3-node scenarios: {', '.join(CLUSTER_SCENARIOS)}")
    parser.add_argument("--accounts", type=int, default=Size.accounts, help="accounts simulated per scenario")
    parser.add_argument("--spread", type=float, default=Size.spread_s, help="seconds the accounts connect over")
    parser.add_argument("--seed", type=int, default=Size.seed, help="traffic seed")
    parser.add_argument("--runs-dir", type=Path, default=Path("var/chaos"), help="where each run keeps its data")
    parser.add_argument("--doc", type=Path, default=DOC, help="results page to refresh")
    parser.add_argument("--no-doc", action="store_true", help="do not write the results page")
    args = parser.parse_args(argv)
    args.scenarios += args.scenario + (CLUSTER_SCENARIOS if args.cluster else [])
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = args.scenarios or list(SCENARIOS)
    size = Size(accounts=args.accounts, spread_s=args.spread, seed=args.seed)
    run_dir = args.runs_dir / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    given = sys.argv[1:] if argv is None else argv
    command = f"python -m chaos {shlex.join(given)}".strip()
    started = time.monotonic()
    results: list[Result] = []
    # The harness's own admin clients poll clusters with nodes down on purpose: no connection-error noise.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stop_on_sigterm()  # like Ctrl-C: the running scenario is cancelled and stops what it started
    try:
        for name in names:
            results.append(run_scenario(name, size, run_dir / name))
    except KeyboardInterrupt:
        print("[chaos] interrupted", flush=True)
    print()
    for result in results:
        print(result.summary())
    print(f"[chaos] {len(results)} scenario(s) in {time.monotonic() - started:.0f}s; data in {run_dir}")
    if results and not args.no_doc:
        print(f"[chaos] results written to {write(results, command, args.doc)}")
    return 0 if results and len(results) == len(names) and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
