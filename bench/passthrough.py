"""The processors' baseline as a service: `python -m bench.passthrough <output topic>`.

The same runtime as `pinwheel-connector processor` (consumer group, one transactional producer per partition,
commit interval, /readyz) with a processor that copies each family record to one output topic, so what the
pipeline costs on top is its own work. Configured like the processors (PROCESSOR_*, KAFKA_*).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import uvicorn
from aiokafka.structs import ConsumerRecord

from connector import logs
from connector.settings import KafkaSettings
from processors.pipeline import PipelineCounters
from processors.runtime.engine import Engine
from processors.runtime.settings import ProcessorSettings
from processors.runtime.task import OutRecord, TaskContext
from processors.service import health_app
from schemas import catalog


class Passthrough:
    """Each input record copied to one output topic, in the task's transactions."""

    def __init__(self, ctx: TaskContext, output: str) -> None:
        self.ctx = ctx
        self.output = output

    def process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.ctx.emit(OutRecord(self.output, record.key, record.value, record.headers))

    def punctuate(self, wall_clock_ms: int) -> None:
        pass

    def end_of_batch(self) -> None:
        pass


def passthrough_engine(settings: ProcessorSettings, kafka: KafkaSettings, output: str) -> Engine:
    return Engine(settings, kafka, list(catalog.FAMILY_TOPICS.values()), {}, lambda ctx: Passthrough(ctx, output))


async def serve(settings: ProcessorSettings, output: str, stop: asyncio.Event) -> None:
    engine = passthrough_engine(settings, KafkaSettings(), output)
    config = uvicorn.Config(
        health_app(engine, PipelineCounters(), time.monotonic()),
        host=settings.health_host,
        port=settings.health_port,
        log_config=logs.uvicorn_log_config("WARNING", ["processors"]),
        access_log=False,
    )
    server = uvicorn.Server(config)
    # As in processors.service: uvicorn re-raises the signals it captured when it stops, reaching `stop`.
    health = asyncio.create_task(server.serve())
    try:
        await engine.run(stop)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await health


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.passthrough <output topic>")
    settings = ProcessorSettings()
    logs.configure(settings.log_level, ["processors"])

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, sys.argv[1], stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
