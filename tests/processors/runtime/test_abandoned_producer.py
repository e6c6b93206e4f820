"""A task closed while its broker is down abandons its transactional producer, and abandons it completely.

Issue 25: `producer.stop()` never returns without the broker (it waits for the accumulator's batches), so
the task gave up on it after 10 s, but the producer's sender kept retrying in the background until the
next owner of the partition fenced it, and every future it failed then was logged as "Future exception was
never retrieved". On a private broker (killing it must not disturb other tests).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSpec, ensure_topics
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaSettings
from processors.runtime.kafka_clients import start_producer
from processors.runtime.state import TaskState
from processors.runtime.task import OutRecord, Task, TaskFailed
from tests.processors.counting_app import Counter
from tests.topic_reader import read_to_end

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def private_broker(kafka: Any) -> Iterator[LocalKafka]:
    # `kafka` first: the session broker has fetched the jars this one reuses.
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-abandoned-producer-"))
    broker = LocalKafka(LocalKafkaSettings(port=free_port(NODE_PORT_SPAN), data_dir=data_dir), progress=lambda _: None)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def task_for(app: str, producer: Any, path: Path) -> Task:
    task = Task(0, TaskState(path, app, 0, {}), producer, group_id=app, commit_timeout_s=5.0)
    task.restoring()
    task.run(lambda ctx: Counter(ctx, "unused"))  # the test emits its outputs itself
    return task


async def test_a_task_closed_while_its_broker_is_down_leaves_nothing_running(
    private_broker: LocalKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    before = asyncio.all_tasks()
    kafka = KafkaSettings(bootstrap_servers=private_broker.bootstrap, request_timeout_ms=5000)
    app, topic = f"abandon-{uuid.uuid4().hex[:8]}", f"abandon-out-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [TopicSpec(topic, partitions=1)])
    task = task_for(app, await start_producer(kafka, app, 0, 1 << 20), tmp_path / "first")
    task.emit(OutRecord(topic, b"k", b"one", partition=0))
    await task.commit()

    await asyncio.to_thread(private_broker.kill)
    task.emit(OutRecord(topic, b"k", b"two", partition=0))
    with pytest.raises(TaskFailed):
        await task.commit()
    started = time.monotonic()
    await task.close()
    closed_in = time.monotonic() - started
    seen = len(caplog.records)
    await asyncio.sleep(1)  # a retry still scheduled would run by now
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert not leftover, [t.get_coro() for t in leftover]

    # The broker back and the partition's next owner fencing the old producer: nothing of it may stir.
    await asyncio.to_thread(private_broker.start)
    successor = task_for(app, await start_producer(kafka, app, 0, 1 << 20), tmp_path / "second")
    successor.emit(OutRecord(topic, b"k", b"three", partition=0))
    await successor.commit()
    await successor.close()
    await asyncio.sleep(3)
    gc.collect()  # an unretrieved exception is reported when its future is collected
    await asyncio.sleep(0)
    assert [r.value for r in await read_to_end(private_broker.bootstrap, topic)] == [b"one", b"three"]
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records[seen:] if r.levelno >= logging.ERROR]
    assert not errors, errors
    print(f"\n[abandon] task closed {closed_in:.1f} s after a failed commit with the broker down")
