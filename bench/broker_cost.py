"""What the processors cost the user's Kafka cluster per input event, read from the broker alone.

    python -m bench.broker_cost [--accounts 300] [--spread 40] [--partitions 6] [--modes full,paced]

The input is the simulator's traffic at its defaults (300 accounts whose first events are spread over 40 s,
each account's deliveries over the following seconds: duplicates, pending jobs and their finals, paystub and
shift batches), encoded as the gateway publishes it and written to the family topics the way the gateway
writes (an idempotent producer, acks=all, no transaction). The same records go through one processor instance
(`pinwheel-connector processor`, default settings) twice, each time with a fresh application id (its own
changelogs and consumer group) on the same broker:
- full: the records written as fast as one producer goes (a few seconds), the instance at full speed;
- paced: each record written at its delivery's due time (a Pinwheel-like pace, about 95 deliveries per
  second at the defaults, as `pinwheel-connector simulate` sends the same traffic).
The instance is started, and ready, before the first record is written.
Once the group's committed offsets cover the input, the instance is stopped (cleanly: no open transaction)
and every topic is read back; `bench/cost.py` says how (offsets used, records, committed records, bytes,
markers, transactions from the coordinator's `__transaction_state`). Nothing comes from the processors'
own counters. Log bytes are the growth of the partitions' segment files on disk (only with the private
broker this bench starts; with KAFKA_BOOTSTRAP_SERVERS, use an otherwise idle cluster, and that column
stays empty).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.broker import run_with_broker
from bench.cost import (
    PartitionCount,
    TopicCost,
    TransactionTally,
    comparison_table,
    cost_table,
    parse_transaction_record,
    topic_costs,
    totals_table,
)
from bench.instances import provision, start_instances, wait_settled
from bench.processor_bench import InputRecord, committed_offsets, encode_deliveries
from common.settings import KafkaSettings
from processors.topics import own_changelog_topics
from schemas import catalog
from simulator.traffic import TrafficConfig, build_traffic, planned_deliveries

TRANSACTION_STATE = "__transaction_state"
CONSUMER_OFFSETS = "__consumer_offsets"
INTERNAL_TOPICS = (CONSUMER_OFFSETS, TRANSACTION_STATE)
SCAN_TIMEOUT_S = 60.0


def _say(message: str) -> None:
    print(f"[cost] {message}", flush=True)


@dataclass(frozen=True, slots=True)
class Paced:
    due_s: float
    record: InputRecord


async def encode_traffic(accounts: int, spread_s: float, seed: int = 1) -> list[Paced]:
    config = TrafficConfig(accounts=accounts, seed=seed, spread_s=spread_s, include_capture=False)
    base = datetime.now(UTC)
    planned = planned_deliveries(build_traffic(config, base))
    records = await encode_deliveries(planned, base)
    return [Paced(d.due_s, r) for d, r in zip(planned, records, strict=True)]


# -- reading the broker --------------------------------------------------------------------------------


async def end_offsets(kafka: KafkaSettings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The high watermark of every partition of `topics` (transaction markers included); a missing topic has none."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


@dataclass
class Scan:
    records: dict[TopicPartition, int]
    sizes: dict[TopicPartition, int]
    raw: list[tuple[bytes, bytes | None]]  # key and value of the records of `keep_raw`'s topic


async def scan(
    kafka: KafkaSettings,
    before: dict[TopicPartition, int],
    after: dict[TopicPartition, int],
    isolation: str,
    keep_raw: str | None = None,
) -> Scan:
    """Every record between the two end offsets, counted with `isolation` (control records are never returned)."""
    result = Scan({tp: 0 for tp in after}, {tp: 0 for tp in after}, [])
    todo = [tp for tp in after if after[tp] > before.get(tp, 0)]
    if not todo:
        return result
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(todo)
        for tp in todo:
            consumer.seek(tp, before.get(tp, 0))
        deadline = time.monotonic() + SCAN_TIMEOUT_S
        while todo:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= after[tp]:
                        continue
                    result.records[tp] += 1
                    result.sizes[tp] += (
                        max(0, r.serialized_key_size)
                        + max(0, r.serialized_value_size)
                        + sum(len(k) + len(v or b"") for k, v in r.headers)
                    )
                    if tp.topic == keep_raw:
                        result.raw.append((r.key or b"", r.value))
            todo = [tp for tp in todo if await consumer.position(tp) < after[tp]]
            if todo and time.monotonic() > deadline:
                raise RuntimeError(f"{isolation} read did not reach the end offsets of {todo} (an open transaction?)")
    finally:
        await consumer.stop()
    return result


def log_sizes(log_dir: Path | None, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int] | None:
    """Bytes of each partition's segment files (`*.log`; the index files are preallocated, so left out)."""
    if log_dir is None or not log_dir.is_dir():
        return None
    return {tp: sum(f.stat().st_size for f in (log_dir / f"{tp.topic}-{tp.partition}").glob("*.log")) for tp in tps}


