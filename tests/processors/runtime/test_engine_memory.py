"""The exactly-once engine, broker-free: the real Engine and Task over the in-memory transactional broker.

Restore, commit failures, put-back, isolation of a refused or failed batch, rebalances and fencing, each in
milliseconds. The kill -9 and fencing runs on a real broker (test_exactly_once.py, test_abandoned_producer.py)
prove the port faithful; these prove the engine's logic over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.backoff import Backoff
from common.settings import KafkaSettings
from processors.runtime.engine import Engine
from processors.runtime.lifecycle import TaskPhase
from processors.runtime.ports import OutgoingRecord, Record, TopicPartition
from processors.runtime.retry import RetryLater
from processors.runtime.settings import RuntimeSettings
from processors.runtime.task import OutRecord, Task, TaskContext, TaskProcessor, transactional_id
from tests.processors.counting_app import Counter
from tests.processors.memory_kafka import MemoryKafka

APP = "counter"
INPUT, OUTPUT, CHANGELOG = "in", "out", "counts-changelog"
PARTITIONS = 3
CREATED, RESTORING, RUNNING = TaskPhase.CREATED, TaskPhase.RESTORING, TaskPhase.RUNNING
SUSPENDED, FAILED, CLOSED = TaskPhase.SUSPENDED, TaskPhase.FAILED, TaskPhase.CLOSED


@dataclass
class Cluster:
    """One in-memory broker, the counting application's topics and the values sent per key."""

    broker: MemoryKafka
    state_root: Path
    sent: dict[bytes, list[bytes]] = field(default_factory=dict)
    produced: int = 0
    tasks: list[Task] = field(default_factory=list)  # every task the engines built, in order

    def produce(self, count: int, keys: int = 6) -> None:
        for _ in range(count):
            i = self.produced
            key, value = b"k%02d" % (i % keys), b"v%06d" % i
            self.broker.produce(INPUT, i % keys % PARTITIONS, key, value, timestamp_ms=1_700_000_000_000 + i)
            self.sent.setdefault(key, []).append(value)
            self.produced += 1

    def engine(
        self,
        instance: str = "a",
        factory: Callable[[TaskContext], TaskProcessor] | None = None,
        before_batch: Callable[[list[Record]], Awaitable[None]] | None = None,
        **settings: Any,
    ) -> Engine:
        engine = Engine(
            RuntimeSettings(
                application_id=APP,
                state_dir=self.state_root / instance,
                commit_interval_ms=settings.pop("commit_interval_ms", 20),
                punctuate_interval_ms=settings.pop("punctuate_interval_ms", 20),
                session_timeout_ms=6_000,
                **settings,
            ),
            KafkaSettings(bootstrap_servers="unused:9092"),
            [INPUT],
            {"counts": CHANGELOG},
            self._seen(factory or (lambda ctx: Counter(ctx, OUTPUT))),
            output_topics=[OUTPUT],
            before_batch=before_batch,
            max_fetch_bytes=1 << 20,
            max_request_bytes=1 << 20,
            clients=self.broker,
        )
        engine._backoff = Backoff(base_s=0.01, cap_s=0.05)  # put-backs retried in milliseconds
        return engine

    def _seen(self, factory: Callable[[TaskContext], TaskProcessor]) -> Callable[[TaskContext], TaskProcessor]:
        def build(ctx: TaskContext) -> TaskProcessor:
            assert isinstance(ctx, Task)
            self.tasks.append(ctx)
            return factory(ctx)

        return build

    def paths(self) -> set[tuple[TaskPhase, ...]]:
        return {tuple(task.lifecycle.history) for task in self.tasks}

    def outputs(self) -> dict[bytes, list[bytes]]:
        outputs: dict[bytes, list[bytes]] = {}
        for record in self.broker.committed_records(OUTPUT):
            assert record.key is not None
            assert record.value is not None
            outputs.setdefault(record.key, []).append(record.value)
        return outputs

    def caught_up(self) -> bool:
        return all(
            self.broker.group_offset(APP, TopicPartition(INPUT, p))
            == self.broker.last_stable_offset(TopicPartition(INPUT, p))
            for p in range(PARTITIONS)
        )

    def assert_exactly_once(self, without: Sequence[bytes] = ()) -> int:
        """Per key the counts 1, 2, 3, ... over every value sent (but `without`, each rejected instead)."""
        outputs = self.outputs()
        assert set(outputs) == set(self.sent)
        for key, values in outputs.items():
            rejected = [v for v in values if v.startswith(b"rejected:")]
            assert len(rejected) == len([v for v in self.sent[key] if v in without]), (key, rejected)
            counted = [v for v in values if not v.startswith(b"rejected:")]
            expected = [b"%d:%s" % (i + 1, v) for i, v in enumerate(x for x in self.sent[key] if x not in without)]
            assert counted == expected, key
        return sum(len(v) for v in outputs.values())


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    broker = MemoryKafka()
    broker.create_topic(INPUT, PARTITIONS)
    broker.create_topic(OUTPUT, PARTITIONS)
    broker.create_topic(CHANGELOG, PARTITIONS)
    return Cluster(broker, tmp_path)


