"""A local store ahead of Kafka is rebuilt, not trusted.

The local store takes a transaction's writes once its commit returned. Should Kafka then not have that transaction
committed after all (a chaos run lost the events of one acknowledged transaction around a broker SIGKILL:
docs/reliability.md, "Failures seen"), the store would hold entries its changelog lacks, and the inputs' committed
offsets would be behind it: their replay would be dropped as duplicates. The checkpoint records the input offsets
its commits committed; when the group's committed offsets are behind them, the store is restored from scratch.

Here the state is told that an aborted transaction committed (what the task would have done had Kafka lost the
commit), on both implementations of the runtime's Kafka port: aiokafka on the real broker, and the in-memory one.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from processors.runtime.kafka_clients import AiokafkaClients
from processors.runtime.ports import KafkaClients, OutgoingRecord, TopicPartition, input_key
from processors.runtime.restore import ahead_of_inputs, restore
from processors.runtime.state import TaskState
from tests.processors.memory_kafka import MemoryKafka

pytestmark = pytest.mark.own_topics


def test_ahead_of_inputs() -> None:
    checkpoint = {"in:0": 5, "in:1": 9, "other:0": 3}
    assert ahead_of_inputs(checkpoint, {"in:0": 5, "in:1": 12, "other:0": 3}) == []  # at or past: behind the store
    assert ahead_of_inputs(checkpoint, {"in:0": 4, "in:1": None, "other:0": 3}) == ["in:0", "in:1"]
    assert ahead_of_inputs(checkpoint, {"in:0": 5}) == []  # not this task's input any more: nothing to say
    assert ahead_of_inputs({}, {"in:0": None}) == []  # restored: nothing committed since


async def scenario(clients: KafkaClients, changelog: str, source: str, path: Path) -> None:
    app = f"ahead-{uuid.uuid4().hex[:8]}"
    source_tp = TopicPartition(source, 0)
    state = TaskState(path, app, 0, {"s": changelog})
    producers = [await clients.transactional_producer(app, 0, 1 << 20)]

    async def write(key: bytes, value: bytes, next_offset: int, *, commit: bool) -> None:
        """A transaction writing key=value and the input offset; the local store takes it as if it committed."""
        producer = producers[-1]
        await producer.begin_transaction()
        last = await producer.send_and_wait([OutgoingRecord(changelog, 0, key, value, ())])
        await producer.send_offsets_to_transaction({source_tp: next_offset}, app)
        if commit:
            await producer.commit_transaction()
        else:
            await producer.abort_transaction()
        state.put("s", key, value)
        state.committed({"s": last[(changelog, 0)] + 1}, {input_key(source_tp): next_offset})

    async def restore_as_the_engine() -> tuple[bool, int]:
        # As a task starts: its producer initialised first, which waits until the last transaction is complete
        # (its markers written, its offsets committed or dropped), then the committed offsets read.
        await producers[-1].stop(5)
        producers.append(await clients.transactional_producer(app, 0, 1 << 20))
        consumer = clients.group_consumer(
            group_id=app, instance_id=None, session_timeout_ms=6000, max_poll_records=10, max_fetch_bytes=1 << 20
        )
        await consumer.start()
        try:
            committed = await consumer.committed(source_tp)
        finally:
            await consumer.stop()
        checkpoint = state.checkpoint()
        assert checkpoint is not None
        ahead = ahead_of_inputs(checkpoint.inputs, {input_key(source_tp): committed})
        stats = await restore(state, clients, 3600, from_scratch=bool(ahead))
        return stats.from_scratch, stats.records

    try:
        await write(b"a", b"1", 5, commit=True)
        assert await restore_as_the_engine() == (False, 0)  # its commit is Kafka's: trusted, nothing to catch up
        assert state.get("s", b"a") == b"1"

        await write(b"b", b"2", 9, commit=False)  # Kafka does not have it: the store is ahead of offset 5
        assert await restore_as_the_engine() == (True, 1)  # rebuilt from the one committed record
        assert (state.get("s", b"a"), state.get("s", b"b")) == (b"1", None)

        await write(b"c", b"3", 12, commit=True)
        await write(b"a", b"4", 15, commit=True)
        assert await restore_as_the_engine() == (False, 0)
        assert [state.get("s", k) for k in (b"a", b"b", b"c")] == [b"4", None, b"3"]
    finally:
        await producers[-1].stop(5)
        state.close()


async def test_the_in_memory_broker(tmp_path: Path) -> None:
    broker = MemoryKafka()
    broker.create_topic("changelog", 1)
    broker.create_topic("source", 1)
    await scenario(broker, "changelog", "source", tmp_path / "state")


async def test_aiokafka_on_a_broker(bootstrap: str, make_topic: Callable[..., Awaitable[str]], tmp_path: Path) -> None:
    changelog, source = await make_topic("ahead-changelog", compact=True), await make_topic("ahead-source")
    await scenario(AiokafkaClients(KafkaSettings(bootstrap_servers=bootstrap)), changelog, source, tmp_path / "state")
