"""Shared fixtures: the real broker for this test session, and per-test unique topics."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from schemas.catalog import ACCOUNT_STATE_TOPIC
from simulator.traffic import load_capture
from tests.kafka_broker import Broker, select_broker
from tests.schema_registry import Registry, select_registry
from tests.secure_kafka import SecureBroker, secure_broker

_USED: list[Broker] = []
_REGISTRIES: list[Registry] = []


@pytest.fixture(scope="session")
def kafka() -> Iterator[Broker]:
    """The real Kafka broker (see tests/kafka_broker.py for how it is chosen)."""
    with select_broker() as broker:
        print(f"\n[tests] Kafka {broker.version} ({_kind(broker)}) at {broker.bootstrap}", file=sys.stderr)
        _USED.append(broker)
        yield broker


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureBroker]:
    """A secured local broker (TLS, SCRAM, PLAIN, mTLS, OAUTHBEARER, ACLs enforced): see tests/secure_kafka.py."""
    with secure_broker() as broker:
        print(
            f"\n[tests] secured Kafka {broker.local.settings.version} at {broker.sasl_ssl_bootstrap}", file=sys.stderr
        )
        yield broker


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[Registry]:
    """The real schema registry (see tests/schema_registry.py for how it is chosen)."""
    with select_registry() as registry:
        print(f"\n[tests] schema registry ({registry.kind}) at {registry.url}", file=sys.stderr)
        _REGISTRIES.append(registry)
        yield registry


def _kind(broker: Broker) -> str:
    return f"{broker.kind}: {broker.image}" if broker.image else broker.kind


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a session broker is marked `kafka`: `-m kafka` selects the Kafka integration tests; those
    on the secured broker (always the local JVM one) also `secure`, so `make test-docker` need not run them again."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if {"kafka", "secure_kafka"} & fixtures:
            item.add_marker(pytest.mark.kafka)
        if "secure_kafka" in fixtures:
            item.add_marker(pytest.mark.secure)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which broker (and registry) the run used, so a report of 'passed on Kafka X' can be checked."""
    for broker in _USED:
        terminalreporter.write_line(
            f"Kafka broker: Apache Kafka {broker.version} ({_kind(broker)}) at {broker.bootstrap}"
        )
    for registry in _REGISTRIES:
        version = registry.local.settings.version if registry.local else "unknown"
        terminalreporter.write_line(f"Schema registry: Apicurio Registry {version} ({registry.kind}) at {registry.url}")


@pytest.fixture(scope="session")
def bootstrap(kafka: Broker) -> str:
    return kafka.bootstrap


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names per test, so tests never see each other's topics, groups or transactional ids."""
    token = uuid.uuid4().hex[:10]
    return lambda base: f"test-{base}-{token}"


@pytest.fixture
async def make_topic(bootstrap: str, unique: Callable[[str], str]) -> AsyncIterator[Callable[..., Any]]:
    """Create a unique topic: `name = await make_topic("base", partitions=3, compact=False)`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(base: str, partitions: int = 1, compact: bool = False) -> str:
        name = unique(base)
        config = {"cleanup.policy": "compact"} if compact else {}
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
        created.append(name)
        return name

    try:
        yield create
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed TLS pair for the gateways of the tests."""
    from gateway.tls import ensure_self_signed

    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    assert ensure_self_signed(cert, key)
    return cert, key


@pytest.fixture(scope="session")
def capture() -> list[dict[str, Any]]:
    """The 12 real deliveries captured from Pinwheel's sandbox ({path, headers, body})."""
    return load_capture()


@pytest.fixture(autouse=True)
async def state_topic_emptied(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After each test on the session's broker, the records of the state topic are deleted. The state topic is the
    accounts store's changelog (processors/logic/stores.py), and one topic on the session's broker serves every
    test's processors, each its own deployment (application id): what a processor of one test wrote would be
    restored by the next test's, which a deployment never sees (its state topic is its own). Among them the
    accounts of the real capture, in most tests' traffic, and records in the Confluent wire format, which decode
    only with the registry that framed them."""
    yield
    if "bootstrap" not in request.fixturenames:
        return
    bootstrap = request.getfixturevalue("bootstrap")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(ACCOUNT_STATE_TOPIC, p) for p in consumer.partitions_for_topic(ACCOUNT_STATE_TOPIC) or ()]
        if tps:
            ends = await consumer.end_offsets(tps)
            await admin.delete_records({tp: RecordsToDelete(before_offset=end) for tp, end in ends.items() if end})
    finally:
        await admin.close()
        await consumer.stop()
