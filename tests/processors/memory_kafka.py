"""An in-memory transactional Kafka behind the runtime's port (processors/runtime/ports.py), for broker-free tests.

What the exactly-once engine relies on, and nothing more:
- topics of partitions, each an offset-ordered log;
- transactional producers with epochs: a producer started with a transactional id fences the previous one
  (every later operation of the old one raises `ProducerFencedError`) and aborts the transaction it left open;
- transactions that commit or abort records and consumer-group offsets together;
- read_committed consumers: nothing past the last stable offset (the first record of an open transaction),
  aborted records never;
- a consumer group with the range assignment, rebalanced when a member joins or leaves (the next poll of any
  member runs it: every member's partitions are revoked, then the new assignment handed out), or when a test
  asks (`rebalance`);
- faults on demand: the broker refusing records for what they are (`refuse`), transactions failing to commit
  (`fail_commits`).

It uses the real clock, scaled down only by the short intervals tests configure: a test runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2

from processors.runtime.ports import (
    NotAssignedError,
    OutgoingRecord,
    ProducerFencedError,
    RebalanceListener,
    Record,
    RecordRefusedError,
    TopicPartition,
)
from processors.runtime.task import transactional_id

_CREATE_TIME = 0


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass
class _Transaction:
    state: str = "open"  # open, committed, aborted
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)  # (group, tp) -> next offset
    partitions: set[tuple[str, int]] = field(default_factory=set)  # where it wrote records


@dataclass
class _Lost:
    """What Kafka kept of a transactional id's acknowledged commit it lost with its records left open
    (`MemoryKafka.lose_last_commit`): per partition, its records in an open transaction of their own, decided by
    the next marker the id writes there; its offsets pending, decided by the id's next transaction with offsets."""

    partitions: dict[tuple[str, int], _Transaction]
    offsets: dict[tuple[str, TopicPartition], int]


@dataclass
class _Entry:
    record: MemoryRecord
    txn: _Transaction | None  # None: written outside a transaction (committed at once)


class CommitFailed(ConnectionError):
    """An injected failure of a transaction's commit (as if the broker went away)."""


class TestClock:
    """The real monotonic clock; a wall clock a test may move forward (`advance`)."""

    __test__ = False

    def __init__(self) -> None:
        self.offset_s = 0.0

    def wall(self) -> float:
        return time.time() + self.offset_s

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


