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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from connector.settings import KafkaSettings
from connector.topics import MAX_MESSAGE_BYTES
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


class TaskProcessor(Protocol):
    """Application logic of a task; the runtime calls it and commits what it emitted and wrote."""

    def process(self, record: ConsumerRecord[bytes, bytes]) -> None: ...

    def punctuate(self, wall_clock_ms: int) -> None: ...

    def end_of_batch(self) -> None: ...


ProcessorFactory = Callable[[TaskContext], TaskProcessor]


class TaskFailed(RuntimeError):
    """The task could not commit; it must be rebuilt from Kafka before it processes again."""


class TaskFenced(TaskFailed):
    """Another instance owns this partition now."""


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

    def process(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self.processor is not None
        for record in records:
            self.processor.process(record)
            # Records are taken in timestamp order, which is not always offset order within a partition.
            tp = TopicPartition(record.topic, record.partition)
            self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), record.offset + 1)
        self.uncommitted_records += len(records)
        self.processor.end_of_batch()

    def punctuate(self, wall_clock_ms: int) -> None:
        assert self.processor is not None
        self.processor.punctuate(wall_clock_ms)

    def needs_commit(self) -> bool:
        return bool(self.next_offsets or self.outputs or self.state.has_pending_writes())

    async def commit(self) -> int:
        """Commit outputs, changelog writes and offsets atomically; returns how many input records it covered."""
        if not self.needs_commit():
            return 0
        try:
            await asyncio.wait_for(self._commit(), self.commit_timeout_s)
        except Exception as exc:
            from aiokafka.errors import ProducerFenced, TransactionCoordinatorFenced

            fenced = isinstance(exc, ProducerFenced | TransactionCoordinatorFenced) or "fenced" in str(exc).lower()
            raise (TaskFenced if fenced else TaskFailed)(
                f"task {self.partition}: commit failed: {type(exc).__name__}: {exc}"
            ) from exc
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
        last_offsets = await writer.flush()
        if self.next_offsets:
            await producer.send_offsets_to_transaction(dict(self.next_offsets), self.group_id)
        await producer.commit_transaction()
        positions = {store: (await last_offsets[tp]()) + 1 for store, tp in changelog_tps.items()}
        self.state.committed(positions)
        self.outputs.clear()
        self.next_offsets.clear()

    def discard(self) -> None:
        """Forget everything since the last commit (the caller rewinds the inputs)."""
        self.outputs.clear()
        self.next_offsets.clear()
        self.uncommitted_records = 0
        self.state.discard()

    async def close(self) -> None:
        self.discard()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.producer.stop(), 10)
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

    async def flush(self) -> dict[tuple[str, int], Callable[[], Awaitable[int]]]:
        """Send what is open; per topic-partition, a coroutine factory giving its last record's offset."""
        for tp in list(self._open):
            await self._send(tp)

        def last_offset(tp: tuple[str, int]) -> Callable[[], Awaitable[int]]:
            async def wait() -> int:
                future, count = self._sent[tp][-1]
                metadata = await future
                return int(metadata.offset) + count - 1

            return wait

        return {tp: last_offset(tp) for tp in self._sent}


_PARTITIONER = DefaultPartitioner()
BATCH_BYTES = 512 * 1024


def transactional_id(application_id: str, partition: int) -> str:
    return f"{application_id}-{partition}"


async def start_producer(kafka: KafkaSettings, application_id: str, partition: int) -> AIOKafkaProducer:
    """The task's transactional producer; `start` fences any previous owner of the partition."""
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        client_id=f"{kafka.client_id_prefix}-{application_id}-{partition}",
        transactional_id=transactional_id(application_id, partition),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        # A batch is what the broker checks against a topic's max.message.bytes (1 MiB by default on the
        # output topics and changelogs), so batches stay well below it; a larger record (a dead letter of
        # a large input) is sent on its own, up to the dead-letter topic's limit.
        max_batch_size=BATCH_BYTES,
        max_request_size=MAX_MESSAGE_BYTES,
        transaction_timeout_ms=60_000,
    )
    await producer.start()
    return producer