_RUNS: list[asyncio.Task[None]] = []  # the engines running: a test waiting on one that ended fails at once


@contextlib.asynccontextmanager
async def running(*engines: Engine) -> AsyncIterator[list[asyncio.Event]]:
    stops = [asyncio.Event() for _ in engines]
    runs = [asyncio.create_task(engine.run(stop)) for engine, stop in zip(engines, stops, strict=True)]
    _RUNS.extend(runs)
    try:
        yield stops
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*runs)
        for run in runs:
            _RUNS.remove(run)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        for run in _RUNS:
            if run.done() and (error := run.exception()) is not None:
                raise AssertionError("an engine failed") from error
        await asyncio.sleep(0.005)


async def test_counts_exactly_once_and_restores_deleted_state(cluster: Cluster) -> None:
    cluster.produce(300)
    engine = cluster.engine()
    async with running(engine):
        await until(cluster.caught_up)
    assert cluster.assert_exactly_once() == 300
    assert engine.stats.committed == 300

    # Local state deleted between runs: the counts continue from the changelog, not from 1.
    shutil.rmtree(cluster.state_root / "a")
    cluster.produce(60)
    engine = cluster.engine()
    async with running(engine):
        await until(cluster.caught_up)
    assert engine.stats.restored_records > 0
    assert cluster.assert_exactly_once() == 360


async def test_failed_commits_rebuild_the_task_from_kafka_skipping_and_doubling_nothing(cluster: Cluster) -> None:
    cluster.produce(200)
    cluster.broker.fail_commits(4)
    engine = cluster.engine()
    async with running(engine):
        await until(cluster.caught_up)
    assert engine.stats.task_restarts >= 4
    assert cluster.assert_exactly_once() == 200
    assert cluster.paths() == {
        (CREATED, RESTORING, RUNNING, FAILED, CLOSED),
        (CREATED, RESTORING, RUNNING, SUSPENDED, CLOSED),
    }


async def test_a_transaction_left_open_hides_its_records_until_the_next_owner_fences_it(cluster: Cluster) -> None:
    # A previous owner of partition 0 died mid-transaction: read_committed readers see nothing of it, and the
    # engine's producer, starting, ends it (aborted), so its records never appear.
    zombie = cluster.broker.start_producer(transactional_id(APP, 0))
    await zombie.begin_transaction()
    await zombie.send_and_wait([OutgoingRecord(OUTPUT, 0, b"k00", b"zombie", ())])
    assert cluster.broker.committed_records(OUTPUT) == []
    assert cluster.broker.last_stable_offset(TopicPartition(OUTPUT, 0)) == 0
    cluster.produce(30)
    async with running(cluster.engine()):
        await until(cluster.caught_up)
    assert cluster.assert_exactly_once() == 30


@pytest.mark.parametrize("runs", [(60, 30), (90,)], ids=["a-later-commit", "the-first-commit"])
@pytest.mark.parametrize("left_open", [False, True], ids=["aborted", "left-open"])
async def test_a_commit_kafka_loses_after_acknowledging_it_is_redone_exactly_once(
    cluster: Cluster, left_open: bool, runs: tuple[int, ...]
) -> None:
    # A single broker SIGKILLed between a transaction's PrepareCommit and its markers can lose a commit it
    # acknowledged (docs/reliability.md, "Failures seen"): the offsets go back, the records are aborted, or left
    # open until the producer id's next marker decides them. The local stores had taken that commit.
    for batch in runs:
        cluster.produce(batch)
        async with running(cluster.engine()):
            await until(cluster.caught_up)
    for partition in range(PARTITIONS):
        cluster.broker.lose_last_commit(transactional_id(APP, partition), leave_open=left_open)
    assert not cluster.caught_up()
    cluster.produce(30)
    engine = cluster.engine()
    async with running(engine):
        await until(cluster.caught_up)
    assert cluster.assert_exactly_once() == 120  # no count skipped (the store ahead), none doubled (published late)
    assert (engine.stats.restored_records > 0) == (len(runs) > 1)  # rebuilt from the changelogs: what they hold


async def test_a_batch_put_back_by_a_dependency_is_redone_exactly_once(cluster: Cluster) -> None:
    failures = 3

    async def registry(records: list[Record]) -> None:
        nonlocal failures
        if records and failures > 0:
            failures -= 1
            raise RetryLater("registry unavailable")

    cluster.produce(120)
    engine = cluster.engine(before_batch=registry)
    async with running(engine):
        await until(cluster.caught_up)
    assert engine.stats.retries == 3
    assert engine.stats.waiting is None
    assert cluster.assert_exactly_once() == 120


async def test_an_output_the_broker_refuses_is_dead_lettered_and_the_rest_committed(cluster: Cluster) -> None:
    # The broker refuses the output of every 25th input record (too large for the topic, say): each is replayed
    # alone, refused again, and handed to `reject`; everything else counts exactly once.
    poisoned = {b"v%06d" % i for i in range(7, 150, 25)}
    cluster.broker.refuse = lambda out: out.topic == OUTPUT and (out.value or b"").split(b":")[-1] in poisoned
    cluster.produce(150)
    engine = cluster.engine()
    async with running(engine):
        await until(cluster.caught_up)
    assert engine.stats.refused_records == len(poisoned)
    assert cluster.assert_exactly_once(without=sorted(poisoned)) == 150
    assert engine._isolation == {}


