"""The processors' lag figures against the real broker: committed offsets set by a real group commit,
records with known timestamps, and an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from common.settings import KafkaSettings
from processors.lag import LagMonitor, PartitionLag

pytestmark = pytest.mark.own_topics  # every topic, group and transactional id it uses is its own (tests/conftest.py)

T0_MS = 1_700_000_000_000


async def test_lag_and_oldest_unprocessed_age(
    bootstrap: str, make_topic: Callable[..., Any], unique: Callable[[str], str]
) -> None:
    first, second = await make_topic("lag-a", partitions=2), await make_topic("lag-b", partitions=2)
    group = unique("lag-group")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(5):  # 5 records on first[0], one second apart
            await producer.send_and_wait(first, b"v", partition=0, timestamp_ms=T0_MS + i * 1000)
        await producer.send_and_wait(second, b"v", partition=1, timestamp_ms=T0_MS)
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        tp = TopicPartition(first, 0)
        committer.assign([tp])
        await committer.commit({tp: OffsetAndMetadata(2, "")})  # records 0 and 1 processed
    finally:
        await committer.stop()

    now = T0_MS / 1000 + 60
    assigned = {0, 1}
    monitor = LagMonitor(
        KafkaSettings(bootstrap_servers=bootstrap), group, [first, second], lambda: assigned, clock=lambda: now
    )
    await monitor.start()
    try:
        lags = {(x.topic, x.partition): x for x in await monitor.sample()}
        assert lags == {
            (first, 0): PartitionLag(first, 0, 3, 58.0),  # offsets 2..4; the oldest was received at T0 + 2 s
            (first, 1): PartitionLag(first, 1, 0, 0.0),  # empty
            (second, 0): PartitionLag(second, 0, 0, 0.0),
            (second, 1): PartitionLag(second, 1, 1, 60.0),  # nothing committed: from the first retained record
        }
        assigned.discard(1)  # revoked: no longer reported by this instance
        assert {(x.topic, x.partition) for x in await monitor.sample()} == {(first, 0), (second, 0)}
    finally:
        await monitor.stop()
