"""The ground floor: the real broker does what the connector relies on (issue #2 acceptance)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

pytestmark = pytest.mark.own_topics  # every topic, group and transactional id it uses is its own (tests/conftest.py)


async def _consume_all(bootstrap: str, topic: str, expect: int, **kwargs: Any) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **kwargs)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 15
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        # Linger briefly so that records which must NOT be there get the chance to show up.
        for part in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(part)
    finally:
        await consumer.stop()
    return records


async def _group_offset(bootstrap: str, group: str, tp: TopicPartition, wait_for: int | None) -> int | None:
    """The group's committed offset; transaction markers land asynchronously, so poll briefly."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            offset = offsets[tp].offset if tp in offsets else None
            if offset == wait_for or time.monotonic() > deadline:
                return offset
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def test_round_trip_keeps_keys_headers_and_partition(bootstrap: str, make_topic: Callable[..., Any]) -> None:
    topic = await make_topic("roundtrip", partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = []
        for i in range(30):
            key = f"account-{i % 5}".encode()
            meta = await producer.send_and_wait(topic, f"v{i}".encode(), key=key, headers=[("event_id", b"e%d" % i)])
            sent.append((key, meta.partition))
    finally:
        await producer.stop()
    records = await _consume_all(bootstrap, topic, 30)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(30))
    by_key: dict[bytes, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
        assert r.headers == (("event_id", b"e" + r.value[1:]),)
    # One key, one partition: the property the processors' per-account state relies on.
    assert all(len(parts) == 1 for parts in by_key.values())
    assert {k: next(iter(p)) for k, p in by_key.items()} == dict(sent)


async def test_read_committed_sees_committed_and_not_aborted(
    bootstrap: str, make_topic: Callable[..., Any], unique: Callable[[str], str]
) -> None:
    topic = await make_topic("txn")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("txn"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1")
            await producer.send(topic, b"committed-2")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-3")
    finally:
        await producer.stop()
    committed = await _consume_all(bootstrap, topic, 3, isolation_level="read_committed")
    assert [r.value for r in committed] == [b"committed-1", b"committed-2", b"committed-3"]
    uncommitted = await _consume_all(bootstrap, topic, 4, isolation_level="read_uncommitted")
    assert b"aborted" in [r.value for r in uncommitted]


async def test_send_offsets_to_transaction_moves_group_offset_only_on_commit(
    bootstrap: str, make_topic: Callable[..., Any], unique: Callable[[str], str]
) -> None:
    source = await make_topic("offsets-in")
    sink = await make_topic("offsets-out")
    group = unique("group")
    tp = TopicPartition(source, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("offsets"))
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send(sink, b"x")
        await producer.send_offsets_to_transaction({tp: 7}, group)
        await producer.abort_transaction()
        assert await _group_offset(bootstrap, group, tp, wait_for=None) is None

        await producer.begin_transaction()
        await producer.send(sink, b"y")
        await producer.send_offsets_to_transaction({tp: 11}, group)
        await producer.commit_transaction()
        assert await _group_offset(bootstrap, group, tp, wait_for=11) == 11

        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({tp: 20}, group)
        await producer.abort_transaction()
        await asyncio.sleep(0.5)
        assert await _group_offset(bootstrap, group, tp, wait_for=11) == 11
    finally:
        await producer.stop()
    assert [r.value for r in await _consume_all(bootstrap, sink, 1, isolation_level="read_committed")] == [b"y"]


async def test_new_producer_with_same_transactional_id_fences_the_old_one(
    bootstrap: str, make_topic: Callable[..., Any], unique: Callable[[str], str]
) -> None:
    from aiokafka.errors import KafkaError

    topic = await make_topic("fence")
    txn_id = unique("fence")
    old = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id)
    new = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id)
    await old.start()
    try:
        await old.begin_transaction()
        await old.send(topic, b"zombie")
        await new.start()  # InitProducerId bumps the epoch and aborts the old open transaction
        async with new.transaction():
            await new.send(topic, b"owner")
        fenced = False
        try:
            await old.commit_transaction()
        except KafkaError:
            fenced = True
        assert fenced, "the old producer must not be able to commit after being fenced"
    finally:
        await new.stop()
        with contextlib.suppress(KafkaError):
            await old.stop()
    assert [r.value for r in await _consume_all(bootstrap, topic, 1, isolation_level="read_committed")] == [b"owner"]
