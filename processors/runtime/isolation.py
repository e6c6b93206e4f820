"""Isolating a failed batch: replay a task's uncommitted range one input record per transaction, to find and
reject the record behind the failure and commit everything else.

A commit the broker refused a record of (RecordRefused), or whose outputs the processor could not produce
(BatchFailed), or a record whose processing failed (RecordFailed), condemns one record, not the batch. The
engine rebuilds the task from Kafka and replays that range with an `Isolation`: one record per transaction,
so a failure names its record; that record is handed to the processor's `reject` when it comes again. The
bookkeeping is here; the engine does the replaying and committing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.runtime.ports import Record, TopicPartition
from processors.runtime.task import BatchFailed, RecordRefused

Coordinates = tuple[str, int, int]  # topic, partition, offset of an input record


def coordinates(record: Record) -> Coordinates:
    return (record.topic, record.partition, record.offset)


def why(error: RecordRefused | BatchFailed) -> tuple[str, str]:
    """The reason and error a record is rejected with when its own transaction failed so."""
    if isinstance(error, BatchFailed):
        return error.reason, error.error
    return "output_refused", str(error.__cause__ or error)


@dataclass
class Isolation:
    """A task replaying, one record per transaction, a range whose commit the broker refused a record of."""

    until: dict[TopicPartition, int]  # the refused commit's next offsets: isolation ends past them
    refused: dict[Coordinates, tuple[str, str]] = field(default_factory=dict)  # records to reject: reason, error
    current: Coordinates | None = None  # the record of the transaction being committed
    passed: dict[TopicPartition, int] = field(default_factory=dict)  # next offsets committed since

    @classmethod
    def of_failed_record(
        cls, next_offsets: dict[TopicPartition, int], record: Record, reason: str, error: str
    ) -> Isolation:
        """The range a task had processed up to (and with) `record`, whose processing failed."""
        until = dict(next_offsets)
        until[TopicPartition(record.topic, record.partition)] = record.offset + 1
        isolation = cls(until=until)
        isolation.refuse(record, reason, error)
        return isolation

    def finished(self) -> bool:
        return all(self.passed.get(tp, -1) >= end for tp, end in self.until.items())

    def rejection(self, record: Record) -> tuple[str, str] | None:
        """(reason, error) when `record` is to be rejected rather than processed."""
        return self.refused.get(coordinates(record))

    def refuse(self, record: Record, reason: str, error: str) -> None:
        self.refused[coordinates(record)] = (reason, error)

    def committing(self, record: Record) -> None:
        self.current = coordinates(record)

    def committed(self, record: Record) -> None:
        self.passed[TopicPartition(record.topic, record.partition)] = record.offset + 1

    def current_failed(self, error: RecordRefused | BatchFailed) -> Coordinates | None:
        """The transaction of the current record failed for what it holds: that record is rejected when it comes
        again. Returns its coordinates when it was being rejected already (even its dead letter failed: nothing
        can be committed past it), else None."""
        current, self.current = self.current, None
        if current is None:
            return None
        again = current in self.refused
        self.refused[current] = why(error)
        return current if again else None
