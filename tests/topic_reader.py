"""One partition of a topic read from its beginning to its end offset, committed records only (aborted
transactions' records skipped): what the Kafka tests check of a producer's outcome."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord


async def read_to_end(
    bootstrap: str, topic: str, partition: int = 0, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        got: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while await consumer.position(tp) < end:
            assert time.monotonic() < deadline, f"could not read {topic}[{partition}] to its end in {timeout_s:g} s"
            for records in (await consumer.getmany(tp, timeout_ms=300)).values():
                got += records
        return got
    finally:
        await consumer.stop()
