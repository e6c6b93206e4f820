"""Processor throughput next to a passthrough baseline, restore speed, and dedupe state size.

    python -m bench.processor_bench [--events 30000] [--partitions 6]

Runs against KAFKA_BOOTSTRAP_SERVERS if set, else starts its own local broker. Both runs use the same
runtime settings (one transactional producer per partition, the same commit interval): the pipeline
decodes, dedupes, joins, enriches and encodes; the passthrough copies each record to one output topic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from connector.local_kafka import LocalKafka, free_port
from connector.settings import KafkaSettings, LocalKafkaSettings
from connector.topics import STORE_NAMES, TopicSettings, TopicSpec, all_topics, changelog_topic, ensure_topics
from processors.logic.codec import INT_SERDE
from processors.pipeline import PipelineCounters
from processors.runtime.engine import Engine
from processors.runtime.restore import restore
from processors.runtime.settings import ProcessorSettings
from processors.runtime.state import TaskState
from processors.runtime.task import OutRecord, TaskContext
from processors.service import build_engine
from schemas import catalog
from schemas.codec import build_codec
from schemas.envelope import build_family_record
from schemas.settings import SchemaSettings

CAPTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "pinwheel-sandbox-capture.jsonl"


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def webhook_bodies(count: int, seed: int = 1) -> Iterator[bytes]:
    """Pinwheel-shaped bodies: per account an account.added, then the capture's job events re-keyed,
    with some jobs going through pending first (so the join has work)."""
    rng = random.Random(seed)
    templates = [json.loads(json.loads(line)["body"]) for line in CAPTURE.read_text().splitlines()[1:]]
    produced = 0
    while produced < count:
        account = str(uuid.UUID(int=rng.getrandbits(128)))
        now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=produced)
        added = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event": "account.added",
            "payload": {
                "account_id": account,
                "link_token_id": str(uuid.uuid4()),
                "platform_id": str(uuid.uuid4()),
                "platform_name": "Workday",
                "created_at": now.isoformat(),
                "connected": True,
                "monitoring_status": "active",
            },
        }
        yield json.dumps(added).encode()
        produced += 1
        for template in templates:
            if produced >= count:
                return
            body = json.loads(json.dumps(template))
            body["event_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
            body["payload"]["account_id"] = account
            if rng.random() < 0.2:
                pending = json.loads(json.dumps(body))
                pending["event_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
                pending["payload"]["outcome"] = "pending"
                yield json.dumps(pending).encode()
                produced += 1
            yield json.dumps(body).encode()
            produced += 1


async def produce_inputs(bootstrap: str, count: int) -> float:
    codec = build_codec(SchemaSettings())
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    started = time.monotonic()
    try:
        now = datetime.now(UTC)
        for body in webhook_bodies(count):
            record = build_family_record(
                body, webhook_id="bench", pinwheel_version="2023-11-22", sent_at=now, received_at=now
            )
            await producer.send(record.topic, codec.encode(record.topic, record.value), key=record.key,
                                headers=record.kafka_headers(codec.content_format))  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started


class Passthrough:
    """The baseline: each input record copied to one output topic, in the same transactions."""

    def __init__(self, ctx: TaskContext, output: str) -> None:
        self.ctx = ctx
        self.output = output

    def process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.ctx.emit(OutRecord(self.output, record.key, record.value, record.headers))

    def punctuate(self, wall_clock_ms: int) -> None:
        pass

    def end_of_batch(self) -> None:
        pass


async def timed_run(engine: Engine, total: int) -> tuple[float, float]:
    """Seconds from the first processed record until `total` are committed; and CPU seconds used."""
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    while engine.stats.processed == 0:  # noqa: ASYNC110  # polling the engine's counters is the point
        await asyncio.sleep(0.01)
    started, cpu = time.monotonic(), time.process_time()
    while engine.stats.committed < total:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    elapsed, cpu_used = time.monotonic() - started, time.process_time() - cpu
    stop.set()
    await task
    return elapsed, cpu_used


async def restore_speed(settings: ProcessorSettings, kafka: KafkaSettings, partitions: int) -> tuple[int, float]:
    changelogs = {store: changelog_topic(settings.application_id, store) for store in STORE_NAMES}
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    records, seconds = 0, 0.0
    for p in range(partitions):
        state = TaskState(settings.state_dir / "restore" / str(p), settings.application_id, p, changelogs)
        stats = await restore(state, kafka, 3600)
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


async def run(bootstrap: str, work: Path, events: int, partitions: int) -> dict[str, Any]:
    if True:  # keeps the diff small
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        app = f"bench-{uuid.uuid4().hex[:8]}"
        out = f"bench-passthrough-{uuid.uuid4().hex[:8]}"
        specs = all_topics(TopicSettings(processor_application_id=app, partitions=partitions))
        await ensure_topics(kafka, [*specs, TopicSpec(out, partitions)])
        _say(f"producing {events} events")
        produce_s = await produce_inputs(bootstrap, events)
        base: dict[str, Any] = {"commit_interval_ms": 100, "health_port": 0, "max_poll_records": 5000}

        settings = ProcessorSettings(application_id=app, state_dir=work / "state", **base)
        engine = build_engine(settings, kafka, SchemaSettings(), PipelineCounters())
        _say("pipeline run")
        pipeline_s, pipeline_cpu = await timed_run(engine, events)

        passthrough = Engine(
            ProcessorSettings(application_id=app + "-passthrough", state_dir=work / "pt", **base),
            kafka,
            list(catalog.FAMILY_TOPICS.values()),
            {},
            lambda ctx: Passthrough(ctx, out),
        )
        _say("passthrough run")
        passthrough_s, passthrough_cpu = await timed_run(passthrough, events)

        _say("restore from changelogs")
        restored, restore_s = await restore_speed(settings, kafka, partitions)
        _say("dedupe state size")
        rss_mib, disk_mib = dedupe_state_size(1_000_000, work / "dedupe")
        return {
            "events": events,
            "partitions": partitions,
            "produce_s": produce_s,
            "pipeline_events_per_s": events / pipeline_s,
            "pipeline_cpu_s": pipeline_cpu,
            "passthrough_events_per_s": events / passthrough_s,
            "passthrough_cpu_s": passthrough_cpu,
            "ratio": passthrough_s / pipeline_s,
            "restored_records": restored,
            "restore_keys_per_s": restored / restore_s if restore_s else 0.0,
            "dedupe_1m_rss_mib": rss_mib,
            "dedupe_1m_disk_mib": disk_mib,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pinwheel-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = LocalKafka(LocalKafkaSettings(port=free_port(), data_dir=work / "kafka"))
        bootstrap = broker.start()
    try:
        result = asyncio.run(run(bootstrap, work, args.events, args.partitions))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print(
        f"\npipeline {result['pipeline_events_per_s']:,.0f} ev/s ({result['pipeline_cpu_s']:.1f} CPU s) | "
        f"passthrough {result['passthrough_events_per_s']:,.0f} ev/s ({result['passthrough_cpu_s']:.1f} CPU s) | "
        f"ratio {result['ratio']:.2f} | restore {result['restore_keys_per_s']:,.0f} keys/s | "
        f"1M dedupe keys: +{result['dedupe_1m_rss_mib']:.0f} MiB RSS, {result['dedupe_1m_disk_mib']:.0f} MiB disk"
    )


if __name__ == "__main__":
    main()
