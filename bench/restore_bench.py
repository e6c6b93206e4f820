"""Restore speed and local state size: a task's dedupe changelog of N keys restored into an empty store.

    python -m bench.restore_bench [--keys 1000000] [--rounds 3]

Writes N dedupe records (random event ids, as Pinwheel's are: UUID4 text; the value the processors store,
an 8-byte epoch µs) in transactions to one partition of a compacted changelog topic, then restores that
changelog into an empty local store with the processors' own restore (`processors.runtime.restore`,
read_committed), `--rounds` times. Reports the changelog records restored per second (median), and the
local store's size on disk once RocksDB has flushed it (the files of the state directory after close),
per million keys, with the restoring process's peak RSS growth.

Runs against KAFKA_BOOTSTRAP_SERVERS if set, else starts its own local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector.local_kafka import LocalKafka, free_port
from connector.run import stop_on_sigterm
from connector.settings import KafkaSettings, LocalKafkaSettings
from processors.logic.codec import INT_SERDE
from processors.runtime.restore import restore
from processors.runtime.state import TaskState


def _say(message: str) -> None:
    print(f"[restore] {message}", flush=True)


def event_ids(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode() for _ in range(count)]


async def fill_changelog(kafka: KafkaSettings, topic: str, keys: list[bytes]) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        transactional_id=f"bench-restore-{uuid.uuid4().hex[:8]}",
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    value = INT_SERDE.to_bytes(1_767_225_600_000_000)
    try:
        for start in range(0, len(keys), 100_000):
            await producer.begin_transaction()
            for key in keys[start : start + 100_000]:
                await producer.send(topic, value, key=key, partition=0)
            await producer.commit_transaction()
            _say(f"  {min(start + 100_000, len(keys)):,}/{len(keys):,} changelog records written")
    finally:
        await producer.stop()


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    topic = f"bench-restore-{uuid.uuid4().hex[:6]}-dedupe-changelog"
    _say(f"writing {args.keys:,} dedupe keys to {topic}")
    await fill_changelog(kafka, topic, event_ids(args.keys))
    rates, sizes, rss = [], [], []
    for round_ in range(1, args.rounds + 1):
        path = work / f"state-{round_}"
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        state = TaskState(path, "bench-restore", 0, {"dedupe": topic})
        started = time.monotonic()
        stats = await restore(state, kafka, 3600)
        seconds = time.monotonic() - started
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before)
        state.close()
        if stats.records != args.keys:
            raise RuntimeError(f"restored {stats.records:,} records, expected {args.keys:,}")
        rates.append(stats.records / seconds)
        sizes.append(disk_mib(path) * 1_000_000 / args.keys)
        _say(f"round {round_}: {stats.records:,} records in {seconds:.2f} s = {rates[-1]:,.0f}/s; {sizes[-1]:.1f} MiB")
        shutil.rmtree(path, ignore_errors=True)
    print()
    print("| changelog records | restore, records per second (median; rounds) | local state per million dedupe keys |")
    print("| --- | --- | --- |")
    print(
        f"| {args.keys:,} | **{statistics.median(rates):,.0f}** ({', '.join(f'{r:,.0f}' for r in rates)}) | "
        f"**{statistics.median(sizes):.1f} MiB** on disk (peak RSS +{max(rss):.0f} MiB while restoring) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    stop_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="pinwheel-restore-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        if not bootstrap:
            broker = LocalKafka(LocalKafkaSettings(port=free_port(), data_dir=work / "kafka"))
            bootstrap = broker.start()
        asyncio.run(run(args, bootstrap, work))
    except KeyboardInterrupt:
        _say("interrupted: stopping what this bench started")
        sys.exit(130)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