@dataclass
class Snapshot:
    ends: dict[TopicPartition, int]
    logs: dict[TopicPartition, int] | None


async def snapshot(kafka: KafkaSettings, topics: Sequence[str], log_dir: Path | None) -> Snapshot:
    ends = await end_offsets(kafka, topics)
    return Snapshot(ends, log_sizes(log_dir, list(ends)))


@dataclass(frozen=True, slots=True)
class RunCost:
    mode: str
    app_id: str
    inputs: int
    seconds: float
    costs: list[TopicCost]  # the processors' output and changelog topics
    internal: list[TopicCost]  # the broker's __consumer_offsets and __transaction_state
    input_costs: list[TopicCost]  # the family topics (the gateway's writes, here the bench's)
    committed_transactions: int
    aborted_transactions: int
    coordinator_markers: int  # partitions written by committed transactions, per the coordinator's log


async def read_cost(
    kafka: KafkaSettings,
    mode: str,
    app_id: str,
    seconds: float,
    before: Snapshot,
    after: Snapshot,
    topics: dict[str, list[str]],
) -> RunCost:
    _say(f"{mode}: reading every partition back (read_uncommitted, then read_committed)")
    everything = await scan(kafka, before.ends, after.ends, "read_uncommitted", keep_raw=TRANSACTION_STATE)
    committed = await scan(kafka, before.ends, after.ends, "read_committed")
    tally = TransactionTally()
    for key, value in everything.raw:
        record = parse_transaction_record(key, value)
        if record is not None and record.transactional_id.startswith(f"{app_id}-"):
            tally.add(record)
    counts = [
        PartitionCount(
            tp.topic,
            tp.partition,
            offsets=end - before.ends.get(tp, 0),
            records=everything.records[tp],
            committed=committed.records[tp],
            bytes=committed.sizes[tp],
        )
        for tp, end in sorted(after.ends.items())
    ]
    log_bytes: dict[str, int] | None = None
    if before.logs is not None and after.logs is not None:
        log_bytes = {}
        for tp, size in after.logs.items():
            log_bytes[tp.topic] = log_bytes.get(tp.topic, 0) + size - before.logs.get(tp, 0)

    def group(names: list[str]) -> list[TopicCost]:
        by_name = {c.topic: c for c in topic_costs(counts, tally, log_bytes)}
        # A changelog's name carries the run's application id: shown as `<app>-...` so that runs compare.
        return [replace(by_name[n], topic=n.replace(app_id, "<app>", 1)) for n in names]

    inputs = sum(c.committed for c in group(topics["input"]))
    return RunCost(
        mode,
        app_id,
        inputs,
        seconds,
        group(topics["output"]),
        group(topics["internal"]),
        group(topics["input"]),
        tally.committed,
        tally.aborted,
        sum(n for t, n in tally.markers.items() if t in topics["output"]),
    )


# -- the runs ------------------------------------------------------------------------------------------


def _producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    # As the gateway's at its defaults (gateway.producer.producer_options): idempotent, acks=all, linger 0,
    # 256 KiB batches, no transaction.
    return AIOKafkaProducer(
        **kafka.client_kwargs(), acks="all", enable_idempotence=True, linger_ms=0, max_batch_size=256 * 1024
    )


