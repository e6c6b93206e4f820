"""Gateway test fixtures: a TLS pair, topics on the session broker, a real uvicorn server per test (a broker of a
module's own: `private_broker`, tests/conftest.py)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import KafkaSettings
from common.topics import ensure_topics
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
