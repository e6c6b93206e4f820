"""Timers and the low watermark, broker-free: the real Engine over the in-memory broker, with clocks the test moves.

The engine's promise (processors/runtime/engine.py): timers, whether stream time or the wall clock moves them,
fire only below the task's low watermark, never for a time some input partition has not been read up to. A
task reads partition p of several topics (as the pipeline reads the family topics); here two, `early` (read
ahead) and `late` (behind), and a processor whose deadlines are the pipeline's pendings in miniature: a
`pending:<id>` record arms a timer at its event time + `AFTER`, a `final:<id>` record cancels it, and a timer
due before the watermark fires once (`expired:<id>`), from `process` or from `punctuate`.

The broker's fetches of a partition can be held short of its end (`LaggingKafka.fetch_limit`, as a fetch
answered within its byte limit, or a partition whose leader answers slowly): more records are known to wait on
the broker, not yet fetched. The monotonic clock (the idle bound, PROCESSOR_MAX_TASK_IDLE_MS) is moved by the
test, never slept through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from processors.runtime.engine import Engine
from processors.runtime.ordering import BEGINNING_OF_TIME
from processors.runtime.ports import Record, TopicPartition
from processors.runtime.settings import RuntimeSettings
from processors.runtime.task import OutRecord, TaskContext, TaskProcessor
from tests.processors.memory_kafka import MemoryConsumer, MemoryKafka, MemoryRecord, TestClock
from tests.processors.runtime.test_engine_memory import running, until

APP = "deadlines"
EARLY, LATE = "early", "late"  # the task's input topics, in the engine's order
OUTPUT, CHANGELOG = "expired", "deadlines-changelog"
EARLY_TP, LATE_TP = TopicPartition(EARLY, 0), TopicPartition(LATE, 0)
T0_MS = 1_700_000_000_000  # the backlog's event time: November 2023, years behind the wall clock
MINUTE_MS = 60_000
AFTER_US = 30 * MINUTE_MS * 1000  # a pending's deadline: 30 minutes after it


def at(minutes: int) -> int:
    """Event time (epoch ms) `minutes` after T0."""
    return T0_MS + minutes * MINUTE_MS


class SteppedClock(TestClock):
    """The real clocks; the test moves the wall clock (`advance`) and the monotonic one (`skip`)."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.skipped_s = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped_s

    def skip(self, seconds: float) -> None:
        self.skipped_s += seconds


class LaggingKafka(MemoryKafka):
    """The memory broker, whose group consumers fetch a partition in `fetch_limit` only up to that offset."""

    def __init__(self) -> None:
        super().__init__()
        self.fetch_limit: dict[TopicPartition, int] = {}

    def group_consumer(
        self,
        *,
        group_id: str,
        instance_id: str | None,
        session_timeout_ms: int,
        max_poll_records: int,
        max_fetch_bytes: int,
    ) -> MemoryConsumer:
        return LaggingConsumer(self, group_id)


class LaggingConsumer(MemoryConsumer):
    broker: LaggingKafka

    def _fetch(self, max_records: int) -> dict[TopicPartition, list[Record]]:
        # A position at or past its limit: the partition's fetch is answered with nothing (its last stable
        # offset still says more waits); one short of it: only the records below the limit.
        held = {tp for tp, limit in self.broker.fetch_limit.items() if (self.assigned.get(tp) or 0) >= limit}
        engine_paused, self.paused = self.paused, self.paused | held
        try:
            batch = super()._fetch(max_records)
        finally:
            self.paused = engine_paused
        for tp in held:
            if tp in self.assigned:
                self.polled_at[tp] = int(self.broker.clock.wall() * 1000)
        for tp, records in list(batch.items()):
            limit = self.broker.fetch_limit.get(tp)
            if limit is not None and records[-1].offset >= limit:
                batch[tp] = [r for r in records if r.offset < limit]
                self.assigned[tp] = limit
        return batch


@dataclass(frozen=True)
class Processed:
    topic: str
    offset: int
    event_time_ms: int
    watermark_us: int