class MemoryKafka:
    """The broker, and the `KafkaClients` of every engine that runs on it."""

    def __init__(self) -> None:
        self.clock = TestClock()
        self._logs: dict[str, list[list[_Entry]]] = {}
        self._epochs: dict[str, int] = {}
        self._open: dict[str, _Transaction] = {}  # transactional id -> its open transaction
        self._offsets: dict[tuple[str, TopicPartition], int] = {}
        self._members: dict[str, list[MemoryConsumer]] = {}
        self._generation: dict[str, int] = {}
        self._rebalance_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self.refuse: Callable[[OutgoingRecord], bool] = lambda record: False
        self.refusal = "MessageSizeTooLargeError"  # the refusal's text
        self.commit_failures = 0
        self.producers_started = 0
        # transactional id -> its last committed transaction and the group offsets it replaced
        self._last_commit: dict[str, tuple[_Transaction, dict[tuple[str, TopicPartition], int | None]]] = {}
        self._lost: dict[str, list[_Lost]] = {}

    # -- administration and inspection ------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int) -> None:
        self._logs.setdefault(name, [[] for _ in range(partitions)])

    def topic_names(self) -> set[str]:
        return set(self._logs)

    def delete_topic(self, name: str) -> None:
        del self._logs[name]

    def partitions(self, topic: str) -> int:
        return len(self._logs[topic])

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        *,
        headers: Sequence[tuple[str, bytes]] = (),
        timestamp_type: int = _CREATE_TIME,
    ) -> int:
        """A plain (non-transactional) write, visible at once; its offset."""
        log = self._log(topic, partition)
        record = MemoryRecord(topic, partition, len(log), timestamp_ms, timestamp_type, key, value, tuple(headers))
        log.append(_Entry(record, None))
        self._changed.set()
        return record.offset

    def committed_records(self, topic: str) -> list[MemoryRecord]:
        """What a read_committed consumer reads of `topic` now, partition by partition."""
        return [r for p in range(self.partitions(topic)) for r in self.visible(TopicPartition(topic, p), 0)[0]]

    def group_offset(self, group: str, tp: TopicPartition) -> int | None:
        return self._offsets.get((group, tp))

    def lose_last_commit(self, tid: str, *, leave_open: bool) -> None:
        """Kafka losing the last commit of `tid` it acknowledged, as a single broker SIGKILLed between a
        transaction's PrepareCommit and its markers was seen to (chaos/txn_probe.py): its input offsets go back
        to what they were, and its records are aborted, or (`leave_open`) left open, each partition's decided by
        the next COMMIT or ABORT marker `tid` writes there, as a real partition's open records of a producer id
        are."""
        txn, replaced = self._last_commit.pop(tid)
        for key, previous in replaced.items():
            if previous is None:
                self._offsets.pop(key, None)
            else:
                self._offsets[key] = previous
        if not leave_open:
            txn.state = "aborted"
            self._changed.set()
            return
        reopened = {tp: _Transaction() for tp in txn.partitions}
        for topic, partition in txn.partitions:
            for entry in self._log(topic, partition):
                if entry.txn is txn:
                    entry.txn = reopened[(topic, partition)]
        self._lost.setdefault(tid, []).append(_Lost(reopened, dict(txn.offsets)))
        self._changed.set()

    def _decide_lost(self, tid: str, txn: _Transaction, state: str) -> None:
        """The markers of `tid`'s transaction `txn` ending in `state` also decide what a lost commit left open
        where it wrote, and its pending offsets if it had offsets of its own."""
        for lost in self._lost.get(tid, []):
            for tp in txn.partitions & set(lost.partitions):
                lost.partitions.pop(tp).state = state
            if txn.offsets and lost.offsets:
                if state == "committed":
                    self._offsets.update(lost.offsets)
                lost.offsets = {}
        self._lost[tid] = [lost for lost in self._lost.get(tid, []) if lost.partitions or lost.offsets]

    def fail_commits(self, count: int) -> None:
        """The next `count` transaction commits fail (nothing of them is committed)."""
        self.commit_failures = count

    def on_new_event_loop(self) -> None:
        """Engines of another event loop take over (a test driver's restart): what they wait on, made anew (an
        asyncio event that was waited on belongs to its loop)."""
        self._rebalance_lock = asyncio.Lock()
        self._changed = asyncio.Event()

    def request_rebalance(self, group: str) -> None:
        self._generation[group] = self._generation.get(group, 0) + 1
        self._changed.set()

    # -- the log ----------------------------------------------------------------------------------------

    def _log(self, topic: str, partition: int) -> list[_Entry]:
        logs = self._logs.get(topic)
        if logs is None or not 0 <= partition < len(logs):
            raise KeyError(f"unknown topic-partition {topic}-{partition}")
        return logs[partition]

    def last_stable_offset(self, tp: TopicPartition) -> int:
        log = self._log(tp.topic, tp.partition)
        for entry in log:
            if entry.txn is not None and entry.txn.state == "open":
                return entry.record.offset
        return len(log)

    def visible(self, tp: TopicPartition, position: int, limit: int | None = None) -> tuple[list[MemoryRecord], int]:
        """Committed records from `position` up to the last stable offset; and the position after them."""
        log = self._log(tp.topic, tp.partition)
        end = self.last_stable_offset(tp)
        records: list[MemoryRecord] = []
        while position < end and (limit is None or len(records) < limit):
            entry = log[position]
            if entry.txn is None or entry.txn.state == "committed":
                records.append(entry.record)
            position += 1
        return records, position

    async def wait_for_change(self, timeout_s: float) -> None:
        self._changed.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    # -- KafkaClients -----------------------------------------------------------------------------------

    def group_consumer(
        self,
        *,
        group_id: str,
        instance_id: str | None,
        session_timeout_ms: int,
        max_poll_records: int,
        max_fetch_bytes: int,
    ) -> MemoryConsumer:
        return MemoryConsumer(self, group_id)

    async def transactional_producer(
        self, application_id: str, partition: int, max_request_bytes: int
    ) -> MemoryProducer:
        return self.start_producer(transactional_id(application_id, partition))

    def start_producer(self, tid: str) -> MemoryProducer:
        """InitProducerId: a new epoch fences the previous producer; its open transaction is aborted."""
        epoch = self._epochs.get(tid, -1) + 1
        self._epochs[tid] = epoch
        left_open = self._open.pop(tid, None)
        if left_open is not None:
            left_open.state = "aborted"
            self._decide_lost(tid, left_open, "aborted")
            self._changed.set()
        self.producers_started += 1
        return MemoryProducer(self, tid, epoch)

    @asynccontextmanager
    async def restore_consumer(self, partition: int, tps: Sequence[TopicPartition]) -> AsyncIterator[MemoryReader]:
        yield MemoryReader(self, tps)

    # -- the group --------------------------------------------------------------------------------------

    def _join(self, member: MemoryConsumer) -> None:
        self._members.setdefault(member.group, []).append(member)
        self.request_rebalance(member.group)

    def _leave(self, member: MemoryConsumer) -> None:
        members = self._members.get(member.group, [])
        if member in members:
            members.remove(member)
            self.request_rebalance(member.group)

    async def _rebalance_if_due(self, group: str) -> None:
        async with self._rebalance_lock:
            generation = self._generation.get(group, 0)
            members = list(self._members.get(group, []))
            if all(m.generation == generation for m in members):
                return
            for member in members:
                revoked = sorted(member.assigned)
                member.assigned = {}
                await member.listener.on_partitions_revoked(revoked)
            assignment = self._assign(members)
            for member in members:
                member.generation = generation
                member.assigned = {tp: None for tp in assignment[id(member)]}
                member.paused.clear()
                await member.listener.on_partitions_assigned(sorted(member.assigned))

    def _assign(self, members: list[MemoryConsumer]) -> dict[int, list[TopicPartition]]:
        """The range assignor: per topic, consecutive partitions to the members in order."""
        assignment: dict[int, list[TopicPartition]] = {id(m): [] for m in members}
        topics = sorted({t for m in members for t in m.subscription})
        for topic in topics:
            subscribed = [m for m in members if topic in m.subscription]
            count = self.partitions(topic)
            per, extra = divmod(count, len(subscribed))
            start = 0
            for i, member in enumerate(subscribed):
                size = per + (1 if i < extra else 0)
                assignment[id(member)] += [TopicPartition(topic, p) for p in range(start, start + size)]
                start += size
        return assignment


