"""Fixtures of the operator-command tests: a unique processor application with its topics, and the real
gateway over HTTPS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.offsets import start_at_end
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from processors.topics import all_topics
from schemas.catalog import FAMILY_TOPICS
from tests.gateway.gateway_helpers import gateway_settings
from tests.operate.ops_helpers import App
from tests.threaded_gateway import ThreadedServer


@pytest.fixture
async def app(bootstrap: str, unique: Callable[[str], str], tmp_path: Path) -> App:
    """Its group starts at the end of the shared family topics (as `make run` starts one): its processors take
    what the test writes, not every record earlier tests wrote (`processor reset` still rewinds it to the start)."""
    app_id = unique("ops")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    await start_at_end(kafka, app_id, list(FAMILY_TOPICS.values()))
    return App(bootstrap, app_id, tmp_path / "state")


@pytest.fixture
def start_gateway(
    tls_pair: tuple[Path, Path], bootstrap: str, tmp_path: Path
) -> Iterator[Callable[..., ThreadedServer]]:
    servers: list[ThreadedServer] = []

    def start(**overrides: Any) -> ThreadedServer:
        kafka = overrides.pop("bootstrap", bootstrap)
        settings = gateway_settings(tls_pair, overrides.pop("spool_dir", tmp_path / "spool"), **overrides)
        server = ThreadedServer(settings, kafka).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
