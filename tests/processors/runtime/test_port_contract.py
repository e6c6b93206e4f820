"""The runtime's Kafka port, one scenario run on both of its implementations: aiokafka on a real broker and the
in-memory broker the engine tests use. Where they agree, a broker-free engine test says what a real one would:
fencing (a second producer with the task's transactional id), the fenced producer's open transaction aborted,
read_committed reads, offsets committed with the transaction, a refused record."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Awaitable, Callable

import pytest

from common.settings import KafkaSettings
from processors.runtime.kafka_clients import AiokafkaClients
from processors.runtime.ports import (
    KafkaClients,
    OutgoingRecord,
    ProducerFencedError,
    RecordRefusedError,
    TopicPartition,
)
from tests.processors.memory_kafka import MemoryKafka

pytestmark = pytest.mark.own_topics  # every topic, group and transactional id it uses is its own (tests/conftest.py)


async def scenario(clients: KafkaClients, topic: str, refused_topic: str | None) -> None:
    app, group = f"port-{uuid.uuid4().hex[:8]}", f"port-group-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)
    first = await clients.transactional_producer(app, 0, 1 << 20)
    await first.begin_transaction()
    await first.send_and_wait([OutgoingRecord(topic, 0, b"k", b"first", ())])

    second = await clients.transactional_producer(app, 0, 1 << 20)  # the partition's next owner

    async def finish_first() -> None:
        await first.send_offsets_to_transaction({tp: 1}, group)
        await first.commit_transaction()

    with pytest.raises(ProducerFencedError):
        await finish_first()
    await first.stop(5)

    assert await second.partition_count(topic) == 1
    await second.begin_transaction()
    last = await second.send_and_wait(
        [OutgoingRecord(topic, 0, b"k", b"second", ()), OutgoingRecord(topic, 0, b"k", b"third", ())]
    )
    await second.send_offsets_to_transaction({tp: 7}, group)
    await second.commit_transaction()

    async with clients.restore_consumer(0, [tp]) as reader:
        begin, end = (await reader.beginning_offsets([tp]))[tp], (await reader.end_offsets([tp]))[tp]
        assert last[(topic, 0)] < end
        reader.seek(tp, begin)
        values: list[bytes | None] = []
        while await reader.position(tp) < end:
            for records in (await reader.getmany(tp, timeout_ms=1000, max_records=100)).values():
                values += [r.value for r in records]
    assert values == [b"second", b"third"]  # the fenced producer's transaction was aborted

    consumer = clients.group_consumer(
        group_id=group, instance_id=None, session_timeout_ms=6000, max_poll_records=10, max_fetch_bytes=1 << 20
    )
    await consumer.start()
    try:
        assert await consumer.committed(tp) == 7  # committed with the transaction
    finally:
        await consumer.stop()

    if refused_topic is not None:
        await second.begin_transaction()
        with pytest.raises(RecordRefusedError):
            await second.send_and_wait([OutgoingRecord(refused_topic, 0, b"k", b"x" * 2_000, ())])
        await second.abort_transaction()
    await second.stop(5)


async def test_the_in_memory_broker() -> None:
    broker = MemoryKafka()
    broker.create_topic("out", 1)
    broker.create_topic("small", 1)
    broker.refuse = lambda out: out.topic == "small" and len(out.value or b"") > 1_000
    await scenario(broker, "out", "small")


async def test_aiokafka_on_a_broker(bootstrap: str, make_topic: Callable[..., Awaitable[str]]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    topic, small = await make_topic("port-out"), await make_topic("port-small")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, small, {"max.message.bytes": "1000"})])
    finally:
        await admin.close()
    await scenario(AiokafkaClients(KafkaSettings(bootstrap_servers=bootstrap)), topic, small)
    # aiokafka leaves the fenced request's future unretrieved: collected here, its "never retrieved" report is
    # logged now rather than from a garbage collection inside a later C call (CPython 3.11's ast.parse broke).
    gc.collect()