class MemoryProducer:
    """A transactional producer of one epoch of a transactional id."""

    def __init__(self, broker: MemoryKafka, tid: str, epoch: int) -> None:
        self.broker = broker
        self.tid = tid
        self.epoch = epoch
        self.txn: _Transaction | None = None
        self.stopped = False

    def _check(self) -> None:
        if self.broker._epochs[self.tid] != self.epoch:
            raise ProducerFencedError(f"producer {self.tid} epoch {self.epoch} fenced")

    async def partition_count(self, topic: str) -> int:
        return self.broker.partitions(topic)

    async def partitions_for(self, keyed: Sequence[tuple[str, bytes | None]]) -> list[int]:
        placed = []
        for topic, key in keyed:
            assert key is not None, "the runtime's outputs are keyed"
            placed.append((murmur2(key) & 0x7FFFFFFF) % self.broker.partitions(topic))
        return placed

    async def begin_transaction(self) -> None:
        self._check()
        assert self.txn is None, "a transaction is open already"
        self.txn = self.broker._open[self.tid] = _Transaction()

    async def send_and_wait(self, records: Sequence[OutgoingRecord]) -> dict[tuple[str, int], int]:
        self._check()
        assert self.txn is not None
        last: dict[tuple[str, int], int] = {}
        for out in records:
            if self.broker.refuse(out):
                raise RecordRefusedError(self.broker.refusal)
            log = self.broker._log(out.topic, out.partition)
            now_ms = int(self.broker.clock.wall() * 1000)
            headers = tuple(out.headers)
            record = MemoryRecord(out.topic, out.partition, len(log), now_ms, _CREATE_TIME, out.key, out.value, headers)
            log.append(_Entry(record, self.txn))
            self.txn.partitions.add((out.topic, out.partition))
            last[(out.topic, out.partition)] = record.offset
        return last

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        self._check()
        assert self.txn is not None
        for tp, offset in offsets.items():
            self.txn.offsets[(group_id, TopicPartition(*tp))] = offset

    async def commit_transaction(self) -> None:
        self._check()
        assert self.txn is not None
        if self.broker.commit_failures > 0:
            self.broker.commit_failures -= 1
            raise CommitFailed("injected: the transaction's commit failed")
        txn, self.txn = self.txn, None
        del self.broker._open[self.tid]
        txn.state = "committed"
        self.broker._decide_lost(self.tid, txn, "committed")
        self.broker._last_commit[self.tid] = (txn, {key: self.broker._offsets.get(key) for key in txn.offsets})
        self.broker._offsets.update(txn.offsets)
        self.broker._changed.set()

    async def abort_transaction(self) -> None:
        self._check()
        if self.txn is not None:
            txn, self.txn = self.txn, None
            self.broker._open.pop(self.tid, None)
            txn.state = "aborted"
            self.broker._decide_lost(self.tid, txn, "aborted")
            self.broker._changed.set()

    async def stop(self, timeout_s: float) -> None:
        """Like a stopped client: a transaction left open stays open until the next owner fences it."""
        self.stopped = True


