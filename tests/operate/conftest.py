"""Fixtures of the operator-command tests: topics of a unique processor application, the real gateway over
HTTPS, the real processors in-process, and the `pinwheel-connector` CLI as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gateway_helpers import gateway_settings
from threaded_gateway import ThreadedServer

from connector.settings import KafkaSettings
from connector.topics import TopicSettings, all_topics, ensure_topics
from gateway.tls import ensure_self_signed
from processors.runtime.settings import ProcessorSettings
from processors.service import serve

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


@pytest.fixture
async def app(bootstrap: str, unique: Callable[[str], str], tmp_path: Path) -> App:
    app_id = unique("ops")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    return App(bootstrap, app_id, tmp_path / "state")


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    assert ensure_self_signed(cert, key)
    return cert, key


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
