"""The broker cost of a run, as counted from the broker: the pure part of `bench.broker_cost`.

Per topic partition the shell reads four numbers, before and after a run, from the broker alone:
- offsets used: the end offset after minus before (the high watermark): every data record and every
  transaction marker (a control record, one per partition a transaction wrote to, at its commit or abort)
  takes one offset;
- records: data records, counted by a read_uncommitted consumer between the two end offsets (aiokafka skips
  control batches in either isolation level);
- committed records: the same count by a read_committed consumer (aborted transactions' records left out);
- bytes: the committed records' key + value + header bytes as consumed.
From them: markers = offsets used - records, aborted records = records - committed records. Transactions
come from the transaction coordinator's own log, `__transaction_state` (`parse_transaction_record`): one
`CompleteCommit` (or `CompleteAbort`) record per transaction, and its `PrepareCommit` record lists the
partitions the transaction wrote to.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.report import table

# org.apache.kafka.coordinator.transaction.TransactionState ids (Kafka 4.3 TransactionLogValue's status byte).
PREPARE_COMMIT = 2
PREPARE_ABORT = 3
COMPLETE_COMMIT = 4
COMPLETE_ABORT = 5


@dataclass(frozen=True, slots=True)
class PartitionCount:
    """What the broker shows for one partition over a run."""

    topic: str
    partition: int
    offsets: int  # end offset after - end offset before
    records: int  # data records (read_uncommitted)
    committed: int  # data records a read_committed consumer returns
    bytes: int  # key + value + header bytes of the committed records

    def __post_init__(self) -> None:
        if not 0 <= self.committed <= self.records <= self.offsets:
            raise ValueError(f"{self.topic}-{self.partition}: expected committed <= records <= offsets, got {self}")


@dataclass(frozen=True, slots=True)
class TopicCost:
    topic: str
    offsets: int
    committed: int
    aborted: int
    markers: int
    bytes: int
    transactions: int  # committed transactions that wrote to the topic (from the coordinator's log)
    log_bytes: int | None = None  # growth of the topic's log segments on disk, when the broker is ours


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    transactional_id: str
    status: int
    partitions: Mapping[str, tuple[int, ...]]


@dataclass(slots=True)
class TransactionTally:
    """Transactions of the transactional ids counted, as the coordinator logged them."""

    committed: int = 0
    aborted: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)  # committed transactions writing to the topic
    markers: Counter[str] = field(default_factory=Counter)  # partitions written by committed transactions

    def add(self, record: TransactionRecord) -> None:
        if record.status == COMPLETE_COMMIT:
            self.committed += 1
        elif record.status == COMPLETE_ABORT:
            self.aborted += 1
        elif record.status == PREPARE_COMMIT:
            for topic, partitions in record.partitions.items():
                self.per_topic[topic] += 1
                self.markers[topic] += len(partitions)


def parse_transaction_record(key: bytes, value: bytes | None) -> TransactionRecord | None:
    """A `__transaction_state` record (TransactionLogKey v0, TransactionLogValue v0 or v1); None for a tombstone."""
    if value is None:
        return None
    (key_version, id_length) = struct.unpack_from(">hh", key, 0)
    if key_version != 0:
        raise ValueError(f"unknown TransactionLogKey version {key_version}")
    transactional_id = key[4 : 4 + id_length].decode()
    version, _producer_id, _epoch, _timeout_ms, status = struct.unpack_from(">hqhib", value, 0)
    if version not in (0, 1):
        raise ValueError(f"unknown TransactionLogValue version {version}")
    reader = _Reader(value, 17)
    partitions: dict[str, tuple[int, ...]] = {}
    count = reader.compact_length() if version >= 1 else reader.int32()
    for _ in range(max(0, count)):  # -1: null
        topic = reader.compact_string() if version >= 1 else reader.string()
        ids = reader.compact_length() if version >= 1 else reader.int32()
        partitions[topic] = tuple(reader.int32() for _ in range(max(0, ids)))
        if version >= 1:
            reader.skip_tagged_fields()
    return TransactionRecord(transactional_id, status, partitions)


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def int32(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.offset)
        self.offset += 4
        return int(value)

    def string(self) -> str:
        (length,) = struct.unpack_from(">h", self.data, self.offset)
        self.offset += 2
        text = self.data[self.offset : self.offset + length].decode()
        self.offset += length
        return text

    def varint(self) -> int:
        shift = value = 0
        while True:
            byte = self.data[self.offset]
            self.offset += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_length(self) -> int:
        return self.varint() - 1  # compact arrays and strings store length + 1 (0: null)

    def compact_string(self) -> str:
        length = self.compact_length()
        text = self.data[self.offset : self.offset + length].decode()
        self.offset += length
        return text

    def skip_tagged_fields(self) -> None:
        for _ in range(self.varint()):
            self.varint()  # tag
            size = self.varint()  # (not `self.offset += self.varint()`: that would add to the offset before it)
            self.offset += size


def topic_costs(
    counts: Iterable[PartitionCount],
    transactions: TransactionTally,
    log_bytes: Mapping[str, int] | None = None,
) -> list[TopicCost]:
    """Per topic, in the order topics first appear in `counts`."""
    by_topic: dict[str, list[PartitionCount]] = {}
    for count in counts:
        by_topic.setdefault(count.topic, []).append(count)
    return [
        TopicCost(
            topic=topic,
            offsets=sum(c.offsets for c in parts),
            committed=sum(c.committed for c in parts),
            aborted=sum(c.records - c.committed for c in parts),
            markers=sum(c.offsets - c.records for c in parts),
            bytes=sum(c.bytes for c in parts),
            transactions=transactions.per_topic[topic],
            log_bytes=None if log_bytes is None else log_bytes.get(topic, 0),
        )
        for topic, parts in by_topic.items()
    ]


def total(costs: Sequence[TopicCost], transactions: int) -> TopicCost:
    """The sum over `costs`; `transactions` is the number of committed transactions (each spans topics)."""
    logs = [c.log_bytes for c in costs]
    return TopicCost(
        topic="total",
        offsets=sum(c.offsets for c in costs),
        committed=sum(c.committed for c in costs),
        aborted=sum(c.aborted for c in costs),
        markers=sum(c.markers for c in costs),
        bytes=sum(c.bytes for c in costs),
        transactions=transactions,
        log_bytes=None if any(b is None for b in logs) else sum(b for b in logs if b is not None),
    )


COST_HEADER = (
    "topic",
    "committed records",
    "per input",
    "offsets used",
    "per input",
    "markers",
    "aborted",
    "bytes",
    "bytes per input",
    "log bytes per input",
    "transactions",
    "per input",
)


def cost_rows(costs: Sequence[TopicCost], inputs: int) -> list[list[str]]:
    """Table rows, per topic then the total; "per input" divides by the input records the run produced."""
    if inputs <= 0:
        raise ValueError("a cost per input event needs at least one input record")
    rows = []
    for c in costs:
        rows.append(
            [
                c.topic if c.topic == "total" else f"`{c.topic}`",
                f"{c.committed:,}",
                f"{c.committed / inputs:.2f}",
                f"{c.offsets:,}",
                f"{c.offsets / inputs:.2f}",
                f"{c.markers:,}",
                f"{c.aborted:,}",
                f"{c.bytes:,}",
                f"{c.bytes / inputs:,.0f}",
                "-" if c.log_bytes is None else f"{c.log_bytes / inputs:,.0f}",
                f"{c.transactions:,}",
                f"{c.transactions / inputs:.3f}",
            ]
        )
    return rows


def cost_table(costs: Sequence[TopicCost], committed_transactions: int, inputs: int) -> str:
    return table(COST_HEADER, cost_rows([*costs, total(costs, committed_transactions)], inputs))


def comparison_table(runs: Mapping[str, tuple[Sequence[TopicCost], int, int]]) -> str:
    """Per topic and in total, per input event, one column per run: {label: (costs, transactions, inputs)}.

    The runs list the same topics in the same order."""
    labels = list(runs)
    figures = ("committed records", "offsets used", "markers", "bytes", "log bytes")
    header = ["topic"] + [f"{figure} ({label})" for figure in figures for label in labels]
    whole = {label: [*costs, total(costs, tx)] for label, (costs, tx, _) in runs.items()}
    rows = []
    for i, first in enumerate(whole[labels[0]]):
        row = [first.topic if first.topic == "total" else f"`{first.topic}`"]
        for figure in figures:
            for label in labels:
                c, inputs = whole[label][i], runs[label][2]
                value = {
                    "committed records": c.committed,
                    "offsets used": c.offsets,
                    "markers": c.markers,
                    "bytes": c.bytes,
                    "log bytes": c.log_bytes,
                }[figure]
                if value is None:
                    row.append("-")
                elif figure in ("bytes", "log bytes"):
                    row.append(f"{value / inputs:,.0f}")
                else:
                    row.append(f"{value / inputs:.2f}")
        rows.append(row)
    return table(header, rows)


def totals_table(runs: Mapping[str, tuple[Sequence[TopicCost], int, int]]) -> str:
    """One row per run: the sum over its topics per input event, {label: (costs, transactions, inputs)}."""
    header = ["", "committed records", "offsets used", "markers", "bytes", "log bytes", "transactions"]
    rows = []
    for label, (costs, transactions, inputs) in runs.items():
        t = total(costs, transactions)
        rows.append(
            [
                label,
                f"{t.committed / inputs:.2f}",
                f"{t.offsets / inputs:.2f}",
                f"{t.markers / inputs:.2f}",
                f"{t.bytes / inputs:,.0f}",
                "-" if t.log_bytes is None else f"{t.log_bytes / inputs:,.0f}",
                f"{transactions / inputs:.3f}",
            ]
        )
    return table(header, rows)
