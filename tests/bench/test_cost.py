"""bench.cost: the broker's counts per partition become per-topic costs, totals and the table of docs/benchmarks.md."""

from __future__ import annotations

import struct

import pytest

from bench.cost import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    PREPARE_COMMIT,
    PartitionCount,
    TransactionTally,
    comparison_table,
    cost_table,
    parse_transaction_record,
    topic_costs,
    total,
    totals_table,
)


def _key(transactional_id: str) -> bytes:
    raw = transactional_id.encode()
    return struct.pack(">hh", 0, len(raw)) + raw


def _value_v0(status: int, partitions: dict[str, list[int]]) -> bytes:
    out = struct.pack(">hqhib", 0, 1000, 3, 60_000, status) + struct.pack(">i", len(partitions))
    for topic, ids in partitions.items():
        out += struct.pack(">h", len(topic)) + topic.encode() + struct.pack(">i", len(ids))
        out += b"".join(struct.pack(">i", i) for i in ids)
    return out + struct.pack(">qq", 1_765_000_000_000, 1_765_000_000_000)


def _value_v1(status: int, partitions: dict[str, list[int]]) -> bytes:
    """Flexible version: compact arrays and strings (length + 1 as a varint), tagged fields after each struct."""
    out = struct.pack(">hqhib", 1, 1000, 3, 60_000, status) + bytes([len(partitions) + 1])
    for topic, ids in partitions.items():
        out += bytes([len(topic) + 1]) + topic.encode() + bytes([len(ids) + 1])
        out += b"".join(struct.pack(">i", i) for i in ids)
        out += bytes([1, 7, 2, 0xAB, 0xCD])  # one tagged field (tag 7, 2 bytes) the reader must skip
    out += struct.pack(">qq", 1_765_000_000_000, 1_765_000_000_000)
    # The value's own tagged fields: PreviousProducerId (tag 0) and ClientTransactionVersion (tag 2).
    return out + bytes([2, 0, 8]) + struct.pack(">q", 999) + bytes([2, 2]) + struct.pack(">h", 2)


@pytest.mark.parametrize("encode", [_value_v0, _value_v1])
def test_transaction_log_record(encode: object) -> None:
    assert callable(encode)
    partitions = {"pinwheel.account_updates.v1": [0, 4], "app-dedupe-changelog": [4], "__consumer_offsets": [17]}
    record = parse_transaction_record(_key("app-4"), encode(PREPARE_COMMIT, partitions))
    assert record is not None
    assert record.transactional_id == "app-4"
    assert record.status == PREPARE_COMMIT
    assert record.partitions == {topic: tuple(ids) for topic, ids in partitions.items()}
    assert parse_transaction_record(_key("app-4"), None) is None  # a tombstone: the id expired


def test_tally_counts_transactions_and_their_partitions() -> None:
    tally = TransactionTally()
    for status, partitions in [
        (1, {"updates": [0]}),  # Ongoing: not counted
        (PREPARE_COMMIT, {"updates": [0, 1], "dedupe": [0]}),
        (COMPLETE_COMMIT, {}),
        (PREPARE_COMMIT, {"dedupe": [1]}),
        (COMPLETE_COMMIT, {}),
        (3, {"updates": [2]}),  # PrepareAbort
        (COMPLETE_ABORT, {}),
    ]:
        record = parse_transaction_record(_key("app-0"), _value_v1(status, partitions))
        assert record is not None
        tally.add(record)
    assert (tally.committed, tally.aborted) == (2, 1)
    assert tally.per_topic == {"updates": 1, "dedupe": 2}
    assert tally.markers == {"updates": 2, "dedupe": 2}


def test_partition_count_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="committed <= records <= offsets"):
        PartitionCount("t", 0, offsets=10, records=11, committed=11, bytes=0)
    with pytest.raises(ValueError, match="committed <= records <= offsets"):
        PartitionCount("t", 0, offsets=10, records=5, committed=6, bytes=0)


