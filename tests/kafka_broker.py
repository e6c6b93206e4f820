"""The real Kafka broker the tests run against, picked in order:

1. `KAFKA_BOOTSTRAP_SERVERS` from the environment (a broker someone already runs);
2. a Docker engine, when one answers: the official `apache/kafka` image via testcontainers;
3. the local JVM broker (connector.local_kafka), started on a free port for this test session.

Only the local broker can be killed and restarted by fault-injection tests (`broker.local`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from connector.local_kafka import LocalKafka, free_port
from connector.settings import LocalKafkaSettings


@dataclass
class Broker:
    bootstrap: str
    kind: Literal["env", "docker", "local"]
    version: str
    local: LocalKafka | None = None


def _docker_available() -> bool:
    if os.environ.get("PINWHEEL_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _docker_broker(version: str) -> Iterator[Broker]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    container: Any = DockerContainer(f"apache/kafka:{version}")
    for key, value in env.items():
        container = container.with_env(key, value)
    container = container.with_bind_ports(9092, port)
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield Broker(f"127.0.0.1:{port}", "docker", version)


@contextlib.contextmanager
def _local_broker(version: str) -> Iterator[Broker]:
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-kafka-test-"))
    settings = LocalKafkaSettings(version=version, port=free_port(), data_dir=data_dir)
    broker = LocalKafka(settings)
    try:
        broker.start()
        yield Broker(broker.bootstrap, "local", version, local=broker)
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def select_broker() -> Iterator[Broker]:
    version = LocalKafkaSettings().version
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        yield Broker(bootstrap, "env", os.environ.get("KAFKA_VERSION", "unknown"))
    elif _docker_available():
        with _docker_broker(version) as broker:
            yield broker
    else:
        with _local_broker(version) as broker:
            yield broker
