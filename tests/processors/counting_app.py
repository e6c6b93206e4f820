"""A minimal stateful application on the processing runtime, for testing the runtime itself.

It counts records per key in a changelog-backed store and emits `<count>:<value>` for each record, so
exactly-once is checkable from the output alone: per key the counts must be 1, 2, 3, ... with every
input value exactly once. Run as a subprocess so tests can kill it with SIGKILL.

With `--output-logged` the output topic is the store's changelog (`TaskState.output_logged`, as the account
state topic is the accounts store's): each output goes to the task's partition, nothing else is written for the
store, and the restore reads the counts back from the outputs.

With `--expiring` the store is logged as an expiring store's (`TaskState.expiring`): one record per transaction
holding every count it put, on a log that is not compacted (`--changelog` must name one); its restore reads
them all, the later counts of a key over the earlier.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from common.settings import KafkaSettings
from processors.runtime.engine import Engine
from processors.runtime.restore import ChangelogRecord, ChangelogUnreadable
from processors.runtime.task import BatchFailed, OutRecord, TaskContext, TaskProcessor
from processors.settings import ProcessorSettings
from schemas.topics import DEADLETTER_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES


class Counter:
    def __init__(
        self,
        ctx: TaskContext,
        output: str,
        fail_at: bytes | None = None,
        fail_batch_at: bytes | None = None,
        output_logged: bool = False,
    ) -> None:
        self.ctx = ctx
        self.output = output
        self.partition = ctx.partition if output_logged else None
        self.fail_at = fail_at
        self.fail_batch_at = fail_batch_at
        self.batch_poisoned = False

    def event_time(self, record: ConsumerRecord[bytes, bytes]) -> int:
        return int(record.timestamp) * 1000

    def process(self, record: ConsumerRecord[bytes, bytes], watermark_us: int) -> None:
        assert record.key is not None
        count = int(self.ctx.state.get("counts", record.key) or b"0") + 1
        self.ctx.state.put("counts", record.key, str(count).encode())
        if record.value == self.fail_at:
            # A bug half-way through a record: state written, output not. None of it may be committed.
            raise RuntimeError("injected processing failure")
        self.batch_poisoned |= record.value == self.fail_batch_at
        self.ctx.emit(OutRecord(self.output, record.key, b"%d:%s" % (count, record.value), (), self.partition))

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        pass

    def end_of_batch(self) -> None:
        if self.batch_poisoned:
            # An output covering the whole batch cannot be made; the runtime must find the record behind it.
            self.batch_poisoned = False
            raise BatchFailed("injected", "injected end-of-batch failure")

    def reject(self, record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> None:
        # The broker refused this record's output: say so in its place, without counting it.
        assert record.key is not None
        self.ctx.emit(OutRecord(self.output, record.key, b"rejected:%d" % record.offset))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--changelog", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--fail-at", default=None, help="raise while processing the record with this value")
    parser.add_argument("--fail-batch-at", default=None, help="fail the end of a batch holding this value")
    parser.add_argument("--output-logged", action="store_true", help="the output topic is the store's changelog")
    parser.add_argument("--expiring", action="store_true", help="the store is logged one record per transaction")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = ProcessorSettings(
        application_id=args.app_id,
        instance_id=args.instance_id,
        state_dir=args.state_dir,
        commit_interval_ms=args.commit_interval_ms,
        session_timeout_ms=6000,
        health_port=0,
    )

    def factory(ctx: TaskContext) -> TaskProcessor:
        fail_batch_at = args.fail_batch_at.encode() if args.fail_batch_at else None
        fail_at = args.fail_at.encode() if args.fail_at else None
        return Counter(ctx, args.output, fail_at, fail_batch_at, args.output_logged)

    async def counts_of_outputs(store: str, records: Sequence[ChangelogRecord]) -> list[tuple[bytes, bytes | None]]:
        counts = []
        for key, value, _ in records:
            count, colon, _ = (value or b"").partition(b":")
            if not colon or not count.isdigit():
                raise ChangelogUnreadable(f"not a count: {value!r}")
            counts.append((key, count))
        return counts

    engine = Engine(
        settings,
        KafkaSettings(bootstrap_servers=args.bootstrap),
        [args.input],
        {"counts": args.output if args.output_logged else args.changelog},
        factory,
        max_fetch_bytes=MAX_MESSAGE_BYTES,
        max_request_bytes=DEADLETTER_MAX_MESSAGE_BYTES,
        output_logged=("counts",) if args.output_logged else (),
        translate=counts_of_outputs,
        expiring=("counts",) if args.expiring else (),
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await engine.run(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
