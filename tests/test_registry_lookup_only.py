"""Lookup-only (`SCHEMA_REGISTRY_AUTO_REGISTER=false`) against a registry without our schemas: the gateway and the
processor refuse to start as an operator sees it: exit 2, the subject and the variable named, no traceback, and
nothing written to the registry.

A registry of its own (a second local Apicurio, empty): the session's registry holds the real topics' subjects
as soon as any other test has registered them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from connector.local_registry import local_registry_on_free_port
from gateway.tls import ensure_self_signed
from processors.topics import all_topics

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("state_topic_recreated")]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("SCHEMA_REGISTRY_URL"):
        pytest.skip("SCHEMA_REGISTRY_URL is set: this test needs a registry of its own, started empty")
    registry = local_registry_on_free_port(tmp_path_factory.mktemp("empty-registry"))
    registry.start()
    try:
        yield registry.url
    finally:
        registry.stop()


def run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "GATEWAY_", "SCHEMA_"))}
    command = [sys.executable, "-m", "connector.cli", *argv]
    return subprocess.run(
        command, cwd=cwd, env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=120
    )


def test_lookup_only_without_our_schemas_exits_2_naming_the_subject(
    bootstrap: str, empty_registry: str, tmp_path: Path
) -> None:
    app_id = f"test-lookup-{uuid.uuid4().hex[:8]}"
    topics = all_topics(TopicSettings(processor_application_id=app_id))
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), topics))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCHEMA_REGISTRY_URL": empty_registry,
        "SCHEMA_REGISTRY_AUTO_REGISTER": "false",
        "PROCESSOR_APPLICATION_ID": app_id,
        "PROCESSOR_STATE_DIR": str(tmp_path / "state"),
        "PROCESSOR_HEALTH_PORT": "0",
        "GATEWAY_SECRETS": "lookup-only-test-secret",
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "GATEWAY_TLS_CERT_FILE": str(cert),
        "GATEWAY_TLS_KEY_FILE": str(key),
    }
    for command, subject in (("processor", "pinwheel.account_updates.v1-value"), ("gateway", "-value")):
        result = run_cli([command], env, tmp_path)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"{command}: schema registry: subject "), (command, last)
        assert subject in last, (command, last)
        assert "SCHEMA_REGISTRY_AUTO_REGISTER=false" in last, (command, last)
        assert "Traceback" not in result.stderr + result.stdout, command
        assert "Unclosed" not in result.stderr, command  # nothing was left open on the way out
    subjects = httpx.get(f"{empty_registry}/subjects", headers={"Accept": "application/json"}).json()
    assert subjects == []  # lookup-only never writes
