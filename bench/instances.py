"""Processor instances as OS processes for the benchmarks: one consumer group, observed from outside.

Each instance is `pinwheel-connector processor` (or the passthrough baseline, `python -m bench.passthrough`)
with its own health port, state directory and static membership id. `wait_settled` returns once the group
has spread every partition over the instances and each has restored and started its tasks, so a measurement
does not include the join and rebalance of an instance that started a second later than the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from common.offsets import start_at_end
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, TopicSpec, ensure_topics
from connector.run import Service, start_service
from processors.topics import all_topics
from schemas import catalog

Kind = Literal["pipeline", "passthrough"]


@dataclass
class Instances:
    services: list[Service]
    health_ports: list[int]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the instances so far, every thread included (RocksDB's too)."""
        return sum(process_cpu_seconds(s.process.pid) for s in self.services)

    def check_alive(self) -> None:
        for service in self.services:
            if not service.alive():
                raise RuntimeError(
                    f"{service.name} exited with {service.process.returncode}; last log lines:\n{service.log_tail()}"
                )

    def stop(self) -> None:
        for service in self.services:
            service.stop()


def process_cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted after the parenthesised command name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processor_env(
    base: Mapping[str, str], *, app_id: str, instance: str, state_dir: Path, health_port: int
) -> dict[str, str]:
    return {
        **base,
        "PROCESSOR_APPLICATION_ID": app_id,
        "PROCESSOR_INSTANCE_ID": instance,
        "PROCESSOR_STATE_DIR": str(state_dir),
        "PROCESSOR_HEALTH_PORT": str(health_port),
        "PROCESSOR_LOG_LEVEL": "WARNING",
    }


def start_instances(
    kind: Kind, count: int, *, kafka: KafkaSettings, app_id: str, work: Path, output: str | None = None
) -> Instances:
    """`count` instances of the pipeline (or of the passthrough into `output`) in consumer group `app_id`."""
    base = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    services, ports = [], []
    for n in range(1, count + 1):
        port = free_port()
        name = f"{kind}-{n}"
        env = processor_env(base, app_id=app_id, instance=name, state_dir=work / "state" / name, health_port=port)
        log = work / f"{app_id}-{name}.log"
        if kind == "pipeline":
            service = start_service(name, ["processor"], env, log)
        else:
            assert output is not None
            service = spawn(name, [sys.executable, "-m", "bench.passthrough", output], env, log)
        services.append(service)
        ports.append(port)
    return Instances(services, ports)


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> Service:
    with log.open("ab") as fh:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the bench only; it stops its instances itself
        )
    return Service(name, process, log)


async def wait_settled(instances: Instances, partitions: int, timeout_s: float = 120.0) -> None:
    """Until every instance is ready and, in one round of /readyz answers, the partitions are split among them."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            instances.check_alive()
            assigned: list[int] = []
            ready = 0
            for port in instances.health_ports:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://127.0.0.1:{port}/readyz")
                    if response.status_code == 200:
                        ready += 1
                        assigned += response.json()["assigned"]
            if ready == len(instances.health_ports) and sorted(assigned) == list(range(partitions)):
                return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the processor group did not settle within {timeout_s:.0f}s")


async def _delete_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return
        await admin.delete_topics([topic])
        deadline = time.monotonic() + timeout_s
        while topic in await admin.list_topics():  # deletion is asynchronous in the broker
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic} still exists {timeout_s:.0f} s after its deletion")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def provision(kafka: KafkaSettings, app_id: str, partitions: int, extra: Sequence[TopicSpec] = ()) -> None:
    """Every topic (changelogs named after `app_id`), and group `app_id` starting at the end of the family topics.

    The state topic is emptied first (deleted, created again): it is the accounts store's changelog, so a run's
    instance would otherwise restore the accounts of every earlier run on this broker (the same simulated
    accounts, already ready: no readiness records, larger states), which a deployment never sees."""
    await _delete_topic(kafka, catalog.ACCOUNT_STATE_TOPIC)
    specs = all_topics(TopicSettings(processor_application_id=app_id, partitions=partitions))
    await ensure_topics(kafka, [*specs, *extra])
    await start_at_end(kafka, app_id, list(catalog.FAMILY_TOPICS.values()))
