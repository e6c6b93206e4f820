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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from common.kafka_errors import RECORD_REFUSED_ERRORS
from common.kafka_stop import stop_producer
from common.settings import KafkaSettings
from processors.runtime.state import TaskState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None


class TaskContext(Protocol):
    """What a processor sees of its task."""

    @property
    def partition(self) -> int: ...

    @property
    def state(self) -> TaskState: ...

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

    def event_time(self, record: ConsumerRecord[bytes, bytes]) -> int:
        """The record's event time (epoch µs), the time it moves the processor's stream time to: the runtime
        processes a task's records in this order (each input partition's in offset order). Called once per
        fetched record, before ``process``; it must not touch state."""
        ...

    def process(self, record: ConsumerRecord[bytes, bytes], watermark_us: int) -> None:
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

    def reject(self, record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> None:
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

    def __init__(self, record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> None:
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


# Errors that condemn a record rather than the broker or the connection: retrying cannot help.
RECORD_ERRORS: tuple[type[BaseException], ...] = (
    *RECORD_REFUSED_ERRORS,
    Errors.InvalidTimestampError,
)


#: How long a closing task waits for its producer to flush before abandoning it (the broker is gone).
PRODUCER_STOP_TIMEOUT_S = 10.0


@dataclass
class Task:
    partition: int
    state: TaskState
    producer: AIOKafkaProducer
    group_id: str
    commit_timeout_s: float
    processor: TaskProcessor | None = None
    outputs: list[OutRecord] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    uncommitted_records: int = 0
    partitioner: KeyPartitioner = field(init=False)

    def __post_init__(self) -> None:
        self.partitioner = KeyPartitioner(self.producer)

    def emit(self, record: OutRecord) -> None:
        self.outputs.append(record)

    def event_time(self, record: ConsumerRecord[bytes, bytes]) -> int:
        assert self.processor is not None
        return self.processor.event_time(record)

    def process(self, records: list[ConsumerRecord[bytes, bytes]], watermark_us: int) -> None:
        assert self.processor is not None
        for record in records:
            self.processor.process(record, watermark_us)
            self.next_offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        self.uncommitted_records += len(records)

    def reject(self, record: ConsumerRecord[bytes, bytes], reason: str, error: str) -> None:
        assert self.processor is not None
        self.processor.reject(record, reason, error)
        self.next_offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        self.uncommitted_records += 1

    def punctuate(self, wall_clock_ms: int, watermark_us: int) -> None:
        assert self.processor is not None
        self.processor.punctuate(wall_clock_ms, watermark_us)

    def needs_commit(self) -> bool:
        return bool(self.next_offsets or self.outputs or self.state.has_pending_writes())

    def flush(self) -> None:
        """The first step of a commit: the processor writes what it holds back (cached values, coalesced
        snapshots) into the state's overlay and the outputs. Once per commit, so a key written by many
        records in between is serialized, and reaches the changelog, once."""
        if self.processor is not None:
            self.processor.end_of_batch()

    async def commit(self) -> int:
        """Commit outputs, changelog writes and offsets atomically; returns how many input records it covered."""
        self.flush()  # its failure (the registry, for a snapshot's schema) is the engine's to handle, as a batch's
        if not self.needs_commit():
            return 0
        try:
            await asyncio.wait_for(self._commit(), self.commit_timeout_s)
        except Exception as exc:
            await self._abort()
            fenced = (
                isinstance(exc, Errors.ProducerFenced | Errors.TransactionCoordinatorFenced)
                or "fenced" in str(exc).lower()
            )
            kind = TaskFenced if fenced else RecordRefused if isinstance(exc, RECORD_ERRORS) else TaskFailed
            raise kind(f"task {self.partition}: commit failed: {type(exc).__name__}: {exc}") from exc
        covered = self.uncommitted_records
        self.uncommitted_records = 0
        return covered

    async def _commit(self) -> None:
        producer = self.producer
        await producer.begin_transaction()
        writer = BatchWriter(producer)
        for out in self.outputs:
            partition = out.partition
            if partition is None:
                partition = await self.partitioner.partition_for(out.topic, out.key)
            await writer.append(out.topic, partition, out.key, out.value, out.headers)
        changelog_tps = {}
        for store, key, value in self.state.pending_writes():
            topic = self.state.changelogs[store]
            changelog_tps[store] = (topic, self.partition)
            await writer.append(topic, self.partition, key, value, ())
        # Every record must be acknowledged before the transaction commits: aiokafka fails a refused batch
        # alone, and committing would then publish the offsets (and the other records) without it.
        last_offsets = await writer.acknowledged()
        if self.next_offsets:
            await producer.send_offsets_to_transaction(dict(self.next_offsets), self.group_id)
        await producer.commit_transaction()
        self.state.committed({store: last_offsets[tp] + 1 for store, tp in changelog_tps.items()})
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
        self.discard()
        await stop_producer(self.producer, PRODUCER_STOP_TIMEOUT_S)
        self.state.close()


class KeyPartitioner:
    """The partition the default (murmur2) partitioner picks for a key, as a plain send() would.

    aiokafka's murmur2 is pure Python (~20 us a key) and an account's key recurs in every output, so
    results are kept (the partition count of a topic does not change under a running task).
    """

    def __init__(self, producer: AIOKafkaProducer, max_keys: int = 100_000) -> None:
        self.producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes | None], int] = {}
        self._max_keys = max_keys

    async def partition_for(self, topic: str, key: bytes | None) -> int:
        cached = self._by_key.get((topic, key))
        if cached is not None:
            return cached
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        partition = int(_PARTITIONER(key, partitions, partitions))
        if key is not None:
            if len(self._by_key) >= self._max_keys:
                self._by_key.clear()
            self._by_key[(topic, key)] = partition
        return partition


