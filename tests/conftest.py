"""Shared fixtures: the real broker for this test session, and per-test unique topics."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.settings import KafkaSettings
from common.topics import ensure_topics
from processors.topics import all_topics
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


@pytest.fixture
async def state_topic_recreated(bootstrap: str) -> AsyncIterator[None]:
    """For a test whose processors write in the Confluent wire format: the state topic is deleted at its end and
    created again, empty, as declared. The state topic is the accounts store's changelog (processors/logic/
    stores.py), and one topic on the session's broker serves every test's processors: a later test's processor
    would restore these records, which decode only with the registry that framed them (without one it stops,
    rightly: ChangelogUnreadable). A compacted topic takes no DeleteRecords, hence the new topic."""
    yield
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([ACCOUNT_STATE_TOPIC])
        deadline = time.monotonic() + 60
        while ACCOUNT_STATE_TOPIC in await admin.list_topics():  # deletion is asynchronous in the broker
            assert time.monotonic() < deadline, f"{ACCOUNT_STATE_TOPIC} was never deleted"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    [spec] = [spec for spec in all_topics() if spec.name == ACCOUNT_STATE_TOPIC]
    while True:  # the name may be taken a little longer
        try:
            await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [spec])
            return
        except Exception:
            assert time.monotonic() < deadline, f"{ACCOUNT_STATE_TOPIC} could not be created again"
            await asyncio.sleep(0.5)
