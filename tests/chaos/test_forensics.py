"""chaos/forensics.py against the real broker: a lost event's records are found where they are, and a record of
an aborted transaction is told from a committed one."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer

from chaos import forensics
from common.settings import KafkaSettings

pytestmark = pytest.mark.kafka


async def test_finds_committed_aborted_and_absent_events(
    bootstrap: str, make_topic: Callable[..., Awaitable[str]], unique: Callable[[str], str]
) -> None:
    topic = await make_topic("forensics", partitions=2)
    committed, aborted, absent, other = (str(uuid.uuid4()) for _ in range(4))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("forensics"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"\x02avro " + committed.encode() + b" tail", key=b"a", partition=1)
            await producer.send_and_wait(topic, other.encode(), key=b"b", partition=0)
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"body", key=b"c", partition=0, headers=[("event_id", aborted.encode())])
        await producer.abort_transaction()
    finally:
        await producer.stop()

    report = await forensics.investigate(
        KafkaSettings(bootstrap_servers=bootstrap), [committed, aborted, absent], topics=[topic]
    )

    [seen] = report["records"][committed]
    assert (seen["topic"], seen["partition"], seen["offset"], seen["key"]) == (topic, 1, 0, "a")
    assert seen["read_committed_sees_it"] is True
    [hidden] = report["records"][aborted]
    assert (hidden["partition"], hidden["headers"], hidden["read_committed_sees_it"]) == (0, ["event_id"], False)
    assert report["records"][absent] == []
    ends = report["partitions"][topic]
    assert ends["1"]["end"] == ends["1"]["last_stable"] == 2  # the record and the commit marker
    assert ends["0"]["end"] == 4  # other's record, its marker, the aborted record, the abort marker
    lines = forensics.summary(report)
    assert lines == [
        f"{committed}: {topic}[1]@0",
        f"{aborted}: {topic}[0]@2 (uncommitted)",
        f"{absent}: in no topic",
    ]
