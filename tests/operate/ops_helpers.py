"""Readers that share no code with the commands under test: plain aiokafka consumers and the admin client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def read_topic(bootstrap: str, topic: str, keep: Any) -> list[Any]:
    """Every committed record of `topic` for which keep(record) holds (plain consumer, up to the end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, topic
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        found = []
        for tp in tps:
            while await consumer.position(tp) < end[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    if record.offset < end[tp] and keep(record):
                        found.append(record)
        return found
    finally:
        await consumer.stop()


async def caught_up(bootstrap: str, group: str, topics: list[str], timeout_s: float = 60) -> None:
    """Wait until the group's committed offsets reach the end of `topics`: the processors have taken all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        assert tps, topics
        end = await consumer.end_offsets(tps)
        beginning = await consumer.beginning_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while True:
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
            # -1: nothing committed, which is caught up only for an empty partition
            committed = {tp: beginning[tp] if offsets[tp].offset < 0 else offsets[tp].offset for tp in tps}
            behind = {tp: end[tp] - committed[tp] for tp in tps if committed[tp] < end[tp]}
            if not behind:
                return
            assert time.monotonic() < deadline, f"processors not caught up: {behind}"
            await asyncio.sleep(0.3)
    finally:
        await consumer.stop()
        await admin.close()


def header(record: Any, name: str) -> bytes | None:
    return next((bytes(v) for k, v in record.headers or () if k == name), None)
