"""Processor throughput at 1 and 2 instances next to a passthrough baseline; restore speed; dedupe state size.

    python -m bench.processor_bench [--events 30000] [--partitions 6] [--instances 1,2] [--in-process]

The input is the simulator's traffic (duplicates, pending jobs and their finals, paystub batches, ...) as the
gateway publishes it: N family records, written in one Kafka transaction that stays open while the instances
start, so their read_committed consumers see none of it. Once the consumer group has settled (every partition
assigned, every task restored), the transaction commits and the clock starts; it stops when the group's
committed offsets, read from outside with the admin client every 20 ms, cover all N records. Measured for the
real processor (`pinwheel-connector processor`) and a passthrough on the same runtime (bench/passthrough.py),
each as 1 and 2 OS processes in one group. CPU is the instances' own (all threads).

`--in-process` runs the pipeline as one engine inside this process instead (one instance, no passthrough,
with the service's garbage-collector settings: common/gc_tuning.py), so
`python -m cProfile -m bench.processor_bench --in-process` profiles it.

Runs against KAFKA_BOOTSTRAP_SERVERS if set, else starts its own local broker. Prints markdown tables and
draws docs/img/processors-throughput.png and docs/img/processors-cpu.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import plot
from bench.broker import run_with_broker
from bench.instances import Instances, Kind, provision, start_instances, wait_settled
from bench.report import table
from common import gc_tuning
from common.settings import KafkaSettings
from common.topics import TopicSpec
from processors.logic.codec import INT_SERDE
from processors.logic.config import LogicConfig
from processors.pipeline import PipelineCounters, pipeline_task_state, state_topic_translation, timers_derivation
from processors.readiness import ReadinessSettings
from processors.runtime.kafka_clients import AiokafkaClients
from processors.runtime.restore import restore
from processors.runtime.state import TaskState
from processors.service import build_engine
from processors.settings import ProcessorSettings
from schemas.codec import build_codec
from schemas.envelope import build_family_record
from schemas.settings import SchemaSettings
from simulator.traffic import (
    DEFAULT_VERSION,
    DEFAULT_WEBHOOK_ID,
    PlannedDelivery,
    TrafficConfig,
    build_traffic,
    planned_deliveries,
)

POLL_S = 0.02


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


@dataclass(frozen=True, slots=True)
class InputRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


async def encode_inputs(events: int, seed: int = 1) -> list[InputRecord]:
    """The first `events` deliveries of simulated traffic, encoded as the gateway publishes them."""
    # About 16 deliveries per account: N/10 accounts leave a margin; their starts are spread as if sent at 1,000/s.
    config = TrafficConfig(accounts=max(1, events // 10), seed=seed, spread_s=events / 1000, include_capture=False)
    base = datetime.now(UTC)
    planned = planned_deliveries(build_traffic(config, base))[:events]
    if len(planned) < events:
        raise RuntimeError(f"the traffic has {len(planned)} deliveries, fewer than {events}")
    return await encode_deliveries(planned, base)


async def encode_deliveries(planned: Sequence[PlannedDelivery], base: datetime) -> list[InputRecord]:
    """Each delivery as the gateway publishes it, received `due_s` seconds after `base`."""
    codec = build_codec(SchemaSettings())
    await codec.prepare()  # with SCHEMA_REGISTRY_URL set: our schemas registered first
    out = []
    for delivery in planned:
        at = base + timedelta(seconds=delivery.due_s)
        record = build_family_record(
            delivery.event.body,
            webhook_id=DEFAULT_WEBHOOK_ID,
            pinwheel_version=DEFAULT_VERSION,
            sent_at=at,
            received_at=at,
        )
        value = codec.encode(record.topic, record.value)
        out.append(InputRecord(record.topic, record.key, value, record.kafka_headers(codec.content_format)))
    return out


@dataclass
class HeldInput:
    """Input records written in a transaction that is still open: invisible to read_committed consumers."""

    producer: AIOKafkaProducer
    first: dict[TopicPartition, int] = field(default_factory=dict)
    targets: dict[TopicPartition, int] = field(default_factory=dict)  # last offset + 1: what "covered" means
    released: bool = False

    @property
    def count(self) -> int:
        return sum(self.targets[tp] - self.first[tp] for tp in self.targets)

    def covered(self, committed: dict[TopicPartition, int]) -> int:
        return sum(max(0, min(committed.get(tp, 0), end) - self.first[tp]) for tp, end in self.targets.items())

    async def release(self) -> None:
        await self.producer.commit_transaction()
        self.released = True

    async def close(self) -> None:
        # An open transaction would hold back every read_committed reader of these topics until it times out.
        try:
            if not self.released:
                await self.producer.abort_transaction()
        finally:
            await self.producer.stop()


async def hold_inputs(kafka: KafkaSettings, inputs: Sequence[InputRecord]) -> HeldInput:
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        transactional_id=f"bench-input-{uuid.uuid4().hex[:8]}",
        transaction_timeout_ms=300_000,  # the instances' start and the group's settling happen meanwhile
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    held = HeldInput(producer)
    try:
        await producer.begin_transaction()
        futures = [await producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in inputs]
        await producer.flush()
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters, not a failed abort
            await held.close()
        raise
    # Per partition, first..last offset is this input alone as long as nothing else writes the family topics
    # meanwhile (true of the private broker; with KAFKA_BOOTSTRAP_SERVERS, use an otherwise idle cluster).
    for future in futures:
        meta = future.result()
        tp = TopicPartition(meta.topic, meta.partition)
        held.first[tp] = min(held.first.get(tp, meta.offset), meta.offset)
        held.targets[tp] = max(held.targets.get(tp, 0), meta.offset + 1)
    return held


@dataclass(frozen=True, slots=True)
class Measurement:
    kind: str
    app_id: str
    instances: int
    events: int
    seconds: float
    cpu_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s else 0.0


async def committed_offsets(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items() if meta}


async def measure(
    kafka: KafkaSettings,
    group: str,
    held: HeldInput,
    cpu_seconds: Callable[[], float],
    check: Callable[[], None],
    label: str,
) -> tuple[float, float]:
    """Release the input; seconds until the group's committed offsets cover it, and the CPU seconds used."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        cpu = cpu_seconds()
        started = time.monotonic()
        await held.release()
        next_report = started + 2.0
        while (covered := held.covered(await committed_offsets(admin, group))) < held.count:
            check()
            now = time.monotonic()
            if now >= next_report:
                _say(f"  {label}: {covered:,}/{held.count:,} committed, {covered / (now - started):,.0f} ev/s")
                next_report = now + 2.0
            await asyncio.sleep(POLL_S)
        return time.monotonic() - started, cpu_seconds() - cpu
    finally:
        await admin.close()


