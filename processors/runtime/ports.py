"""The runtime's port to Kafka: only the client operations the exactly-once engine uses, in its own vocabulary.

Production wires aiokafka behind it (processors/runtime/kafka_clients.py, the one module of the runtime that
imports aiokafka); tests wire an in-memory transactional broker (tests/processors/memory_kafka.py). The engine,
its tasks and the restore see nothing else of Kafka: records are anything with a record's fields (`Record`),
partitions are `TopicPartition` tuples, and the failures the runtime must tell apart arrive as the exception
types below, whichever client raised them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol


class TopicPartition(NamedTuple):
    """A partition of a topic. A plain tuple: equal to (and hashed as) any client's (topic, partition) tuple."""

    topic: str
    partition: int


def input_key(tp: TopicPartition) -> str:
    """How a task's checkpoint names an input partition (`Checkpoint.inputs`): "topic:partition"."""
    return f"{tp.topic}:{tp.partition}"


class Record(Protocol):
    """A fetched record, as the runtime and the processors read it (aiokafka's ConsumerRecord is one)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def timestamp_type(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class OutgoingRecord(NamedTuple):
    """A record a task's transaction writes, its partition chosen."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


# -- the failures the runtime acts on -------------------------------------------------------------------


class ProducerFencedError(Exception):
    """A newer producer with the same transactional id exists: another instance owns the partition now."""


class RecordRefusedError(Exception):
    """The broker refused a record for what it is (too large, corrupt, bad timestamp): retrying cannot help."""


class NotAssignedError(Exception):
    """The partition is not (or no longer) assigned to this consumer: revoked meanwhile."""


# -- the clients ----------------------------------------------------------------------------------------


class RebalanceListener(Protocol):
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None: ...

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None: ...


class GroupConsumer(Protocol):
    """The engine's consumer: a member of the application's group, read_committed, no auto-commit."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def topics(self) -> set[str]: ...

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    async def committed(self, tp: TopicPartition) -> int | None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    async def seek_to_beginning(self, tp: TopicPartition) -> None: ...

    async def position(self, tp: TopicPartition) -> int:
        """The next offset to fetch; raises `NotAssignedError` when `tp` was revoked meanwhile."""
        ...

    def last_stable_offset(self, tp: TopicPartition) -> int | None: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        """When the last fetch of `tp` was answered (epoch ms of the client's wall clock), if ever."""
        ...


class TransactionalProducer(Protocol):
    """A task's producer, started (which fenced any previous owner of its transactional id).

    Every transactional operation raises `ProducerFencedError` when it was fenced, and sending raises
    `RecordRefusedError` when the broker refused a record for what it is."""

    async def partitions_for(self, keyed: Sequence[tuple[str, bytes | None]]) -> list[int]:
        """The partition the default (murmur2) partitioner picks for each (topic, key), as a plain send would."""
        ...

    async def partition_count(self, topic: str) -> int: ...

    async def begin_transaction(self) -> None: ...

    async def send_and_wait(self, records: Sequence[OutgoingRecord]) -> dict[tuple[str, int], int]:
        """Write `records` in the open transaction and wait until the broker acknowledged every one (the first
        refusal raises). Returns the offset of the last record written to each (topic, partition)."""
        ...

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None: ...

    async def commit_transaction(self) -> None: ...

    async def abort_transaction(self) -> None: ...

    async def stop(self, timeout_s: float) -> None:
        """Flush within `timeout_s`, else abandon what it holds (nothing of it retries afterwards)."""
        ...


class RestoreConsumer(Protocol):
    """An assigned (group-less) read_committed consumer of a task's changelog partitions."""

    async def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Record]]: ...

    async def position(self, tp: TopicPartition) -> int: ...


class Clock(Protocol):
    def wall(self) -> float:
        """Epoch seconds: the clock fetch timestamps (`last_poll_timestamp`) are taken on."""
        ...

    def monotonic(self) -> float:
        """Seconds, monotonic: commit and punctuation intervals, back-offs, idle waits."""
        ...


class KafkaClients(Protocol):
    """Makes the runtime's clients; one per engine."""

    @property
    def clock(self) -> Clock: ...

    def group_consumer(
        self,
        *,
        group_id: str,
        instance_id: str | None,
        session_timeout_ms: int,
        max_poll_records: int,
        max_fetch_bytes: int,
    ) -> GroupConsumer:
        """Not started yet."""
        ...

    async def transactional_producer(
        self, application_id: str, partition: int, max_request_bytes: int
    ) -> TransactionalProducer:
        """Started: any previous owner of the task's transactional id is fenced, its open transaction ended."""
        ...

    def restore_consumer(
        self, partition: int, tps: Sequence[TopicPartition]
    ) -> AbstractAsyncContextManager[RestoreConsumer]:
        """Started and assigned `tps` within the context, stopped after."""
        ...