class MemoryConsumer:
    """A read_committed member of a consumer group."""

    def __init__(self, broker: MemoryKafka, group: str) -> None:
        self.broker = broker
        self.group = group
        self.subscription: list[str] = []
        self.assigned: dict[TopicPartition, int | None] = {}  # -> position (None: not yet positioned)
        self.paused: set[TopicPartition] = set()
        self.polled_at: dict[TopicPartition, int] = {}
        self.generation = -1
        self.listener: RebalanceListener
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        if self.started:
            self.started = False
            self.broker._leave(self)

    async def topics(self) -> set[str]:
        return set(self.broker._logs)

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.subscription = list(topics)
        self.listener = listener
        self.broker._join(self)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        await self.broker._rebalance_if_due(self.group)
        batch = self._fetch(max_records)
        if not batch and timeout_ms > 0:
            await self.broker.wait_for_change(timeout_ms / 1000)
            await self.broker._rebalance_if_due(self.group)
            batch = self._fetch(max_records)
        return batch

    def _fetch(self, max_records: int) -> dict[TopicPartition, list[Record]]:
        batch: dict[TopicPartition, list[Record]] = {}
        left = max_records
        now_ms = int(self.broker.clock.wall() * 1000)
        for tp, position in sorted(self.assigned.items()):
            if tp in self.paused:
                continue
            if position is None:
                position = self._reset(tp)
            self.polled_at[tp] = now_ms
            if left <= 0:
                continue
            records, after = self.broker.visible(tp, position, left)
            self.assigned[tp] = after
            if records:
                batch[tp] = list(records)
                left -= len(records)
        return batch

    def _reset(self, tp: TopicPartition) -> int:
        committed = self.broker.group_offset(self.group, tp)
        position = 0 if committed is None else committed
        self.assigned[tp] = position
        return position

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(tp for tp in partitions if tp in self.assigned)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.group_offset(self.group, tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:
            raise NotAssignedError(f"{tp} is not assigned")
        self.assigned[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seek(tp, 0)

    async def position(self, tp: TopicPartition) -> int:
        if tp not in self.assigned:
            raise NotAssignedError(f"{tp} is not assigned")
        position = self.assigned[tp]
        return self._reset(tp) if position is None else position

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return self.broker.last_stable_offset(tp)

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.broker._log(tp.topic, tp.partition))

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return self.polled_at.get(tp)


class MemoryReader:
    """The restore consumer: assigned changelog partitions, read_committed."""

    def __init__(self, broker: MemoryKafka, tps: Sequence[TopicPartition]) -> None:
        self.broker = broker
        self.positions: dict[TopicPartition, int] = {TopicPartition(*tp): 0 for tp in tps}

    async def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.last_stable_offset(tp) for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Record]]:
        batch: dict[TopicPartition, list[Record]] = {}
        for tp in tps:
            records, self.positions[tp] = self.broker.visible(tp, self.positions[tp], max_records)
            if records:
                batch[tp] = list(records)
        return batch

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]