async def run_instances(
    kafka: KafkaSettings, work: Path, kind: Kind, count: int, inputs: Sequence[InputRecord], partitions: int
) -> Measurement:
    app = f"bench-{kind}-{count}-{uuid.uuid4().hex[:6]}"
    output = f"{app}-out"
    await provision(kafka, app, partitions, [TopicSpec(output, partitions)] if kind == "passthrough" else [])
    held = await hold_inputs(kafka, inputs)
    instances: Instances | None = None
    try:
        instances = start_instances(kind, count, kafka=kafka, app_id=app, work=work, output=output)
        await wait_settled(instances, partitions)
        _say(f"{kind} x{count}: group settled, releasing {held.count:,} records")
        seconds, cpu = await measure(kafka, app, held, instances.cpu_seconds, instances.check_alive, f"{kind} x{count}")
    finally:
        if instances is not None:
            instances.stop()
        await held.close()
    result = Measurement(kind, app, count, held.count, seconds, cpu)
    _say(f"{kind} x{count}: {result.events_per_s:,.0f} ev/s, {cpu:.1f} CPU s")
    return result


async def run_in_process(
    kafka: KafkaSettings, settings: ProcessorSettings, inputs: Sequence[InputRecord], partitions: int
) -> Measurement:
    await provision(kafka, settings.application_id, partitions)
    held = await hold_inputs(kafka, inputs)
    gc_tuning.tune_for_throughput()  # as the processor service runs (processors.service.run_until_signal)
    engine = build_engine(settings, kafka, SchemaSettings(), PipelineCounters(), readiness=ReadinessSettings().parsed())
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))

    def check() -> None:
        if task.done():
            task.result()

    try:
        while len(engine.stats.ready) < partitions:  # polling: the engine has no readiness event
            check()
            await asyncio.sleep(0.05)
        seconds, cpu = await measure(kafka, settings.application_id, held, time.process_time, check, "in-process")
    finally:
        stop.set()
        await task
        await held.close()
    return Measurement("pipeline (in-process)", settings.application_id, 1, held.count, seconds, cpu)


