"""Helpers of the operator-command tests: a processor application on the session broker (the real processors
in-process, the `pinwheel-connector` CLI as a subprocess), and readers that share no code with the commands
under test (plain aiokafka consumers and the admin client)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from common.settings import KafkaSettings
from processors.service import serve
from processors.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "pinwheel-connector"


@dataclass
class App:
    """One processor application (its own group, changelogs and state dir) on the session broker."""

    bootstrap: str
    app_id: str
    state_dir: Path

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    def settings(self, **overrides: Any) -> ProcessorSettings:
        values: dict[str, Any] = {
            "application_id": self.app_id,
            "state_dir": self.state_dir,
            "health_port": 0,
            "punctuate_interval_ms": 200,
            "session_timeout_ms": 6000,
        }
        return ProcessorSettings(**(values | overrides))

    @contextlib.asynccontextmanager
    async def running(self, **overrides: Any) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(self.settings(**overrides), self.kafka, stop=stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PROCESSOR_", "GATEWAY_"))}
        return (
            env
            | {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "PROCESSOR_APPLICATION_ID": self.app_id,
                "PROCESSOR_STATE_DIR": str(self.state_dir),
            }
            | extra
        )

    async def cli(self, *args: str, expect: int = 0, **env: str) -> str:
        """Run `pinwheel-connector ARGS` (a real process); its stdout, after checking the exit code."""
        proc = await asyncio.create_subprocess_exec(
            str(CLI), *args, env=self.env(**env), cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == expect, f"exit {proc.returncode}: {err.decode()[-3000:]}"
        return out.decode() + err.decode() if expect else out.decode()


async def read_topic(bootstrap: str, topic: str, keep: Any) -> list[Any]:
    """Every committed record of `topic` for which keep(record) holds (plain consumer, up to the end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, topic
        consumer.assign(tps)
        for tp in tps:  # the initial positions first: a seek racing with their resolution can be lost
            await consumer.position(tp)
        end = await consumer.end_offsets(tps)
        for tp, offset in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, offset)
        found = []
        for tp in tps:
            while await consumer.position(tp) < end[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    if record.offset < end[tp] and keep(record):
                        found.append(record)
        return found
    finally:
        await consumer.stop()


async def caught_up(bootstrap: str, group: str, topics: list[str], timeout_s: float = 60) -> None:
    """Wait until the group's committed offsets reach the end of `topics`: the processors have taken all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        assert tps, topics
        end = await consumer.end_offsets(tps)
        beginning = await consumer.beginning_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while True:
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
            # -1: nothing committed, which is caught up only for an empty partition
            committed = {tp: beginning[tp] if offsets[tp].offset < 0 else offsets[tp].offset for tp in tps}
            behind = {tp: end[tp] - committed[tp] for tp in tps if committed[tp] < end[tp]}
            if not behind:
                return
            assert time.monotonic() < deadline, f"processors not caught up: {behind}"
            await asyncio.sleep(0.3)
    finally:
        await consumer.stop()
        await admin.close()


def header(record: Any, name: str) -> bytes | None:
    return next((bytes(v) for k, v in record.headers or () if k == name), None)
