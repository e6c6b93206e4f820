"""`pinwheel-connector processor` as an operator runs it: its log lines, and a clear refusal without topics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from common.kafka_errors import KafkaMisconfigured
from common.ports import free_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, TopicSpec, ensure_topics
from processors import service
from processors.service import check_topics, partition_mismatch
from processors.settings import ProcessorSettings
from processors.topics import all_topics, own_changelog_topics
from schemas import catalog

ROOT = Path(__file__).resolve().parents[2]


def processor_env(bootstrap: str, app_id: str, state_dir: Path, health_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PROCESSOR_APPLICATION_ID": app_id,
        "PROCESSOR_STATE_DIR": str(state_dir),
        "PROCESSOR_HEALTH_PORT": str(health_port),
        "PROCESSOR_LOG_LEVEL": "INFO",
    }


def start_processor(env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "connector.cli", "processor"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_info_lines_are_written_while_the_health_server_runs(
    bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    app_id = unique("svc-logs")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    asyncio.run(ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id))))
    port = free_port()
    child = start_processor(processor_env(bootstrap, app_id, tmp_path, port))
    try:
        deadline = time.monotonic() + 90
        ready = False
        while not ready and time.monotonic() < deadline and child.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            time.sleep(0.3)
        if not ready:
            child.kill()
            raise AssertionError(f"the processor never became ready: {child.communicate()[1][-3000:]}")
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err[-2000:]
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    info = [(line["logger"], line["message"]) for line in lines if line["level"] == "info"]
    assert ("processors", "processor starting") in info, err[-2000:]
    assert ("processors.runtime.engine", "task ready") in info
    assert ("processors", "processor stopped") in info
    assert all(set(line) >= {"timestamp", "level", "logger", "message"} for line in lines)


def test_missing_changelog_topics_stop_the_processor_at_once_naming_them(
    bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    app_id = unique("svc-missing")  # a fresh application id: none of its changelog topics exist
    child = start_processor(processor_env(bootstrap, app_id, tmp_path, 0))
    try:
        _, err = child.communicate(timeout=60)  # today's main never exits: a timeout fails the test
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("processor: topics missing: ")
    for changelog in own_changelog_topics(app_id).values():  # the state topic exists: the contract's
        assert changelog in last
    assert "pinwheel-connector topics create" in last
    assert len(err.splitlines()) < 20  # a clear message, not a flood


def test_a_state_topic_partitioned_unlike_the_family_topics_is_refused_naming_both() -> None:
    families = dict.fromkeys(catalog.FAMILY_TOPICS.values(), 6)
    assert partition_mismatch({**families, catalog.ACCOUNT_STATE_TOPIC: 6}) is None
    refusal = partition_mismatch({**families, catalog.ACCOUNT_STATE_TOPIC: 3})
    assert refusal is not None
    assert f"{catalog.ACCOUNT_STATE_TOPIC} has 3 partitions" in refusal
    assert f"{next(iter(catalog.FAMILY_TOPICS.values()))} has 6" in refusal


async def test_the_processor_refuses_to_start_on_a_state_topic_of_another_partition_count(
    bootstrap: str, unique: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker's state topic is every test's: a pre-created topic of 2 partitions stands for it (a user's).
    app_id, state = unique("svc-partitions"), unique("user-state")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    await ensure_topics(kafka, [TopicSpec(state, 2, {"cleanup.policy": "compact"}, None, 1, 1)])
    monkeypatch.setattr(service, "OUTPUT_LOGGED_TOPICS", (state,))
    with pytest.raises(KafkaMisconfigured, match=f"{state} has 2 partitions but .* has {TopicSettings().partitions}"):
        await check_topics(ProcessorSettings(application_id=app_id), kafka)


async def test_the_processor_refuses_to_start_on_a_dedupe_log_that_keeps_less_than_the_dedupe_retention(
    bootstrap: str, unique: Callable[[str], str]
) -> None:
    # The log as `topics create` makes it with TOPICS_RETENTION_DAYS=1 keeps 24 h; the store keeps ids for 168 h.
    # (The other topics are every test's, with the default retention.)
    app_id = unique("svc-retention")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    log = own_changelog_topics(app_id)["dedupe"]
    short = {spec.name: spec for spec in all_topics(TopicSettings(processor_application_id=app_id, retention_days=1))}
    specs = all_topics(TopicSettings(processor_application_id=app_id))
    await ensure_topics(kafka, [short[spec.name] if spec.name == log else spec for spec in specs])
    with pytest.raises(KafkaMisconfigured, match=f"{log} keeps records for retention.ms=86400000") as refused:
        await check_topics(ProcessorSettings(application_id=app_id), kafka)
    assert "PROCESSOR_DEDUPE_RETENTION_H (168 h)" in str(refused.value)
    await check_topics(ProcessorSettings(application_id=app_id, dedupe_retention_h=24), kafka)  # within it: starts
