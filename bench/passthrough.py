"""The processors' baseline as a service: `python -m bench.passthrough <output topic>`.

The same runtime as `pinwheel-connector processor` (consumer group, one transactional producer per partition,
commit interval, /readyz) with a processor that copies each family record to one output topic, so what the
pipeline costs on top is its own work. Configured like the processors (PROCESSOR_*, KAFKA_*).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable

from aiokafka.structs import ConsumerRecord

from common.settings import KafkaSettings
from processors.pipeline import PipelineCounters
from processors.runtime.engine import Engine
from processors.runtime.task import OutRecord, TaskContext
from processors.service import run_until_signal, serve_engine
from processors.settings import ProcessorSettings
from schemas import catalog
from schemas.topics import DEADLETTER_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES


class Passthrough:
    """Each input record copied to one output topic, in the task's transactions."""

    def __init__(self, ctx: TaskContext, output: str) -> None:
        self.ctx = ctx
        self.output = output

    def event_time(self, record: ConsumerRecord[bytes, bytes]) -> int:
        return int(record.timestamp) * 1000

    def process(self, record: ConsumerRecord[bytes, bytes], watermark_us: int) -> None:
        self.ctx.emit(OutRecord(self.output, record.key, record.value, record.headers))

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        pass

    def end_of_batch(self) -> None:
        pass

    def reject(self, record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> None:
        raise RuntimeError(f"the broker refused the copy of {record.topic}/{record.partition}@{record.offset}: {error}")


def passthrough_engine(settings: ProcessorSettings, kafka: KafkaSettings, output: str) -> Engine:
    return Engine(
        settings,
        kafka,
        list(catalog.FAMILY_TOPICS.values()),
        {},
        lambda ctx: Passthrough(ctx, output),
        max_fetch_bytes=MAX_MESSAGE_BYTES,
        max_request_bytes=DEADLETTER_MAX_MESSAGE_BYTES,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the topic each input record is copied to")
    settings, output = ProcessorSettings(), parser.parse_args(argv).output

    def serve(stop: asyncio.Event) -> Awaitable[None]:
        engine = passthrough_engine(settings, KafkaSettings(), output)
        return serve_engine(settings, engine, PipelineCounters(), stop)

    run_until_signal(settings, serve)


if __name__ == "__main__":
    main()