async def test_a_batch_whose_end_fails_is_replayed_and_only_its_culprit_rejected(cluster: Cluster) -> None:
    cluster.produce(200)
    engine = cluster.engine(factory=lambda ctx: Counter(ctx, OUTPUT, fail_batch_at=b"v000100"))
    async with running(engine):
        await until(cluster.caught_up)
    assert cluster.assert_exactly_once(without=[b"v000100"]) == 200


async def test_a_second_instance_joining_and_the_first_leaving_lose_and_double_nothing(cluster: Cluster) -> None:
    cluster.produce(150)
    first, second = cluster.engine("a"), cluster.engine("b")
    async with running(first) as (stop_first,):
        await until(cluster.caught_up)
        async with running(second):
            # The range assignment: partitions 0 and 1 to the first member, 2 to the second.
            await until(lambda: first.stats.ready == {0, 1} and second.stats.ready == {2})
            cluster.produce(150)
            await until(cluster.caught_up)
            stop_first.set()  # the first leaves: the second takes every partition over, restoring its state
            await until(lambda: len(second.stats.ready) == PARTITIONS)
            cluster.produce(150)
            await until(cluster.caught_up)
    assert first.stats.rebalances >= 1
    assert second.stats.rebalances >= 1
    assert second.stats.restored_records > 0
    assert cluster.assert_exactly_once() == 450
    # Revoked tasks commit (suspended) and close; none is reused.
    assert cluster.paths() == {(CREATED, RESTORING, RUNNING, SUSPENDED, CLOSED)}
    assert len(cluster.tasks) > 2 * PARTITIONS


async def test_a_fenced_task_stops_until_the_rebalance_gives_its_partition_back(cluster: Cluster) -> None:
    cluster.produce(60)
    engine = cluster.engine()
    async with running(engine):
        await until(cluster.caught_up)
        # Another instance started partition 0's producer (a split brain): the task's next commit is fenced.
        cluster.broker.start_producer(transactional_id(APP, 0))
        cluster.produce(60)
        await until(lambda: 0 not in engine.stats.ready)
        await asyncio.sleep(0.1)
        assert not cluster.caught_up(), "a fenced task commits nothing"
        assert 0 not in engine._pending, "nor does it restart by itself: the partition is another's now"
        cluster.broker.request_rebalance(APP)
        await until(cluster.caught_up)
    assert cluster.assert_exactly_once() == 120


class Timers:
    """Counts like Counter; and a wall-clock timer: `tick:<wall ms>` on partition 0, once, when punctuated."""

    def __init__(self, ctx: TaskContext, fired: list[tuple[int, int, int]]) -> None:
        self.counter = Counter(ctx, OUTPUT)
        self.ctx = ctx
        self.fired = fired

    def event_time(self, record: Record) -> int:
        return self.counter.event_time(record)

    def process(self, record: Record, watermark_us: int) -> None:
        self.counter.process(record, watermark_us)

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        self.fired.append((self.ctx.partition, wall_clock_ms, watermark_us))
        due = self.ctx.partition == 0 and wall_clock_ms >= 2_000_000_000_000
        if due and self.ctx.state.get("counts", b"tick") is None:
            self.ctx.state.put("counts", b"tick", b"1")
            self.ctx.emit(OutRecord(OUTPUT, b"tick", b"tick:%d" % wall_clock_ms, partition=0))

    def end_of_batch(self) -> None:
        self.counter.end_of_batch()

    def reject(self, record: Record, reason: str, error: str) -> None:
        self.counter.reject(record, reason, error)


async def test_timers_fire_on_the_engines_clock_below_the_watermark_and_commit_once(cluster: Cluster) -> None:
    fired: list[tuple[int, int, int]] = []
    cluster.produce(30)
    engine = cluster.engine(factory=lambda ctx: Timers(ctx, fired))
    async with running(engine):
        await until(cluster.caught_up)
        await until(lambda: any(watermark > 1_700_000_000_000_000 for _p, _w, watermark in fired))
        # Every partition read to its end: the watermark is past every record's event time.
        assert all(w >= 1_700_000_000_029_000 for p, _w, w in fired[-PARTITIONS:])
        assert not any(r.key == b"tick" for r in cluster.broker.committed_records(OUTPUT))
        cluster.broker.clock.advance(2_000_000_000 - time.time())  # the wall clock jumps to 2033
        await until(lambda: any(r.key == b"tick" for r in cluster.broker.committed_records(OUTPUT)))
        await asyncio.sleep(0.1)  # more punctuations: the timer's state keeps it from firing again
    ticks = [r for r in cluster.broker.committed_records(OUTPUT) if r.key == b"tick"]
    assert len(ticks) == 1
    assert ticks[0].value is not None
    assert int(ticks[0].value[5:]) >= 2_000_000_000_000
