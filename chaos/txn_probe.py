"""`python -m chaos.txn_probe`: does Kafka keep a transaction it acknowledged when the broker is SIGKILLed?

No code of ours in the loop: a bare aiokafka transactional producer commits one record to each of 3 partitions,
back to back, until the single-node broker (LocalKafka) is SIGKILLed at a random moment. The broker restarts on
the same data, a second producer with the same transactional id is initialised (it completes or aborts what the
first one left, as a task's next owner does), and a `read_committed` reader must find every transaction whose
`commit_transaction()` returned, on every partition. Repeat.

A round that loses one keeps the broker's data (`--runs-dir`) and prints the evidence read straight from the log
files: the transaction coordinator's last states for the transactional id, and each partition's last batches
(data and COMMIT/ABORT markers). The broker logs its transaction coordinator at INFO. On Kafka 4.3.1 with aiokafka
0.14, 2026-12-08: 3 rounds of 169 lost one. The coordinator had logged PrepareCommit and, after the restart,
CompleteCommit, but no partition had the COMMIT marker (the records stayed in an open transaction); the restarted
broker had logged "Couldn't find leader endpoint for partitions ... these partitions are likely deleted already and
hence can be skipped" while its partitions had no leader (docs/reliability.md, "Failures seen").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.kafka_stop import stop_producer
from common.ports import free_port
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaSettings

PARTITIONS = 3
TOPIC = "out"
TRANSACTIONAL_ID = "txn-probe"
#: The transaction coordinator's states, as its log writes them (TransactionState ids).
TXN_STATES = {
    0: "Empty",
    1: "Ongoing",
    2: "PrepareCommit",
    3: "PrepareAbort",
    4: "CompleteCommit",
    5: "CompleteAbort",
    6: "Dead",
    7: "PrepareEpochFence",
}


# -- the log files, read without Kafka's tools (record batch format v2) --------------------------------------


@dataclass(frozen=True)
class Batch:
    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    transactional: bool
    control: bool
    timestamp_ms: int
    #: (offset, key, value) of each record
    records: tuple[tuple[int, bytes | None, bytes | None], ...]

    def describe(self) -> str:
        who = f"pid {self.producer_id} epoch {self.producer_epoch}"
        if self.control:
            kind = "COMMIT" if self.records and struct.unpack(">hh", self.records[0][1] or b"\0\0\0\0")[1] else "ABORT"
            return f"{self.base_offset}: {kind} marker ({who})"
        values = b", ".join(value or b"-" for _, _, value in self.records[:3])
        txn = "transactional" if self.transactional else "plain"
        return f"{self.base_offset}-{self.last_offset}: {txn} data [{values.decode(errors='replace')}] ({who})"


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), i


def read_batches(data: bytes) -> Iterator[Batch]:
    """The record batches of a log segment's bytes (a torn one at the end is left out)."""
    i = 0
    while i + 12 <= len(data):
        base, length = struct.unpack(">qi", data[i : i + 12])
        if length <= 0 or i + 12 + length > len(data):
            return
        body = data[i + 12 : i + 12 + length]
        _, _, _, attributes, last_delta, timestamp, _, pid, epoch, _, count = struct.unpack(">ibIhiqqqhii", body[:49])
        records = []
        j = 49
        for _ in range(count):
            size, j = _varint(body, j)
            end = j + size
            j += 1  # attributes
            _, j = _varint(body, j)  # timestamp delta
            delta, j = _varint(body, j)
            key_size, j = _varint(body, j)
            key = body[j : j + key_size] if key_size >= 0 else None
            j += max(key_size, 0)
            value_size, j = _varint(body, j)
            value = body[j : j + value_size] if value_size >= 0 else None
            records.append((base + delta, key, value))
            j = end
        yield Batch(base, base + last_delta, pid, epoch, bool(attributes & 16), bool(attributes & 32), timestamp,
                    tuple(records))  # fmt: skip
        i += 12 + length


def partition_batches(log_dir: Path, topic: str, partition: int) -> list[Batch]:
    return [
        batch
        for segment in sorted((log_dir / f"{topic}-{partition}").glob("*.log"))
        for batch in read_batches(segment.read_bytes())
    ]


def transaction_states(log_dir: Path, transactional_id: str) -> list[str]:
    """What the coordinator logged for `transactional_id`, oldest first: "state (pid, epoch) at ms"."""
    states = []
    for directory in sorted(log_dir.glob("__transaction_state-*")):
        for segment in sorted(directory.glob("*.log")):
            for batch in read_batches(segment.read_bytes()):
                for _, key, value in batch.records:
                    if key is None or transactional_id.encode() not in key or value is None:
                        continue
                    pid, epoch, _, state = struct.unpack(">qhib", value[2:17])
                    states.append(f"{TXN_STATES.get(state, state)} (pid {pid}, epoch {epoch}) at {batch.timestamp_ms}")
    return states


# -- one round ----------------------------------------------------------------------------------------------