@dataclass
class Seen:
    """What the processor saw, in order: records (with the watermark each was given), punctuations, firings."""

    processed: list[Processed] = field(default_factory=list)
    punctuations: list[tuple[int, int]] = field(default_factory=list)  # (wall clock ms, watermark µs)
    fired: list[tuple[bytes, int, int]] = field(default_factory=list)  # (id, due µs, how many records processed)


class Deadlines:
    """Pending-like deadlines kept in the task's state (store `deadlines`): `due:<due µs, 8 bytes>:<id>` -> id,
    and `id:<id>` -> its `due:` key, so the earliest is first and a final finds its pending's timer."""

    def __init__(self, ctx: TaskContext, seen: Seen) -> None:
        self.ctx = ctx
        self.seen = seen

    def event_time(self, record: Record) -> int:
        return int(record.timestamp) * 1000

    def process(self, record: Record, watermark_us: int) -> None:
        self._fire_below(watermark_us)  # stream time moved: timers first, then the record
        self.seen.processed.append(Processed(record.topic, record.offset, int(record.timestamp), watermark_us))
        assert record.key is not None
        kind, _, ident = record.key.partition(b":")
        state = self.ctx.state
        if kind == b"pending":
            due = self.event_time(record) + AFTER_US
            timer = b"due:" + due.to_bytes(8, "big") + b":" + ident
            state.put("deadlines", timer, ident)
            state.put("deadlines", b"id:" + ident, timer)
        elif kind == b"final" and (timer_key := state.get("deadlines", b"id:" + ident)) is not None:
            state.delete("deadlines", timer_key)
            state.delete("deadlines", b"id:" + ident)

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        self.seen.punctuations.append((wall_clock_ms, watermark_us))
        self._fire_below(watermark_us)

    def _fire_below(self, watermark_us: int) -> None:
        state = self.ctx.state
        for timer, ident in list(state.range("deadlines", b"due:", b"due;")):
            due = int.from_bytes(timer[4:12], "big")
            if due >= watermark_us:
                return
            state.delete("deadlines", timer)
            state.delete("deadlines", b"id:" + ident)
            self.seen.fired.append((ident, due, len(self.seen.processed)))
            self.ctx.emit(OutRecord(OUTPUT, ident, b"expired:" + ident, partition=0))

    def end_of_batch(self) -> None:
        pass

    def reject(self, record: Record, reason: str, error: str) -> None:
        raise AssertionError(f"nothing is refused here: {reason}: {error}")


@dataclass
class Deployment:
    broker: LaggingKafka
    clock: SteppedClock
    state_root: Path
    seen: Seen = field(default_factory=Seen)

    def produce(self, topic: str, key: bytes, minute: int) -> None:
        self.broker.produce(topic, 0, key, b"", timestamp_ms=at(minute))

    def engine(self, **settings: int) -> Engine:
        def factory(ctx: TaskContext) -> TaskProcessor:
            return Deadlines(ctx, self.seen)

        return Engine(
            RuntimeSettings(
                application_id=APP,
                state_dir=self.state_root,
                commit_interval_ms=20,
                punctuate_interval_ms=20,
                session_timeout_ms=6_000,
                **settings,
            ),
            KafkaSettings(bootstrap_servers="unused:9092"),
            [EARLY, LATE],
            {"deadlines": CHANGELOG},
            factory,
            max_fetch_bytes=1 << 20,
            max_request_bytes=1 << 20,
            clients=self.broker,
        )

    def expired(self) -> list[bytes]:
        """The committed firings, in order."""
        return [r.value or b"" for r in self.broker.committed_records(OUTPUT)]

    def records(self, topic: str) -> list[MemoryRecord]:
        return self.broker.committed_records(topic)

    def punctuated(self, more: int) -> Callable[[], bool]:
        """A condition: `more` punctuations after the ones seen so far."""
        target = len(self.seen.punctuations) + more
        return lambda: len(self.seen.punctuations) >= target

    def assert_read_up_to(self, due_us: int, processed: int) -> None:
        """The first `processed` records processed hold every record of every input with event time <= due."""
        done = {(p.topic, p.offset) for p in self.seen.processed[:processed]}
        for topic in (EARLY, LATE):
            for record in self.records(topic):
                if record.timestamp * 1000 <= due_us:
                    assert (topic, record.offset) in done, f"{topic}@{record.offset} not processed before the timer"


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    broker = LaggingKafka()
    clock = SteppedClock()
    broker.clock = clock  # the engine reads both its clocks from its clients: set before it is built
    for topic in (EARLY, LATE, OUTPUT, CHANGELOG):
        broker.create_topic(topic, 1)
    return Deployment(broker, clock, tmp_path)