class BatchWriter:
    """Builds record batches per topic-partition directly (aiokafka's batch API).

    A task commits hundreds of records at once, all to known partitions; filling batches ourselves
    costs a fraction of one `send()` per record (serialization, partitioning, a future each).
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._open: dict[tuple[str, int], Any] = {}
        self._sent: dict[tuple[str, int], list[tuple[asyncio.Future[Any], int]]] = {}

    async def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        tp = (topic, partition)
        batch = self._open.get(tp)
        if batch is None:
            batch = self._open[tp] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
            await self._send(tp)
            batch = self._open[tp] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                # Larger than a batch: the plain send path gives it a batch of its own.
                del self._open[tp]
                future = await self.producer.send(topic, value, key=key, partition=partition, headers=list(headers))
                self._sent.setdefault(tp, []).append((future, 1))

    async def _send(self, tp: tuple[str, int]) -> None:
        batch = self._open.pop(tp)
        future = await self.producer.send_batch(batch, tp[0], partition=tp[1])
        self._sent.setdefault(tp, []).append((future, batch.record_count()))

    async def acknowledged(self) -> dict[tuple[str, int], int]:
        """Send what is open and wait until the broker acknowledged every batch; the first refusal raises.

        Returns the offset of the last record written to each topic-partition.
        """
        for tp in list(self._open):
            await self._send(tp)
        sent = [(tp, future, count) for tp, batches in self._sent.items() for future, count in batches]
        results = await asyncio.gather(*(future for _tp, future, _count in sent), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        last: dict[tuple[str, int], int] = {}
        for (tp, _future, count), metadata in zip(sent, results, strict=True):
            last[tp] = int(metadata.offset) + count - 1  # type: ignore[union-attr]
        return last


_PARTITIONER = DefaultPartitioner()
BATCH_BYTES = 512 * 1024


def transactional_id_prefix(application_id: str) -> str:
    """What every task's transactional id starts with: the ACLs grant the processors this prefix (operate.acls)."""
    return f"{application_id}-"


def transactional_id(application_id: str, partition: int) -> str:
    return f"{transactional_id_prefix(application_id)}{partition}"


async def start_producer(
    kafka: KafkaSettings, application_id: str, partition: int, max_request_bytes: int
) -> AIOKafkaProducer:
    """The task's transactional producer; `start` fences any previous owner of the partition. It sends records of
    up to `max_request_bytes` (the largest record any output topic takes)."""
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        client_id=f"{kafka.client_id_prefix}-{application_id}-{partition}",
        transactional_id=transactional_id(application_id, partition),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        # A batch is what the broker checks against a topic's max.message.bytes (1 MiB by default on the
        # output topics and changelogs), so batches stay well below it; a larger record (a dead letter of
        # a large input) is sent on its own, up to `max_request_bytes`.
        max_batch_size=BATCH_BYTES,
        max_request_size=max_request_bytes,
        transaction_timeout_ms=60_000,
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a failed start leaves the client open ("Unclosed AIOKafkaProducer")
        raise
    return producer
