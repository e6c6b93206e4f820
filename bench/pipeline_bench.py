"""CPU per event of the account pipeline alone, no broker: ``python -m bench.pipeline_bench [--events N]``.

The processors' bench traffic (`processor_bench.encode_inputs`: family records as the gateway publishes them) goes
through a real `AccountPipeline` (the service's readiness rule, `READINESS_RULE` or its default) over a real
`TaskState` (RocksDB in a temporary directory), in commits of `--batch` records, each ending as the runtime's does:
`end_of_batch` (the flush), the changelog writes read from the overlay, then the local store's commit. What this
leaves out is the runtime's Kafka work (fetch, produce, transaction), which `bench.processor_bench`'s passthrough
measures. `--profile FILE` writes a cProfile of the measured rounds. Times are this process's CPU time, the median
of `--rounds`, with the service's garbage-collector settings (`common/gc_tuning.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import tempfile
import time
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from bench.processor_bench import InputRecord, encode_inputs
from common import gc_tuning
from processors.logic.config import LogicSettings
from processors.logic.stores import LOGGED_STORE_NAMES
from processors.pipeline import LOG_APPEND_TIME, AccountPipeline, PipelineCounters, pipeline_task_state
from processors.readiness import ReadinessSettings
from processors.runtime.task import RecordingContext
from schemas.codec import Codec


def _consumer_records(inputs: list[InputRecord]) -> list[ConsumerRecord[bytes, bytes]]:
    now_ms = int(time.time() * 1000)
    return [
        ConsumerRecord(
            topic=r.topic,
            partition=0,
            offset=offset,
            timestamp=now_ms,
            timestamp_type=LOG_APPEND_TIME,
            key=r.key,
            value=r.value,
            checksum=None,
            serialized_key_size=len(r.key),
            serialized_value_size=len(r.value),
            headers=r.headers,
        )
        for offset, r in enumerate(inputs)
    ]


def run_once(records: list[ConsumerRecord[bytes, bytes]], batch: int, profile: cProfile.Profile | None) -> float:
    """CPU seconds to process `records` in commits of `batch`, on fresh state."""
    codec = Codec()
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        ctx = RecordingContext(pipeline_task_state(Path(tmp), "bench", 0))
        config = LogicSettings().logic_config(ReadinessSettings().parsed())  # the service's, readiness included
        pipeline = AccountPipeline(ctx, codec, config, PipelineCounters())
        position = 0
        start = time.process_time()
        if profile is not None:
            profile.enable()
        for i in range(0, len(records), batch):
            for record in records[i : i + batch]:
                pipeline.process(record)
            pipeline.end_of_batch()
            writes = sum(1 for _ in ctx.state.pending_writes())  # what the commit hands the producer
            position += writes
            ctx.state.committed(dict.fromkeys(LOGGED_STORE_NAMES, position))
            ctx.emitted.clear()
        if profile is not None:
            profile.disable()
        spent = time.process_time() - start
        ctx.state.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=250, help="records per commit (the engine's: ~220)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the rounds here")
    args = parser.parse_args()
    records = _consumer_records(asyncio.run(encode_inputs(args.events)))
    gc_tuning.tune_for_throughput()  # as the processor service runs
    profile = cProfile.Profile() if args.profile else None
    times = [run_once(records, args.batch, profile) for _ in range(args.rounds)]
    median = statistics.median(times)
    print(
        f"pipeline alone: {len(records):,} events in commits of {args.batch}; "
        f"{median / len(records) * 1e6:.1f} µs CPU per event (median of {args.rounds}: "
        + " / ".join(f"{t / len(records) * 1e6:.1f}" for t in times)
        + f"), {len(records) / median:,.0f} events per CPU s"
    )
    if profile is not None:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
