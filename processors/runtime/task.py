"""One task: input partition p of every (co-partitioned) input topic, its state and its producer.

A task's outputs, changelog writes and consumed offsets are committed in one Kafka transaction by its
own transactional producer, whose id `<application_id>-<p>` is stable across instances: whoever owns
partition p next initialises a producer with the same id, which fences this one and completes any
transaction it left open. That is what makes the output exactly-once for read_committed consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from processors.runtime.lifecycle import Lifecycle, TaskPhase
from processors.runtime.ports import (
    OutgoingRecord,
    ProducerFencedError,
    Record,
    RecordRefusedError,
    TopicPartition,
    TransactionalProducer,
    input_key,
)
from processors.runtime.state import TaskState

log = logging.getLogger(__name__)


class OutRecord(NamedTuple):
    """A record a processor emits (its partition, when None, is the key's as a plain send would pick it).

    A named tuple, immutable as a frozen dataclass but built three times faster, once per output record."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None


class StateView(Protocol):
    """What a processor reads and writes of its task's state (`TaskState`'s store methods), and all it may:
    the runtime alone commits, restores and checkpoints. A protocol, not the class, so that a processor runs
    over another runtime's state too (bench/peers/adapter.py)."""

    def get(self, store: str, key: bytes) -> bytes | None: ...

    def put(self, store: str, key: bytes, value: bytes) -> None: ...

    def delete(self, store: str, key: bytes) -> None: ...

    def range(self, store: str, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class TaskContext(Protocol):
    """What a processor sees of its task."""

    @property
    def partition(self) -> int: ...

    @property
    def state(self) -> StateView: ...

    def emit(self, record: OutRecord) -> None: ...


@dataclass
class RecordingContext:
    """A `TaskContext` that keeps what the processor emits: for drivers and benches that run a processor
    over one task's state without the engine (no transaction, no Kafka)."""

    state: TaskState
    partition: int = 0
    emitted: list[OutRecord] = field(default_factory=list)

    def emit(self, record: OutRecord) -> None:
        self.emitted.append(record)


class TaskProcessor(Protocol):
    """Application logic of a task; the runtime calls it and commits what it emitted and wrote."""

    def event_time(self, record: Record) -> int:
        """The record's event time (epoch µs), the time it moves the processor's stream time to: the runtime
        processes a task's records in this order (each input partition's in offset order). Called once per
        fetched record, before ``process``; it must not touch state."""
        ...

    def process(self, record: Record, watermark_us: int) -> None:
        """Process one record. ``watermark_us``: every input record with an earlier event time has been
        processed (or is in no partition read so far); a timer due at or after it must not fire yet."""
        ...

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        """Wall-clock punctuation; timers due at or after ``watermark_us`` must not fire, whatever the clock."""
        ...

    def end_of_batch(self) -> None:
        """Write back what the processor holds for the open transaction (cached state, coalesced outputs):
        called by the task's commit, before the changelog writes and outputs are sent. May raise
        ``BatchFailed`` when one of those outputs cannot be produced."""
        ...

    def reject(self, record: Record, reason: str, error: str) -> None:
        """Keep ``record`` (a dead letter) but none of its effects: they could not be committed.

        Called instead of ``process`` when the runtime replays a record whose outputs or state writes the
        broker refused (``RecordRefused``, reason ``output_refused``), or whose processing raised
        ``RecordFailed``. It must not touch state: the record's effects are dropped.
        """
        ...


ProcessorFactory = Callable[[TaskContext], TaskProcessor]


class TaskFailed(RuntimeError):
    """The task could not commit; it must be rebuilt from Kafka before it processes again."""


class TaskFenced(TaskFailed):
    """Another instance owns this partition now."""


class RecordFailed(Exception):
    """Raised by a processor: this record cannot be processed (a bug, an output its schema cannot carry).

    Its effects may be half written, so the runtime throws away the task's uncommitted work, processes the
    records before it again and hands this one to ``reject``: kept as a dead letter, with no effects, so a
    replay after a fix is processed as new.
    """

    def __init__(self, record: Record, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.record = record
        self.reason = reason
        self.error = error


class BatchFailed(TaskFailed):
    """Raised by a processor's ``end_of_batch`` (the first step of a commit): an output covering the
    transaction's records (a state snapshot coalesced over several records) cannot be produced, and no single
    record is named. Nothing is committed; the runtime replays the uncommitted records one per transaction, and
    the record whose own commit fails this way is handed to ``reject`` with ``reason``, as for ``RecordFailed``.
    """

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


class RecordRefused(TaskFailed):
    """The broker refused a record of the transaction for what it is (too large, invalid), not for a fault of
    its own: retrying the same transaction would fail the same way. Nothing was committed."""


#: How long a closing task waits for its producer to flush before abandoning it (the broker is gone).
PRODUCER_STOP_TIMEOUT_S = 10.0


class Task:
    """One partition's task. Built `created` (its producer started, its state opened), then `restoring` while the
    engine restores its stores, then `run` builds its processor: only a running task processes and commits."""

    def __init__(
        self,
        partition: int,
        state: TaskState,
        producer: TransactionalProducer,
        group_id: str,
        commit_timeout_s: float,
    ) -> None:
        self.partition = partition
        self.state = state
        self.producer = producer
        self.group_id = group_id
        self.commit_timeout_s = commit_timeout_s
        self.lifecycle = Lifecycle(partition)
        self.processor: TaskProcessor  # set by `run`
        self.outputs: list[OutRecord] = []
        self.next_offsets: dict[TopicPartition, int] = {}
        self.uncommitted_records = 0
        self._tps: dict[str, TopicPartition] = {}

    @property
    def phase(self) -> TaskPhase:
        return self.lifecycle.phase

    def restoring(self) -> None:
        self.lifecycle.move(TaskPhase.RESTORING)

    def run(self, factory: ProcessorFactory) -> None:
        """Restored: build the processor (it may read the restored state) and start running."""
        self.lifecycle.move(TaskPhase.RUNNING)
        self.processor = factory(self)

    def suspend(self) -> None:
        """Revoked, its work committed: only closing is left."""
        self.lifecycle.move(TaskPhase.SUSPENDED)

    def fail(self) -> None:
        """Its uncommitted work is lost (a commit or start failed): only closing is left."""
        self.lifecycle.move(TaskPhase.FAILED)

    def emit(self, record: OutRecord) -> None:
        self.outputs.append(record)

    def event_time(self, record: Record) -> int:
        return self.processor.event_time(record)

    def process(self, records: list[Record], watermark_us: int) -> None:
        for record in records:
            self.process_one(record, watermark_us)

    def process_one(self, record: Record, watermark_us: int) -> None:
        self.processor.process(record, watermark_us)
        self.next_offsets[self._tp(record)] = record.offset + 1
        self.uncommitted_records += 1

    def _tp(self, record: Record) -> TopicPartition:
        """The record's partition, one tuple per input topic rather than one per record."""
        tp = self._tps.get(record.topic)
        if tp is None or tp.partition != record.partition:
            tp = self._tps[record.topic] = TopicPartition(record.topic, record.partition)
        return tp

    def reject(self, record: Record, reason: str, error: str) -> None:
        self.processor.reject(record, reason, error)
        self.next_offsets[self._tp(record)] = record.offset + 1
        self.uncommitted_records += 1

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        self.processor.punctuate(wall_clock_ms, watermark_us)

    def needs_commit(self) -> bool:
        return bool(self.next_offsets or self.outputs or self.state.has_pending_writes())

    # -- the commit, step by step --------------------------------------------------------------------------
    #
    #   1. flush        the processor writes back what it holds (cached state, coalesced outputs);
    #   2. begin        a transaction of the task's producer;
    #   3. produce      the outputs and the changelog writes, and wait until the broker acknowledged each;
    #   4. offsets      the consumed offsets, into the transaction;
    #   5. commit       the transaction: outputs, changelogs and offsets become visible together;
    #   6. checkpoint   the state's overlay goes to the local store, with the changelog offsets it is at.
    #
    # Any failure after 1 aborts the transaction (best effort) and the task must be rebuilt from Kafka.

    def flush(self) -> None:
        """Step 1: once per commit, so a key written by many records in between is serialized, and reaches the
        changelog, once. May raise BatchFailed."""
        self.processor.end_of_batch()

    async def commit(self) -> int:
        """Commit outputs, changelog writes and offsets atomically; returns how many input records it covered."""
        self.flush()  # its failure (the registry, for a snapshot's schema) is the engine's to handle, as a batch's
        if not self.needs_commit():
            return 0
        try:
            await asyncio.wait_for(self._transaction(), self.commit_timeout_s)
        except Exception as exc:
            await self._abort()
            kind = (
                TaskFenced
                if isinstance(exc, ProducerFencedError)
                else RecordRefused
                if isinstance(exc, RecordRefusedError)
                else TaskFailed
            )
            named = exc.__cause__ if kind is not TaskFailed and exc.__cause__ is not None else exc  # the client's
            raise kind(f"task {self.partition}: commit failed: {type(named).__name__}: {named}") from exc
        covered = self.uncommitted_records
        self.uncommitted_records = 0
        return covered

    async def _transaction(self) -> None:
        """Steps 2 to 6."""
        await self.producer.begin_transaction()
        positions = await self._produce()
        if self.next_offsets:
            await self.producer.send_offsets_to_transaction(dict(self.next_offsets), self.group_id)
        await self.producer.commit_transaction()
        self._checkpoint(positions)

    async def _produce(self) -> dict[str, int]:
        """Step 3: the changelog positions the transaction reaches (the next offset of each written store's
        changelog partition), the changelog records of the stores the processor logs itself among its outputs."""
        outputs = self.outputs
        keyed = [(out.topic, out.key) for out in outputs if out.partition is None]
        placed = iter(await self.producer.partitions_for(keyed) if keyed else ())
        records = [
            OutgoingRecord(
                out.topic, next(placed) if out.partition is None else out.partition, out.key, out.value, out.headers
            )
            for out in outputs
        ]
        self._check_output_logged(records)
        for store, key, value in self.state.pending_writes():
            records.append(OutgoingRecord(self.state.changelogs[store], self.partition, key, value, ()))
        # Every record must be acknowledged before the transaction commits: a client may fail a refused batch
        # alone, and committing would then publish the offsets (and the other records) without it.
        last_offsets = await self.producer.send_and_wait(records)
        positions = {}
        for store, topic in self.state.changelogs.items():
            last = last_offsets.get((topic, self.partition))
            if last is not None:
                positions[store] = last + 1
        return positions

    def _check_output_logged(self, records: Sequence[OutgoingRecord]) -> None:
        """A store whose changelog the processor writes (`TaskState.output_logged`): every key the transaction
        changed must be among its records there, in this task's partition, or the local store would hold what
        its changelog lacks."""
        for store in self.state.output_logged:
            topic = self.state.changelogs[store]
            logged = {r.key for r in records if r.topic == topic and r.partition == self.partition}
            if missing := [key for key in self.state.written_keys(store) if key not in logged]:
                raise TaskFailed(
                    f"task {self.partition}: store {store!r} changed {len(missing)} keys the processor did not write "
                    f"to its changelog {topic} partition {self.partition}"
                )

    def _checkpoint(self, changelog_positions: dict[str, int]) -> None:
        """Step 6."""
        self.state.committed(changelog_positions, {input_key(tp): offset for tp, offset in self.next_offsets.items()})
        self.outputs.clear()
        self.next_offsets.clear()

    async def _abort(self) -> None:
        """End a failed transaction now rather than leave it to the next owner's fencing (best effort)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.producer.abort_transaction(), 5)

    def discard(self) -> None:
        """Forget everything since the last commit (the caller rewinds the inputs)."""
        self.outputs.clear()
        self.next_offsets.clear()
        self.uncommitted_records = 0
        self.state.discard()

    async def close(self) -> None:
        """Forget what is uncommitted and stop the producer: flushed within PRODUCER_STOP_TIMEOUT_S, else
        abandoned completely (common/kafka_stop.py), so nothing of it retries until the next owner fences it."""
        self.lifecycle.move(TaskPhase.CLOSED)
        self.discard()
        try:
            await self.producer.stop(PRODUCER_STOP_TIMEOUT_S)
        finally:
            self.state.close()


def transactional_id_prefix(application_id: str) -> str:
    """What every task's transactional id starts with: the ACLs grant the processors this prefix (operate.acls)."""
    return f"{application_id}-"


def transactional_id(application_id: str, partition: int) -> str:
    return f"{transactional_id_prefix(application_id)}{partition}"
