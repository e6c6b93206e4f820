"""The bookkeeping of a failed batch's isolation (the engine's replay over it: test_engine_memory.py)."""

from __future__ import annotations

from processors.runtime.isolation import Isolation
from processors.runtime.ports import TopicPartition
from processors.runtime.task import BatchFailed, RecordRefused
from tests.processors.memory_kafka import MemoryRecord

A, B = TopicPartition("a", 0), TopicPartition("b", 0)


def record(tp: TopicPartition, offset: int) -> MemoryRecord:
    return MemoryRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", ())


def test_a_failed_records_range_ends_with_it_and_it_alone_is_rejected() -> None:
    isolation = Isolation.of_failed_record({A: 10, B: 4}, record(B, 6), "processing_error", "RuntimeError")
    assert isolation.until == {A: 10, B: 7}
    assert isolation.rejection(record(B, 6)) == ("processing_error", "RuntimeError")
    assert isolation.rejection(record(B, 5)) is None
    for tp, end in ((A, 10), (B, 6)):
        isolation.committed(record(tp, end - 1))
    assert not isolation.finished()
    isolation.committed(record(B, 6))
    assert isolation.finished()


def test_the_record_whose_own_transaction_fails_is_rejected_next_and_a_failing_rejection_is_reported() -> None:
    isolation = Isolation(until={A: 3})
    assert isolation.current_failed(BatchFailed("encode_error", "x")) is None  # no record committing: nothing
    assert isolation.refused == {}

    isolation.committing(record(A, 1))
    refused = RecordRefused("task 0: commit failed")
    refused.__cause__ = ValueError("MessageSizeTooLargeError")
    assert isolation.current_failed(refused) is None
    assert isolation.rejection(record(A, 1)) == ("output_refused", "MessageSizeTooLargeError")
    assert isolation.current is None

    isolation.committing(record(A, 1))  # its dead letter's transaction fails as well: the partition is stuck
    assert isolation.current_failed(BatchFailed("encode_error", "dead letter")) == ("a", 0, 1)
    assert isolation.rejection(record(A, 1)) == ("encode_error", "dead letter")