# Two partitions of two topics from the 503-input paced run of 2026-12-06 (the per-topic sums are that run's).
COUNTS = [
    PartitionCount("pinwheel.account_updates.v1", 0, offsets=340, records=240, committed=240, bytes=147_000),
    PartitionCount("pinwheel.account_updates.v1", 1, offsets=334, records=236, committed=236, bytes=144_825),
    PartitionCount("<app>-timers-changelog", 0, offsets=430, records=302, committed=300, bytes=17_000),
    PartitionCount("<app>-timers-changelog", 1, offsets=418, records=290, committed=290, bytes=16_473),
]


def test_topic_costs_and_total() -> None:
    tally = TransactionTally()
    tally.per_topic.update({"pinwheel.account_updates.v1": 198, "<app>-timers-changelog": 256})
    costs = topic_costs(COUNTS, tally, {"pinwheel.account_updates.v1": 328_000, "<app>-timers-changelog": 74_000})
    updates, timers = costs
    assert (updates.offsets, updates.committed, updates.markers, updates.aborted) == (674, 476, 198, 0)
    assert (timers.offsets, timers.committed, timers.markers, timers.aborted) == (848, 590, 256, 2)
    assert (updates.bytes, timers.bytes, updates.transactions, timers.transactions) == (291_825, 33_473, 198, 256)
    whole = total(costs, transactions=263)
    assert (whole.offsets, whole.committed, whole.markers, whole.aborted) == (1_522, 1_066, 454, 2)
    assert (whole.bytes, whole.log_bytes, whole.transactions) == (325_298, 402_000, 263)
    # Every offset is a committed record, an aborted one or a marker.
    assert all(c.offsets == c.committed + c.aborted + c.markers for c in [*costs, whole])


def test_table_per_input() -> None:
    costs = topic_costs(COUNTS, TransactionTally(), None)
    assert cost_table(costs, committed_transactions=263, inputs=503).splitlines() == [
        "| topic | committed records | per input | offsets used | per input | markers | aborted | bytes | "
        "bytes per input | log bytes per input | transactions | per input |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| `pinwheel.account_updates.v1` | 476 | 0.95 | 674 | 1.34 | 198 | 0 | 291,825 | 580 | - | 0 | 0.000 |",
        "| `<app>-timers-changelog` | 590 | 1.17 | 848 | 1.69 | 256 | 2 | 33,473 | 67 | - | 0 | 0.000 |",
        "| total | 1,066 | 2.12 | 1,522 | 3.03 | 454 | 2 | 325,298 | 647 | - | 263 | 0.523 |",
    ]
    with pytest.raises(ValueError, match="at least one input"):
        cost_table(costs, committed_transactions=0, inputs=0)


def test_comparison_table_per_input() -> None:
    tally = TransactionTally()
    full = topic_costs(COUNTS, tally, {"pinwheel.account_updates.v1": 328_000, "<app>-timers-changelog": 74_000})
    paced = topic_costs(
        [PartitionCount(c.topic, c.partition, c.offsets * 2, c.records * 2, c.committed * 2, c.bytes) for c in COUNTS],
        tally,
        None,
    )
    lines = comparison_table({"full": (full, 10, 503), "paced": (paced, 263, 1006)}).splitlines()
    assert lines[0] == (
        "| topic | committed records (full) | committed records (paced) | offsets used (full) | offsets used (paced) "
        "| markers (full) | markers (paced) | bytes (full) | bytes (paced) | log bytes (full) | log bytes (paced) |"
    )
    assert lines[2:] == [
        "| `pinwheel.account_updates.v1` | 0.95 | 0.95 | 1.34 | 1.34 | 0.39 | 0.39 | 580 | 290 | 652 | - |",
        "| `<app>-timers-changelog` | 1.17 | 1.17 | 1.69 | 1.69 | 0.51 | 0.51 | 67 | 33 | 147 | - |",
        "| total | 2.12 | 2.12 | 3.03 | 3.03 | 0.90 | 0.90 | 647 | 323 | 799 | - |",
    ]


def test_totals_table_per_input() -> None:
    costs = topic_costs(COUNTS, TransactionTally(), {"pinwheel.account_updates.v1": 328_000})
    assert totals_table({"paced": (costs, 263, 503), "none": (costs[:0], 0, 503)}).splitlines()[2:] == [
        "| paced | 2.12 | 3.03 | 0.90 | 647 | 652 | 0.523 |",
        "| none | 0.00 | 0.00 | 0.00 | 0 | 0 | 0.000 |",
    ]
