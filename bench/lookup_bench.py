"""Point reads of a restored local store: ``python -m bench.lookup_bench [--keys 1000000] [--lookups 100000]``.

What a dedupe check costs once a task's store holds a realistic number of entries: `--keys` dedupe records (random
UUID4 event ids, as `bench.restore_bench` writes them) go into an empty `TaskState` through the restore path
(`apply_restored`, with the timers derived per record as the processors' restore does), the store is closed
(RocksDB flushes it to SST files) and opened again, then `--lookups` reads of new event ids (misses: the common
case, a first delivery) and as many of restored ones (hits: duplicates) are timed, in CPU µs per read.
`--in-memtable` reads the store as filled instead (keep `--keys` small enough for one memtable: what a running
task reads among its recent writes).

No broker: the restore's Kafka side is `bench.restore_bench`'s. `--bloom-bits` lists the settings of
`processors.runtime.state.BLOOM_BITS_PER_KEY` to compare (0: no Bloom filter); each round runs every setting in
turn, so a busy machine slows them alike. Reports the median per setting, and the store's size on disk.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.restore_bench import disk_mib, event_ids
from processors.logic.codec import INT_SERDE
from processors.logic.config import LogicConfig
from processors.logic.stores import DEDUPE, LOCAL_STORE_NAMES
from processors.pipeline import timers_derivation
from processors.runtime import state as state_module
from processors.runtime.state import TaskState
from processors.topics import changelog_topics


def _open(path: Path) -> TaskState:
    return TaskState(path, "bench-lookup", 0, {DEDUPE: changelog_topics("bench-lookup")[DEDUPE]}, LOCAL_STORE_NAMES)


def fill(path: Path, keys: list[bytes], chunk: int = 10_000) -> TaskState:
    """The restore's writes: dedupe records in batches, with their derived timers; the store left open."""
    derive = timers_derivation(LogicConfig())
    value = INT_SERDE.to_bytes(1_767_225_600_000_000)
    state = _open(path)
    for start in range(0, len(keys), chunk):
        state.apply_restored(DEDUPE, [(key, value) for key in keys[start : start + chunk]], derive)
    return state


def time_reads(state: TaskState, keys: list[bytes], expect_hit: bool) -> float:
    """CPU µs per `get` of `keys` in the dedupe store."""
    get = state.get
    start = time.process_time()
    found = sum(1 for key in keys if get(DEDUPE, key) is not None)
    spent = time.process_time() - start
    if found != (len(keys) if expect_hit else 0):
        raise RuntimeError(f"{found:,} of {len(keys):,} keys found, expected {'all' if expect_hit else 'none'}")
    return spent / len(keys) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bloom-bits", type=int, nargs="+", default=[0, state_module.BLOOM_BITS_PER_KEY])
    parser.add_argument(
        "--memtable-ratio", type=float, default=state_module.MEMTABLE_BLOOM_RATIO, help="the memtable filter's share"
    )
    parser.add_argument(
        "--in-memtable", action="store_true", help="read the store as filled, not reopened (keep --keys in a memtable)"
    )
    args = parser.parse_args()
    stored = event_ids(args.keys, seed=1)
    new = event_ids(args.lookups, seed=2)
    hits = stored[:: max(1, args.keys // args.lookups)][: args.lookups]
    misses: dict[int, list[float]] = {bits: [] for bits in args.bloom_bits}
    found: dict[int, list[float]] = {bits: [] for bits in args.bloom_bits}
    sizes: dict[int, float] = {}
    for round_ in range(1, args.rounds + 1):
        for bits in args.bloom_bits:
            state_module.BLOOM_BITS_PER_KEY = bits
            state_module.MEMTABLE_BLOOM_RATIO = args.memtable_ratio if bits else 0
            with tempfile.TemporaryDirectory(prefix="lookup-bench-") as tmp:
                path = Path(tmp)
                started = time.process_time()
                state = fill(path, stored)
                filled = time.process_time() - started
                if not args.in_memtable:
                    state.close()
                    sizes[bits] = disk_mib(path) * 1_000_000 / args.keys
                    state = _open(path)
                misses[bits].append(time_reads(state, new, expect_hit=False))
                found[bits].append(time_reads(state, hits, expect_hit=True))
                state.close()
                sizes.setdefault(bits, disk_mib(path) * 1_000_000 / args.keys)
            print(
                f"round {round_}, bloom bits {bits}: filled in {filled:.2f} CPU s; "
                f"miss {misses[bits][-1]:.2f} µs, hit {found[bits][-1]:.2f} µs "
                f"CPU per get; {sizes[bits]:.1f} MiB per million keys (dedupe + timers)",
                flush=True,
            )
    print()
    print("| Bloom bits per key | miss, CPU µs per get (median; rounds) | hit | on disk per million keys |")
    print("| --- | --- | --- | --- |")
    for bits in args.bloom_bits:
        print(
            f"| {bits} | **{statistics.median(misses[bits]):.2f}** ({', '.join(f'{t:.2f}' for t in misses[bits])}) "
            f"| {statistics.median(found[bits]):.2f} | {sizes[bits]:.1f} MiB |"
        )


if __name__ == "__main__":
    main()