async def restore_speed(app_id: str, state_dir: Path, kafka: KafkaSettings, partitions: int) -> tuple[int, float]:
    derive = timers_derivation(LogicConfig())
    translate = state_topic_translation(build_codec())
    records, seconds = 0, 0.0
    for p in range(partitions):
        state = pipeline_task_state(state_dir / str(p), app_id, p)
        stats = await restore(state, AiokafkaClients(kafka), 3600, derive, translate)
        state.close()
        records += stats.records
        seconds += stats.seconds
    return records, seconds


def dedupe_state_size(keys: int, path: Path) -> tuple[float, float]:
    """RSS growth (MiB) and on-disk size (MiB) of `keys` dedupe entries in a task's RocksDB store."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    state = TaskState(path, "bench", 0, {"dedupe": "unused"})
    value = INT_SERDE.to_bytes(1_767_225_600_000_000)
    for start in range(0, keys, 50_000):
        for i in range(start, min(start + 50_000, keys)):
            state.put("dedupe", str(uuid.UUID(int=i)).encode(), value)
        state.committed({"dedupe": start})
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    state.close()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return rss_after - rss_before, disk


async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    _say(f"encoding {args.events:,} simulated deliveries as family records")
    inputs = await encode_inputs(args.events)
    measurements: list[Measurement] = []
    if args.in_process:
        settings = ProcessorSettings(
            application_id=f"bench-inproc-{uuid.uuid4().hex[:6]}", state_dir=work / "state", health_port=0
        )
        measurements.append(await run_in_process(kafka, settings, inputs, args.partitions))
    else:
        for kind in ("passthrough", "pipeline"):
            for count in args.instances:
                measurements.append(await run_instances(kafka, work, kind, count, inputs, args.partitions))
    restore_app = next(m.app_id for m in measurements if m.kind != "passthrough")
    _say("restore from the pipeline's changelogs into empty stores")
    restored, restore_s = await restore_speed(restore_app, work / "restore", kafka, args.partitions)
    _say("1,000,000 dedupe keys into one task's store")
    rss_mib, disk_mib = dedupe_state_size(1_000_000, work / "dedupe")
    return {
        "events": args.events,
        "partitions": args.partitions,
        "runs": [
            asdict(m) | {"events_per_s": m.events_per_s, "events_per_cpu_s": m.events_per_cpu_s} for m in measurements
        ],
        "restored_records": restored,
        "restore_keys_per_s": restored / restore_s if restore_s else 0.0,
        "dedupe_1m_rss_mib": rss_mib,
        "dedupe_1m_disk_mib": disk_mib,
    }


def report(result: dict[str, Any]) -> None:
    runs = result["runs"]
    baseline = {r["instances"]: r["events_per_s"] for r in runs if r["kind"] == "passthrough"}
    rows = []
    for r in runs:
        ratio = (
            r["events_per_s"] / baseline[r["instances"]]
            if r["instances"] in baseline and r["kind"] != "passthrough"
            else None
        )
        rows.append(
            [
                r["kind"],
                str(r["instances"]),
                f"{r['events_per_s']:,.0f}",
                f"{r['cpu_s']:.1f}",
                f"{r['events_per_cpu_s']:,.0f}",
                f"{ratio:.2f}" if ratio is not None else "",
            ]
        )
    print()
    print(
        table(
            [
                "",
                "instances",
                "events/s",
                f"CPU s for {result['events']:,}",
                "events per CPU s",
                "ratio to passthrough",
            ],
            rows,
        )
    )
    print()
    print(
        f"restore: {result['restored_records']:,} records at {result['restore_keys_per_s']:,.0f} keys/s; "
        f"1M dedupe keys: +{result['dedupe_1m_rss_mib']:.0f} MiB RSS, {result['dedupe_1m_disk_mib']:.1f} MiB on disk"
    )
    if len(runs) > 1:
        labels = {f"{r['kind']} x{r['instances']}": r for r in runs}
        throughput = plot.bars(
            plot.IMAGES / "processors-throughput.png",
            f"Processors: events/s, {result['events']:,} events, exactly-once",
            "events/s",
            {name: r["events_per_s"] for name, r in labels.items()},
        )
        per_cpu = plot.bars(
            plot.IMAGES / "processors-cpu.png",
            "Processors: events per CPU second (per core)",
            "events / CPU s",
            {name: r["events_per_cpu_s"] for name, r in labels.items()},
        )
        print(f"charts: {throughput}, {per_cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--instances", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--in-process", action="store_true", help="one in-process pipeline engine (for profiling)")
    args = parser.parse_args()
    result = run_with_broker("pinwheel-bench-", _say, lambda bootstrap, work: run(args, bootstrap, work))
    print(json.dumps(result, indent=2))
    report(result)


if __name__ == "__main__":
    main()