async def test_a_timer_waits_for_the_input_not_yet_fetched_up_to_its_time(deployment: Deployment) -> None:
    # `early` holds a pending at minute 30 (due at minute 60) and runs on to minute 120; `late` holds minutes
    # 0 to 90, of which only 0, 10 and 20 are fetched: the rest wait on the broker.
    deployment.produce(EARLY, b"pending:p1", 30)
    for minute in range(35, 125, 5):
        deployment.produce(EARLY, b"tick", minute)
    for minute in range(0, 100, 10):
        deployment.produce(LATE, b"tick", minute)
    deployment.broker.fetch_limit[LATE_TP] = 3
    due_us = at(60) * 1000
    early, seen = deployment.records(EARLY), deployment.seen
    engine = deployment.engine(max_task_idle_ms=60_000, max_poll_records=100)
    async with running(engine):
        # Idle time not elapsed: `late`, read to minute 20 with more on the broker, holds `early` back.
        await until(lambda: len(seen.processed) + engine.stats.buffered == 3 + len(early))  # all fetched
        await until(deployment.punctuated(5))
        assert [(p.topic, p.event_time_ms) for p in seen.processed] == [(LATE, at(m)) for m in (0, 10, 20)]
        assert engine.stats.buffered == len(early)
        assert {w for _wall, w in seen.punctuations[-5:]} == {at(20) * 1000}  # late's last record
        assert seen.fired == []
        assert deployment.expired() == []

        # Idle time elapsed: `early` is processed without `late`, but its pending's timer, due at minute 60,
        # still waits for `late`, read only to minute 20, whatever the wall clock (now, years later) says.
        deployment.clock.skip(61)
        await until(lambda: len(seen.processed) == 3 + len(early))
        await until(deployment.punctuated(5))
        assert [p.topic for p in seen.processed[3:]] == [EARLY] * len(early)
        assert all(p.watermark_us <= at(20) * 1000 for p in seen.processed)
        assert all(w == at(20) * 1000 for _wall, w in seen.punctuations[-5:])
        assert all(wall > at(1_000_000) for wall, _w in seen.punctuations)  # the wall clock: years ahead
        assert seen.fired == []
        assert deployment.expired() == []

        # `late` fetched to its end: the timer fires once `late` is read past minute 60, and only once.
        del deployment.broker.fetch_limit[LATE_TP]
        await until(lambda: deployment.expired() == [b"expired:p1"])
        await until(deployment.punctuated(5))
    assert deployment.expired() == [b"expired:p1"]
    assert len(seen.fired) == 1
    ident, due, processed = seen.fired[0]
    assert (ident, due) == (b"p1", due_us)
    deployment.assert_read_up_to(due_us, processed)
    # ... and not a record later than needed: the first `late` record past minute 60 came after the timer.
    assert [(p.topic, p.event_time_ms) for p in seen.processed[processed - 1 : processed + 1]] == [
        (LATE, at(60)),
        (LATE, at(70)),
    ]


def late_unfetched(deployment: Deployment) -> None:
    """Five records on each input, `late`'s 5 minutes after `early`'s; none of `late` fetchable yet."""
    for minute in range(0, 50, 10):
        deployment.produce(EARLY, b"tick", minute)
        deployment.produce(LATE, b"tick", minute + 5)
    deployment.broker.fetch_limit[LATE_TP] = 0


