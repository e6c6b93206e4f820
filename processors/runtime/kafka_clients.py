"""The runtime's Kafka clients on aiokafka: the one module of processors.runtime that imports aiokafka.

It implements processors/runtime/ports.py: the group consumer, the tasks' transactional producers (with the
batch writer and the key partitioner that make a commit cheap) and the restore consumer, and maps aiokafka's
errors to the port's exception types (fenced, record refused, not assigned).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka import errors as Errors
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.partitioner import DefaultPartitioner

from common.kafka_errors import RECORD_REFUSED_ERRORS
from common.kafka_stop import stop_producer
from common.settings import KafkaSettings
from processors.runtime.ports import (
    Clock,
    NotAssignedError,
    OutgoingRecord,
    ProducerFencedError,
    RebalanceListener,
    Record,
    RecordRefusedError,
    TopicPartition,
)
from processors.runtime.task import transactional_id


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


_KAFKA_TPS: dict[tuple[str, int], KafkaTopicPartition] = {}  # the engine asks about the same few partitions often


def _kafka_tp(tp: TopicPartition) -> KafkaTopicPartition:
    kafka_tp = _KAFKA_TPS.get(tp)
    if kafka_tp is None:
        if len(_KAFKA_TPS) >= 100_000:
            _KAFKA_TPS.clear()
        kafka_tp = _KAFKA_TPS[tp] = KafkaTopicPartition(tp.topic, tp.partition)
    return kafka_tp


def _our_tp(tp: Any) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


class AiokafkaClients:
    """Production's `KafkaClients`."""

    def __init__(self, kafka: KafkaSettings, clock: Clock | None = None) -> None:
        self.kafka = kafka
        self._clock = clock or SystemClock()

    @property
    def clock(self) -> Clock:
        return self._clock

    def group_consumer(
        self,
        *,
        group_id: str,
        instance_id: str | None,
        session_timeout_ms: int,
        max_poll_records: int,
        max_fetch_bytes: int,
    ) -> AiokafkaGroupConsumer:
        return AiokafkaGroupConsumer(
            AIOKafkaConsumer(
                **self.kafka.client_kwargs(),
                client_id=f"{self.kafka.client_id_prefix}-{group_id}",
                group_id=group_id,
                group_instance_id=instance_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                partition_assignment_strategy=(RangePartitionAssignor,),
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=max(100, session_timeout_ms // 5),
                max_poll_records=max_poll_records,
                max_partition_fetch_bytes=max_fetch_bytes,
            )
        )

    async def transactional_producer(
        self, application_id: str, partition: int, max_request_bytes: int
    ) -> AiokafkaTransactionalProducer:
        return await start_producer(self.kafka, application_id, partition, max_request_bytes)

    @asynccontextmanager
    async def restore_consumer(
        self, partition: int, tps: Sequence[TopicPartition]
    ) -> AsyncIterator[AiokafkaRestoreConsumer]:
        consumer = AIOKafkaConsumer(
            **self.kafka.client_kwargs(),
            client_id=f"{self.kafka.client_id_prefix}-restore-{partition}",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 2**20,
            fetch_max_bytes=64 * 2**20,
        )
        await consumer.start()
        try:
            consumer.assign([_kafka_tp(tp) for tp in tps])
            yield AiokafkaRestoreConsumer(consumer)
        finally:
            await consumer.stop()


# -- the group consumer ---------------------------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: RebalanceListener) -> None:
        self.listener = listener

    async def on_partitions_revoked(self, revoked: list[Any]) -> None:
        await self.listener.on_partitions_revoked([_our_tp(tp) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[Any]) -> None:
        await self.listener.on_partitions_assigned([_our_tp(tp) for tp in assigned])


class AiokafkaGroupConsumer:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def topics(self) -> set[str]:
        return set(await self.consumer.topics())

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.consumer.subscribe(list(topics), listener=_Listener(listener))

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return {TopicPartition(tp.topic, tp.partition): records for tp, records in batch.items()}

    def assignment(self) -> set[TopicPartition]:
        return {_our_tp(tp) for tp in self.consumer.assignment()}

    def pause(self, *partitions: TopicPartition) -> None:
        self.consumer.pause(*[_kafka_tp(tp) for tp in partitions])

    def resume(self, *partitions: TopicPartition) -> None:
        self.consumer.resume(*[_kafka_tp(tp) for tp in partitions])

    async def committed(self, tp: TopicPartition) -> int | None:
        committed = await self.consumer.committed(_kafka_tp(tp))
        return None if committed is None else int(committed)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(_kafka_tp(tp), offset)

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        await self.consumer.seek_to_beginning(_kafka_tp(tp))

    async def position(self, tp: TopicPartition) -> int:
        try:
            return int(await self.consumer.position(_kafka_tp(tp)))
        except Errors.IllegalStateError as exc:
            raise NotAssignedError(str(exc)) from exc

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return self.consumer.last_stable_offset(_kafka_tp(tp))  # type: ignore[no-any-return]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(_kafka_tp(tp))  # type: ignore[no-any-return]

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return self.consumer.last_poll_timestamp(_kafka_tp(tp))  # type: ignore[no-any-return]


# -- the restore consumer -------------------------------------------------------------------------------


class AiokafkaRestoreConsumer:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        offsets = await self.consumer.beginning_offsets([_kafka_tp(tp) for tp in tps])
        return {_our_tp(tp): int(offset) for tp, offset in offsets.items()}

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        offsets = await self.consumer.end_offsets([_kafka_tp(tp) for tp in tps])
        return {_our_tp(tp): int(offset) for tp, offset in offsets.items()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(_kafka_tp(tp), offset)

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Record]]:
        batch = await self.consumer.getmany(
            *[_kafka_tp(tp) for tp in tps], timeout_ms=timeout_ms, max_records=max_records
        )
        return {_our_tp(tp): records for tp, records in batch.items()}

    async def position(self, tp: TopicPartition) -> int:
        return int(await self.consumer.position(_kafka_tp(tp)))


# -- the transactional producer -------------------------------------------------------------------------

# Errors that condemn a record rather than the broker or the connection: retrying cannot help.
RECORD_ERRORS: tuple[type[BaseException], ...] = (*RECORD_REFUSED_ERRORS, Errors.InvalidTimestampError)
FENCED_ERRORS: tuple[type[BaseException], ...] = (Errors.ProducerFenced, Errors.TransactionCoordinatorFenced)


@contextmanager
def _port_errors() -> Iterator[None]:
    """aiokafka's fencing and record refusals as the port's types (the original as the cause)."""
    try:
        yield
    except FENCED_ERRORS as exc:
        raise ProducerFencedError(str(exc)) from exc
    except RECORD_ERRORS as exc:
        raise RecordRefusedError(str(exc)) from exc  # its text is the dead letter's error: the client's own
    except Errors.KafkaError as exc:
        # aiokafka reports some fencings only in the message (an InvalidProducerEpoch, a failed transaction's
        # "fenced" state): they are fencings all the same.
        if "fenced" in str(exc).lower():
            raise ProducerFencedError(str(exc)) from exc
        raise


class AiokafkaTransactionalProducer:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.partitioner = KeyPartitioner(producer)

    async def partitions_for(self, keyed: Sequence[tuple[str, bytes | None]]) -> list[int]:
        return await self.partitioner.partitions_for(keyed)

    async def partition_count(self, topic: str) -> int:
        return len(await self.producer.partitions_for(topic))

    async def begin_transaction(self) -> None:
        with _port_errors():
            await self.producer.begin_transaction()

    async def send_and_wait(self, records: Sequence[OutgoingRecord]) -> dict[tuple[str, int], int]:
        with _port_errors():
            writer = BatchWriter(self.producer)
            append = writer.append
            for record in records:
                if not append(record):
                    await writer.append_to_new_batch(record)
            return await writer.acknowledged()

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        with _port_errors():
            await self.producer.send_offsets_to_transaction(
                {_kafka_tp(tp): offset for tp, offset in offsets.items()}, group_id
            )

    async def commit_transaction(self) -> None:
        with _port_errors():
            await self.producer.commit_transaction()

    async def abort_transaction(self) -> None:
        with _port_errors():
            await self.producer.abort_transaction()

    async def stop(self, timeout_s: float) -> None:
        await stop_producer(self.producer, timeout_s)


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

    async def partitions_for(self, keyed: Sequence[tuple[str, bytes | None]]) -> list[int]:
        """The partition of each (topic, key); the topics' partition lists are awaited only when first needed."""
        by_key = self._by_key
        placed = []
        for topic_key in keyed:
            partition = by_key.get(topic_key)
            if partition is None:
                partition = await self._partition_for(*topic_key)
            placed.append(partition)
        return placed

    async def _partition_for(self, topic: str, key: bytes | None) -> int:
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

    def append(self, record: OutgoingRecord) -> bool:
        """Add the record to its partition's open batch; False when that batch is full (`append_to_new_batch`)."""
        tp = (record.topic, record.partition)
        batch = self._open.get(tp)
        if batch is None:
            batch = self._open[tp] = self.producer.create_batch()
        headers = record.headers
        return (
            batch.append(
                key=record.key,
                value=record.value,
                timestamp=None,
                headers=headers if type(headers) is list else list(headers),  # the builder takes lists only
            )
            is not None
        )

    async def append_to_new_batch(self, record: OutgoingRecord) -> None:
        """The record's batch was full: send it, and start another with the record."""
        tp = (record.topic, record.partition)
        await self._send(tp)
        headers = list(record.headers)
        batch = self._open[tp] = self.producer.create_batch()
        if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
            # Larger than a batch: the plain send path gives it a batch of its own.
            del self._open[tp]
            future = await self.producer.send(
                record.topic, record.value, key=record.key, partition=record.partition, headers=headers
            )
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


async def start_producer(
    kafka: KafkaSettings, application_id: str, partition: int, max_request_bytes: int
) -> AiokafkaTransactionalProducer:
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
    return AiokafkaTransactionalProducer(producer)
