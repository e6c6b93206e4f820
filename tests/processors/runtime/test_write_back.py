"""The write-back overlay in front of a task's RocksDB: reads see the open transaction's writes, only the last
write of a key per commit reaches the changelog and RocksDB, a deletion goes through as a tombstone, and an
aborted transaction leaves nothing behind. The changelog is read back with a plain read_committed consumer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from rocksdict import AccessType, Options, Rdict

from common.settings import KafkaSettings
from processors.runtime.kafka_clients import start_producer
from processors.runtime.ordering import END_OF_TIME
from processors.runtime.state import TaskState
from processors.runtime.task import OutRecord, Task, TaskContext
from tests.topic_reader import read_to_end


@pytest.fixture
def state(tmp_path: Path) -> Iterator[TaskState]:
    task_state = TaskState(tmp_path / "task", "app", 0, {"s": "app-s-changelog"})
    yield task_state
    task_state.close()


def rocksdb_value(state: TaskState, key: bytes) -> bytes | None:
    """What RocksDB itself holds for store "s", past the write-back overlay. TaskState's own handle: the stores
    write without a WAL, so a second handle sees only what a flush has put in SST files."""
    value: bytes | None = state._db.get(b"s\x00" + key)
    return value


def test_reads_see_uncommitted_writes_and_the_last_write_wins(state: TaskState) -> None:
    assert state.get("s", b"k") is None
    state.put("s", b"k", b"1")
    state.put("s", b"k", b"2")
    assert state.get("s", b"k") == b"2"
    state.put("s", b"k", b"3")
    assert list(state.pending_writes()) == [("s", b"k", b"3")]
    assert rocksdb_value(state, b"k") is None  # nothing reaches RocksDB before the commit
    state.committed({"s": 1})
    assert rocksdb_value(state, b"k") == b"3"
    assert state.get("s", b"k") == b"3"
    assert list(state.pending_writes()) == []


def test_an_abort_leaves_the_committed_values(state: TaskState) -> None:
    state.put("s", b"k", b"committed")
    state.committed({"s": 1})
    state.put("s", b"k", b"aborted")
    state.put("s", b"other", b"aborted")
    state.discard()
    assert list(state.pending_writes()) == []
    assert state.get("s", b"k") == b"committed"
    assert state.get("s", b"other") is None


def test_a_deletion_reaches_rocksdb_as_a_tombstone(state: TaskState) -> None:
    state.put("s", b"k", b"v")
    state.committed({"s": 1})
    assert state.get("s", b"k") == b"v"
    state.delete("s", b"k")
    assert state.get("s", b"k") is None
    assert list(state.pending_writes()) == [("s", b"k", None)]
    state.committed({"s": 2})
    assert state.get("s", b"k") is None
    assert rocksdb_value(state, b"k") is None
    assert list(state.range("s", b"", b"\xff")) == []


def test_a_clean_close_leaves_the_committed_values_on_disk(tmp_path: Path) -> None:
    """Without a WAL, committed writes live in the memtable until a flush: closing the store must flush them."""
    task_state = TaskState(tmp_path / "task", "app", 0, {"s": "app-s-changelog"})
    task_state.put("s", b"k", b"v")
    task_state.committed({"s": 1})
    task_state.close()
    db = Rdict(str(tmp_path / "task"), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        assert db.get(b"s\x00k") == b"v"
    finally:
        db.close()


class Writer:
    """A processor that holds its writes back until the commit's flush, as the account pipeline does."""

    def __init__(self, ctx: TaskContext, output: str) -> None:
        self.ctx = ctx
        self.output = output
        self.held: dict[bytes, bytes | None] = {}
        self.flushes = 0

    def event_time(self, record: ConsumerRecord[bytes, bytes]) -> int:
        return int(record.timestamp) * 1000

    def process(self, record: ConsumerRecord[bytes, bytes], watermark_us: int) -> None:
        assert record.key is not None
        if record.value == b"delete":
            self.held[record.key] = None
        else:
            self.held[record.key] = record.value

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        pass

    def end_of_batch(self) -> None:
        self.flushes += 1
        for key, value in self.held.items():
            if value is None:
                self.ctx.state.delete("s", key)
            else:
                self.ctx.state.put("s", key, value)
            self.ctx.emit(OutRecord(self.output, key, value))
        self.held.clear()

    def reject(self, record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> None:
        pass


def record(topic: str, offset: int, key: bytes, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), [])


async def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(r.key, r.value) for r in await read_to_end(bootstrap, topic)]


async def test_the_commit_flushes_the_last_write_of_each_key_and_tombstones(
    bootstrap: str, make_topic: Callable[..., Any], unique: Callable[[str], str], tmp_path: Path
) -> None:
    source = await make_topic("cache-in")
    output = await make_topic("cache-out")
    changelog = await make_topic("cache-changelog", compact=True)
    app = unique("cache-app")
    state = TaskState(tmp_path / "task", app, 0, {"s": changelog})
    producer = await start_producer(KafkaSettings(bootstrap_servers=bootstrap), app, 0, max_request_bytes=1 << 20)
    task = Task(0, state, producer, app, commit_timeout_s=30)
    writer = Writer(task, output)
    task.restoring()
    task.run(lambda ctx: writer)
    try:
        task.process([record(source, i, b"a", b"a%d" % i) for i in range(5)], END_OF_TIME)
        task.process([record(source, 5, b"b", b"b0"), record(source, 6, b"c", b"c0")], END_OF_TIME)
        assert writer.flushes == 0  # nothing written back between batches
        assert await task.commit() == 7
        assert writer.flushes == 1
        task.process([record(source, 7, b"b", b"delete"), record(source, 8, b"a", b"a9")], END_OF_TIME)
        assert await task.commit() == 2
        # The next commit's writes are aborted: the task drops them.
        task.process([record(source, 9, b"a", b"never")], END_OF_TIME)
        task.flush()
        task.discard()
        assert list(state.pending_writes()) == []
        assert state.get("s", b"a") == b"a9"
        assert await task.commit() == 0
    finally:
        await task.close()
    expected = [(b"a", b"a4"), (b"b", b"b0"), (b"c", b"c0"), (b"b", None), (b"a", b"a9")]
    assert await read_all(bootstrap, changelog) == expected  # one record per key and commit, a tombstone
    assert await read_all(bootstrap, output) == expected