async def test_a_partition_with_nothing_buffered_is_waited_for_until_the_idle_time_then_passed_over(
    deployment: Deployment,
) -> None:
    # `late` has nothing fetched at all (not even its first record): the watermark is the beginning of time.
    late_unfetched(deployment)
    seen = deployment.seen
    engine = deployment.engine(max_task_idle_ms=60_000, max_poll_records=100)
    async with running(engine):
        await until(lambda: len(seen.processed) + engine.stats.buffered == 5)  # early's fetched
        deployment.clock.skip(59)  # not yet
        await until(deployment.punctuated(5))
        assert seen.processed == []
        assert {w for _wall, w in seen.punctuations} == {BEGINNING_OF_TIME}
        deployment.clock.skip(2)  # 61 s: elapsed
        await until(lambda: len(seen.processed) == 5)
        await until(deployment.punctuated(3))
        assert [(p.topic, p.event_time_ms) for p in seen.processed] == [(EARLY, at(m)) for m in range(0, 50, 10)]
        assert {p.watermark_us for p in seen.processed} == {BEGINNING_OF_TIME}
        assert {w for _wall, w in seen.punctuations} == {BEGINNING_OF_TIME}
        # `late` arrives: it is processed (behind `early`, now out of order) and the watermark moves on.
        del deployment.broker.fetch_limit[LATE_TP]
        await until(lambda: len(seen.processed) == 10)
        await until(lambda: seen.punctuations[-1][1] > at(45) * 1000)
    assert [p.topic for p in seen.processed[5:]] == [LATE] * 5


async def test_passing_over_an_idle_partition_is_said(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    """Out of event-time order is a choice an operator should see: one line (and a count) per idle episode."""
    caplog.set_level(logging.INFO, logger="processors")
    late_unfetched(deployment)
    seen = deployment.seen
    engine = deployment.engine(max_task_idle_ms=60_000, max_poll_records=100)
    async with running(engine):
        await until(lambda: engine.stats.buffered == 5)
        caplog.clear()
        deployment.clock.skip(61)
        await until(lambda: len(seen.processed) == 5)
        await until(deployment.punctuated(3))
    standard = set(logging.makeLogRecord({}).__dict__)
    said = [
        r
        for r in caplog.records
        if r.name.startswith("processors")
        and LATE in r.getMessage() + " ".join(str(v) for k, v in r.__dict__.items() if k not in standard)
    ]
    assert len(said) == 1, ("once per idle episode, not per record", [r.getMessage() for r in said])
    assert said[0].partition == LATE_TP.partition  # type: ignore[attr-defined]
    assert engine.stats.passed_over == 1


async def test_a_catch_up_fires_a_deadline_only_once_both_inputs_passed_it(deployment: Deployment) -> None:
    # Six hours of backlog on both inputs, one record a minute, processed from the start while the wall clock
    # is years ahead. `early` holds pendings; `late` holds the final of the first, 5 minutes before its deadline.
    # With no idle wait and small fetches, `early` is fetched (and processed) to its end before `late` is read
    # at all: the case where stream time, or the wall clock, would fire timers whose finals wait unread.
    pendings = {b"p1": 60, b"p2": 200, b"p3": 330}  # due at minutes 90, 230, 360
    finals = {b"p1": 85}
    for minute in range(0, 361):
        key = next((b"pending:" + i for i, m in pendings.items() if m == minute), b"tick")
        deployment.produce(EARLY, key, minute)
        key = next((b"final:" + i for i, m in finals.items() if m == minute), b"tick")
        deployment.produce(LATE, key, minute)
    seen = deployment.seen
    engine = deployment.engine(max_task_idle_ms=0, max_poll_records=16)
    async with running(engine):
        await until(lambda: len(seen.processed) == 2 * 361)
        await until(lambda: len(deployment.expired()) >= 2)
        await until(deployment.punctuated(5))
    # The backlog was read unevenly: `early` ran hours ahead of `late`.
    first_late = next(i for i, p in enumerate(seen.processed) if p.topic == LATE)
    assert first_late >= 300, first_late
    assert all(wall > at(1_000_000) for wall, _w in seen.punctuations)
    # p1 cancelled by its final (read late, but before any timer could fire); p2 fired once, after both inputs
    # passed minute 230; p3 (due at minute 360, the backlog's last) once both inputs were read to their end.
    assert deployment.expired() == [b"expired:p2", b"expired:p3"]
    assert [(ident, due) for ident, due, _n in seen.fired] == [(b"p2", at(230) * 1000), (b"p3", at(360) * 1000)]
    deployment.assert_read_up_to(at(230) * 1000, seen.fired[0][2])
    assert seen.fired[1][2] == 2 * 361
