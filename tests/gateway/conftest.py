"""Gateway test fixtures: a TLS pair, topics on the session broker, a real uvicorn server per test."""

from __future__ import annotations

import asyncio
import re
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).parent))

from gateway_helpers import SECRET
from kafka_broker import free_port

from connector.settings import KafkaSettings
from connector.topics import all_topics, ensure_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tls import ensure_self_signed
from schemas.catalog import DEADLETTER_TOPIC, FAMILY_TOPICS

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "pinwheel-webhooks.md"
GATEWAY_TOPICS = [*FAMILY_TOPICS.values(), DEADLETTER_TOPIC]


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    assert ensure_self_signed(cert, key)
    return cert, key


@pytest.fixture(scope="session")
async def gateway_topics(bootstrap: str) -> list[str]:
    """The real topic names, created once (idempotent); tests tell their records apart by event_id."""
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), all_topics())
    return GATEWAY_TOPICS


def gateway_settings(tls_pair: tuple[Path, Path], spool_dir: Path, **overrides: Any) -> GatewaySettings:
    cert, key = tls_pair
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "tls_cert_file": cert,
        "tls_key_file": key,
        "secrets": [SECRET],
        "spool_dir": spool_dir,
        "publish_timeout_s": 5.0,
        "shutdown_timeout_s": 10.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


class ThreadedServer:
    """A real uvicorn HTTPS server on its own thread and event loop."""

    def __init__(self, settings: GatewaySettings, bootstrap: str, **app_kwargs: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, KafkaSettings(bootstrap_servers=bootstrap), **app_kwargs)
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            ssl_certfile=str(settings.tls_cert_file),
            ssl_keyfile=str(settings.tls_key_file),
            log_config=None,
            access_log=False,
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.settings.port}"

    @property
    def webhook_url(self) -> str:
        return self.url + self.settings.route

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture
def start_gateway(
    tls_pair: tuple[Path, Path], bootstrap: str, gateway_topics: list[str], tmp_path: Path
) -> Iterator[Callable[..., ThreadedServer]]:
    servers: list[ThreadedServer] = []

    def start(**overrides: Any) -> ThreadedServer:
        app_kwargs = overrides.pop("app_kwargs", {})
        settings = gateway_settings(tls_pair, overrides.pop("spool_dir", tmp_path / "spool"), **overrides)
        server = ThreadedServer(settings, overrides.get("bootstrap", bootstrap), **app_kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def https(tls_pair: tuple[Path, Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30) as client:
        yield client


class TopicTail:
    """Reads what was written to some topics after it was created (end offsets taken at start)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.start_offsets: dict[TopicPartition, int] = {}

    async def start(self) -> TopicTail:
        await self.consumer.start()
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(self.consumer.partitions_for_topic(topic) or await self._partitions(topic))
        ]
        self.consumer.assign(partitions)
        self.start_offsets = await self.consumer.end_offsets(partitions)
        for tp, offset in self.start_offsets.items():
            self.consumer.seek(tp, offset)
        return self

    async def _partitions(self, topic: str) -> set[int]:
        await self.consumer._client.force_metadata_update()
        return self.consumer.partitions_for_topic(topic) or set()

    async def collect(self, done: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
        """Records read so far (in per-partition order) once `done(records)` or the timeout."""
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=5000)
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                records.extend(batch[tp])
            if done(records):
                break
        return records

    async def stop(self) -> None:
        await self.consumer.stop()


@pytest.fixture
async def tail(bootstrap: str, gateway_topics: list[str]) -> AsyncIterator[TopicTail]:
    t = await TopicTail(bootstrap, gateway_topics).start()
    yield t
    await t.stop()


@pytest.fixture(scope="session")
def doc_samples() -> list[str]:
    """Every sample webhook body of pinwheel-webhooks.md, verbatim (two have a trailing-comma typo)."""
    text = SPEC.read_text()
    blocks = re.findall(r"^\{\n.*?^\}$", text, flags=re.S | re.M)
    return [b for b in blocks if '"event":' in b and "..." not in b]