@dataclass
class Round:
    acknowledged: list[int]
    begun: int
    seen: dict[int, list[int]]

    @property
    def missing(self) -> dict[int, list[int]]:
        return {p: sorted(set(self.acknowledged) - set(values)) for p, values in self.seen.items()}

    @property
    def lost(self) -> bool:
        return any(self.missing.values())


async def _transact_until_killed(broker: LocalKafka, kill_after_s: float) -> tuple[list[int], int]:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, transactional_id=TRANSACTIONAL_ID, acks="all", request_timeout_ms=10_000
    )
    await producer.start()
    acknowledged: list[int] = []
    begun = 0

    async def commit_forever() -> None:
        nonlocal begun
        while True:
            begun += 1
            await producer.begin_transaction()
            sent = [await producer.send(TOPIC, str(begun).encode(), partition=p) for p in range(PARTITIONS)]
            await asyncio.gather(*sent)
            await producer.commit_transaction()
            acknowledged.append(begun)

    loop = asyncio.create_task(commit_forever())
    await asyncio.sleep(kill_after_s)
    await asyncio.to_thread(broker.kill)
    await asyncio.sleep(1)
    loop.cancel()
    with contextlib.suppress(BaseException):
        await loop
    await stop_producer(producer, 1)
    return acknowledged, begun


async def _read_committed(bootstrap: str) -> dict[int, list[int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        remaining = set(tps)
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                seen[tp.partition] += [int(r.value or b"0") for r in records]
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
        return seen
    finally:
        await consumer.stop()


class _ProbeKafka(LocalKafka):
    """LocalKafka with the transaction coordinator's logs at INFO, formatted at a given `transaction.version`
    (None: the release's default; 4.x formats new clusters at 2)."""

    transaction_version: int | None = None

    def _java(self, main: str, *args: str, heap: str = "256m", jvm: Sequence[str] = ()) -> list[str]:
        loggers = [
            "-Dorg.slf4j.simpleLogger.log.kafka.coordinator.transaction=info",
            "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.coordinator.transaction=info",
        ]
        if main == "kafka.tools.StorageTool" and self.transaction_version is not None:
            args = (*args, "--feature", f"transaction.version={self.transaction_version}")
        return super()._java(main, *args, heap=heap, jvm=[*jvm, *loggers])


async def run_round(data_dir: Path, kill_after_s: float, transaction_version: int | None = None) -> Round:
    settings = LocalKafkaSettings(port=free_port(NODE_PORT_SPAN), data_dir=data_dir, start_timeout_s=120)
    broker = _ProbeKafka(settings, progress=lambda _: None)
    broker.transaction_version = transaction_version
    await asyncio.to_thread(broker.start)
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        finally:
            await admin.close()
        acknowledged, begun = await _transact_until_killed(broker, kill_after_s)
        await asyncio.to_thread(broker.start)
        successor = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=TRANSACTIONAL_ID)
        await successor.start()  # InitProducerId: completes or aborts what the killed producer left
        await successor.stop()
        return Round(acknowledged, begun, await _read_committed(broker.bootstrap))
    finally:
        await asyncio.to_thread(broker.stop)


def evidence(log_dir: Path, last: int = 4) -> list[str]:
    lines = [f"coordinator's log for {TRANSACTIONAL_ID!r}, last {last}:"]
    lines += [f"  {state}" for state in transaction_states(log_dir, TRANSACTIONAL_ID)[-last:]]
    for partition in range(PARTITIONS):
        lines.append(f"{TOPIC}-{partition}, last {last} batches:")
        lines += [f"  {batch.describe()}" for batch in partition_batches(log_dir, TOPIC, partition)[-last:]]
    return lines


async def main(rounds: int, runs_dir: Path, transaction_version: int | None = None) -> int:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the killed broker's connection errors
    lost = 0
    started = time.monotonic()
    for n in range(1, rounds + 1):
        data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-txn-probe-"))
        result = await run_round(data_dir, random.uniform(3.0, 6.0), transaction_version)
        verdict = "LOST " + str({p: m for p, m in result.missing.items() if m}) if result.lost else "kept all"
        print(
            f"[txn-probe] round {n}/{rounds} ({time.monotonic() - started:.0f}s): {len(result.acknowledged)} "
            f"transactions acknowledged, {verdict}",
            flush=True,
        )
        if result.lost:
            lost += 1
            kept = runs_dir / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(data_dir, kept)
            for line in evidence(kept / "logs"):
                print(f"[txn-probe]   {line}", flush=True)
            print(f"[txn-probe]   the broker's data and log: {kept}", flush=True)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"[txn-probe] {lost} of {rounds} rounds lost an acknowledged transaction", flush=True)
    return 1 if lost else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m chaos.txn_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs-dir", type=Path, default=Path("var/chaos/txn-probe"))
    parser.add_argument("--transaction-version", type=int, choices=(1, 2), help="format the cluster at this level")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rounds, args.runs_dir, args.transaction_version)))
