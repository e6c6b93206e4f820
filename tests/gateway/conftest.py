"""Gateway test fixtures: a TLS pair, topics on the session broker, a real uvicorn server per test."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import ensure_topics
from connector.local_kafka import NODE_PORT_SPAN, LocalKafka, LocalKafkaSettings
from processors.topics import all_topics
from schemas.catalog import GATEWAY_TOPICS
from tests.gateway.gateway_helpers import TopicTail, gateway_settings
from tests.sample_data import doc_samples as documented_samples
from tests.threaded_gateway import ThreadedServer


@pytest.fixture(scope="session")
async def gateway_topics(bootstrap: str) -> list[str]:
    """The real topic names, created once (idempotent); tests tell their records apart by event_id."""
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), all_topics())
    return list(GATEWAY_TOPICS)


@pytest.fixture(scope="package")
def private_broker_once(kafka: Any) -> Iterator[LocalKafka]:
    """One broker of the gateway tests' own (started once for the package: a JVM start is many seconds), which
    their tests stop and start (outages), with every topic."""
    # `kafka` first: the session broker has fetched the jars this one reuses.
    data_dir = Path(tempfile.mkdtemp(prefix="pinwheel-gateway-private-"))
    broker = LocalKafka(LocalKafkaSettings(port=free_port(NODE_PORT_SPAN), data_dir=data_dir), progress=lambda _: None)
    broker.start()
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), all_topics()))
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def private_broker(private_broker_once: LocalKafka) -> LocalKafka:
    """The private broker, running when the test begins (one that failed while the broker was down left it down;
    `start` of a running broker only checks that it answers). Its topics hold earlier tests' records too: tests
    look for their own event ids."""
    private_broker_once.start()
    return private_broker_once


@pytest.fixture
def start_gateway(
    tls_pair: tuple[Path, Path], bootstrap: str, gateway_topics: list[str], tmp_path: Path
) -> Iterator[Callable[..., ThreadedServer]]:
    servers: list[ThreadedServer] = []

    def start(**overrides: Any) -> ThreadedServer:
        app_kwargs = overrides.pop("app_kwargs", {})
        kafka = overrides.pop("bootstrap", bootstrap)
        settings = gateway_settings(tls_pair, overrides.pop("spool_dir", tmp_path / "spool"), **overrides)
        server = ThreadedServer(settings, kafka, **app_kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def https(tls_pair: tuple[Path, Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30) as client:
        yield client


@pytest.fixture
async def tail(bootstrap: str, gateway_topics: list[str]) -> AsyncIterator[TopicTail]:
    t = await TopicTail(bootstrap, gateway_topics).start()
    yield t
    await t.stop()


@pytest.fixture(scope="session")
def doc_samples() -> list[str]:
    """Every documented sample webhook body, verbatim (two have the documentation's trailing-comma typo)."""
    return documented_samples()