async def produce(kafka: KafkaSettings, traffic: Sequence[Paced], paced: bool, label: str) -> None:
    producer = _producer(kafka)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_report = start + 10
        pending = []
        for n, p in enumerate(traffic, start=1):
            if paced and (wait := start + p.due_s - loop.time()) > 0:
                await asyncio.sleep(wait)
            r = p.record
            pending.append(await producer.send(r.topic, r.value, key=r.key, headers=r.headers))
            if loop.time() >= next_report:
                _say(f"  {label}: {n:,}/{len(traffic):,} input records written")
                next_report = loop.time() + 10
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def wait_covered(kafka: KafkaSettings, group: str, targets: dict[TopicPartition, int], label: str) -> None:
    """Until the group's committed offsets reach `targets` (the family topics' end offsets after the input)."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        deadline = time.monotonic() + 300
        next_report = time.monotonic() + 5
        while True:
            committed = await committed_offsets(admin, group)
            behind = sum(max(0, end - committed.get(tp, 0)) for tp, end in targets.items())
            if behind == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: the processors are still {behind:,} input records behind")
            if time.monotonic() >= next_report:
                _say(f"  {label}: {behind:,} input records not yet committed")
                next_report = time.monotonic() + 5
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def run_mode(
    kafka: KafkaSettings, work: Path, mode: str, traffic: Sequence[Paced], partitions: int, log_dir: Path | None
) -> RunCost:
    app = f"cost-{mode}-{uuid.uuid4().hex[:6]}"
    await provision(kafka, app, partitions)
    topics = {
        "input": list(catalog.FAMILY_TOPICS.values()),
        "output": [*catalog.OUTPUT_TOPICS, *own_changelog_topics(app).values()],
        "internal": list(INTERNAL_TOPICS),
    }
    every = [*topics["input"], *topics["output"]]
    # __transaction_state exists once a transaction has been started on the broker: before the first run it is
    # absent, and empty.
    before = await snapshot(kafka, [*every, *INTERNAL_TOPICS], log_dir)
    instances = None
    try:
        instances = start_instances("pipeline", 1, kafka=kafka, app_id=app, work=work)
        await wait_settled(instances, partitions)
        paced = mode == "paced"
        span = f"at their due times ({traffic[-1].due_s:.0f} s)" if paced else "as fast as the producer goes"
        _say(f"{mode}: instance ready; writing {len(traffic):,} input records {span}")
        started = time.monotonic()
        await produce(kafka, traffic, paced=paced, label=mode)
        inputs_end = await end_offsets(kafka, topics["input"])
        await wait_covered(kafka, app, inputs_end, mode)
        seconds = time.monotonic() - started
    finally:
        if instances is not None:
            instances.stop()  # SIGTERM: the instance ends its transactions before it exits
    after = await snapshot(kafka, [*every, *INTERNAL_TOPICS], log_dir)
    for tp in after.ends:
        before.ends.setdefault(tp, 0)
    return await read_cost(kafka, mode, app, seconds, before, after, topics)


async def run(args: argparse.Namespace, bootstrap: str, work: Path, log_dir: Path | None) -> list[RunCost]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    _say(f"encoding the simulator's traffic: {args.accounts} accounts spread over {args.spread:g} s")
    traffic = await encode_traffic(args.accounts, args.spread)
    _say(f"{len(traffic):,} deliveries, the last due at {traffic[-1].due_s:.0f} s")
    results = []
    for mode in args.modes:
        result = await run_mode(kafka, work, mode, traffic, args.partitions, log_dir)
        _say(
            f"{mode}: {result.inputs:,} inputs -> {sum(c.committed for c in result.costs):,} committed records, "
            f"{sum(c.offsets for c in result.costs):,} offsets, {result.committed_transactions:,} transactions"
        )
        results.append(result)
    return results


def report(results: Sequence[RunCost]) -> None:
    print("\nper input event, output and changelog topics (the processors' writes):\n")
    print(comparison_table({r.mode: (r.costs, r.committed_transactions, r.inputs) for r in results}))
    print("\nper input event, broker-internal topics (offsets commits and the transaction coordinator's log):\n")
    print(comparison_table({r.mode: (r.internal, r.committed_transactions, r.inputs) for r in results}))
    print("\nper input event, in total (the two tables above):\n")
    print(totals_table({r.mode: ([*r.costs, *r.internal], r.committed_transactions, r.inputs) for r in results}))
    print(
        "\ncommitted transactions per input event: "
        + ", ".join(
            f"{r.mode} {r.committed_transactions / r.inputs:.3f} ({r.committed_transactions:,})" for r in results
        )
    )
    for r in results:
        print()
        pace = "full speed" if r.mode == "full" else "Pinwheel-like pace (due times)"
        print(
            f"{r.mode}: {pace}; {r.inputs:,} input records, processed in {r.seconds:.1f} s "
            f"({r.inputs / r.seconds:,.0f}/s); "
            f"{r.committed_transactions:,} committed and {r.aborted_transactions} aborted transactions "
            f"({r.committed_transactions / r.inputs:.3f} per input)"
        )
        print()
        print(cost_table(r.costs, r.committed_transactions, r.inputs))
        markers = sum(c.markers for c in r.costs)
        print(
            f"\nmarkers: {markers:,} from offsets - records, {r.coordinator_markers:,} from the coordinator's "
            "PrepareCommit records (partitions written per committed transaction)"
        )
        print("\nbroker-internal topics (the same run):\n")
        print(cost_table(r.internal, r.committed_transactions, r.inputs))
        print("\ninput (family topics, written as the gateway writes them):\n")
        print(cost_table(r.input_costs, 0, r.inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=300, help="accounts of simulated traffic (default 300)")
    parser.add_argument("--spread", type=float, default=40.0, help="seconds over which accounts start (default 40)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--modes", type=lambda s: s.split(","), default=["full", "paced"], help="full, paced or both (default)"
    )
    args = parser.parse_args()
    if unknown := set(args.modes) - {"full", "paced"}:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")

    async def bench(bootstrap: str, work: Path) -> list[RunCost]:
        own = work / "kafka" / "logs"  # bench.broker's private broker keeps its logs there
        return await run(args, bootstrap, work, own if own.is_dir() else None)

    results = run_with_broker("pinwheel-cost-", _say, bench)
    print(json.dumps([_summary(r) for r in results], indent=2))
    report(results)


def _summary(r: RunCost) -> dict[str, Any]:
    return {
        "mode": r.mode,
        "inputs": r.inputs,
        "seconds": round(r.seconds, 1),
        "committed_transactions": r.committed_transactions,
        "aborted_transactions": r.aborted_transactions,
        "topics": [asdict(c) for c in [*r.costs, *r.internal, *r.input_costs]],
    }


if __name__ == "__main__":
    main()
