"""The real Kafka broker the tests run against, picked in order:

1. `PINWHEEL_TEST_BOOTSTRAP_SERVERS` from the environment (a broker someone already runs, given to the tests on
   purpose: `KAFKA_BOOTSTRAP_SERVERS`, the services' own setting, is never read here, so a shell that points the
   services at a real cluster cannot point the tests' topic creation and deletion at it);
2. a Docker engine, when one answers: a Kafka image via testcontainers, on a network of its own, its port
   published on 127.0.0.1 only, the container removed at the end of the session (also on failure);
3. the local JVM broker (connector.local_kafka), started on a free port for this test session.

`PINWHEEL_TEST_BROKER=env|docker|local` forces one of them (an unusable choice fails instead of falling back).
The docker image is `PINWHEEL_TEST_KAFKA_IMAGE`, by default our locally built `pinwheel-local/kafka:<version>`
(docker/local-images.sh) when the engine has it, else the official `apache/kafka:<version>`.
Only the local broker can be killed and restarted by fault-injection tests (`broker.local`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from common.ports import free_port
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaError, LocalKafkaSettings, answers_metadata

CHOICES = ("env", "docker", "local")
ENV_BOOTSTRAP = "PINWHEEL_TEST_BOOTSTRAP_SERVERS"
LOCAL_IMAGE = "pinwheel-local/kafka:{version}"
OFFICIAL_IMAGE = "apache/kafka:{version}"


@dataclass
class Broker:
    bootstrap: str
    kind: Literal["env", "docker", "local"]
    version: str
    local: LocalKafka | None = None
    image: str | None = None


def docker_available() -> bool:
    if os.environ.get("PINWHEEL_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def kafka_image(version: str) -> str:
    """The image of the docker branch (see the module docstring)."""
    if configured := os.environ.get("PINWHEEL_TEST_KAFKA_IMAGE"):
        return configured
    from docker.errors import ImageNotFound

    import docker

    local = LOCAL_IMAGE.format(version=version)
    try:
        docker.from_env(timeout=10).images.get(local)
    except ImageNotFound:
        return OFFICIAL_IMAGE.format(version=version)
    return local


@contextlib.contextmanager
def _docker_broker(version: str) -> Iterator[Broker]:
    # testcontainers' reaper container (Ryuk) is an image from a registry; the `with` blocks below remove the
    # broker and its network themselves, also when the session fails.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    image = kafka_image(version)
    port = free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        # The broker talks to itself (transaction markers, AddPartitionsToTxn verification) on INTERNAL: the
        # host's published port does not exist inside the container, and a produce whose verification cannot
        # connect fails with NOT_ENOUGH_REPLICAS.
        "KAFKA_LISTENERS": "INTERNAL://:19092,EXTERNAL://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"INTERNAL://localhost:19092,EXTERNAL://127.0.0.1:{port}",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "10",  # as the local broker: 50 take long to create on 2 cores
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "10",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    with Network() as network:
        started = LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120)
        container: Any = DockerContainer(image).with_network(network).waiting_for(started)
        for key, value in env.items():
            container = container.with_env(key, value)
        container.ports["9092/tcp"] = ("127.0.0.1", port)  # loopback only (with_bind_ports binds every interface)
        with container:  # started: its log said so (the wait strategy)
            bootstrap = f"127.0.0.1:{port}"
            _wait_for_coordinators(bootstrap)
            yield Broker(bootstrap, "docker", version, image=image)


def _wait_for_coordinators(bootstrap: str, timeout_s: float = 60.0) -> None:
    """As for the local broker: the group and transaction coordinators answer before the first test."""
    deadline = time.monotonic() + timeout_s
    while not asyncio.run(answers_metadata(bootstrap, coordinators=True)):
        if time.monotonic() > deadline:
            raise LocalKafkaError(f"the broker at {bootstrap} did not answer within {timeout_s}s")
        time.sleep(0.5)


@contextlib.contextmanager
def _local_broker(version: str) -> Iterator[Broker]:
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-kafka-test-"))
    settings = LocalKafkaSettings(version=version, port=free_port(NODE_PORT_SPAN), data_dir=data_dir)
    broker = LocalKafka(settings)
    try:
        broker.start()
        yield Broker(broker.bootstrap, "local", version, local=broker)
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _choice() -> str:
    forced = os.environ.get("PINWHEEL_TEST_BROKER", "")
    if forced and forced not in CHOICES:
        raise ValueError(f"PINWHEEL_TEST_BROKER must be one of {', '.join(CHOICES)}, got {forced!r}")
    if forced == "env" and not os.environ.get(ENV_BOOTSTRAP):
        raise ValueError(f"PINWHEEL_TEST_BROKER=env needs {ENV_BOOTSTRAP}")
    if forced == "docker" and not docker_available():
        raise ValueError("PINWHEEL_TEST_BROKER=docker but no Docker engine answers (DOCKER_HOST, make docker-engine)")
    if forced:
        return forced
    if os.environ.get(ENV_BOOTSTRAP):
        return "env"
    if not docker_available():
        return "local"
    image = kafka_image(LocalKafkaSettings().version)
    if (problem := image_unavailable(image)) is not None:
        print(f"[tests] a Docker engine answers, but {image} {problem}: using the local JVM broker", file=sys.stderr)
        return "local"
    return "docker"


def image_unavailable(image: str, pull_timeout_s: float = 60.0) -> str | None:
    """Why the engine cannot run `image` (None: it has it, or pulled it now): an engine that cannot reach a
    registry (offline, a mirror down, a proxy) is no reason for every Kafka test to fail."""
    from docker.errors import ImageNotFound

    import docker

    client = docker.from_env(timeout=pull_timeout_s)
    try:
        client.images.get(image)
        return None
    except ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except Exception as exc:
        return f"cannot be pulled ({type(exc).__name__})"
    return None


@contextlib.contextmanager
def select_broker() -> Iterator[Broker]:
    version = LocalKafkaSettings().version
    choice = _choice()
    if choice == "env":
        yield Broker(os.environ[ENV_BOOTSTRAP], "env", os.environ.get("KAFKA_VERSION", "unknown"))
    elif choice == "docker":
        with _docker_broker(version) as broker:
            yield broker
    else:
        with _local_broker(version) as broker:
            yield broker
