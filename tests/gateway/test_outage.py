"""Kafka outages and gateway crashes, on a private broker (so killing it cannot disturb the other tests).

1. The broker is killed in the middle of a load and restarted 15 s later (three publish timeouts, past the end of
   the load): every delivery that got 200 is in Kafka afterwards, in per-account order.
2. The gateway (a subprocess) is killed with -9 while its spool holds events: after a restart, all of
   them are in Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.topics import TopicSettings
from connector.local_kafka import LocalKafka
from schemas.catalog import FAMILY_TOPICS, Family
from tests.gateway.gateway_helpers import (
    SECRET,
    RawConnection,
    admin_url,
    event_body,
    gateway_env,
    gateway_settings,
    header,
    signed_headers,
    start_subprocess,
    stop_subprocess,
    wait_drained,
    wait_up,
)

pytestmark = pytest.mark.kafka

TOPIC = FAMILY_TOPICS[Family.INCOME_EMPLOYMENT]
OUTAGE_S = 15.0  # the broker down from 5 s into the ~16 s load to past its end: the rest of the load is spooled


@contextlib.asynccontextmanager
async def client(cert: Path) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=cert), timeout=30, limits=limits) as http:
        yield http


async def read_topic(bootstrap: str, topic: str, wanted: set[str], timeout_s: float) -> list[Any]:
    """The topic from its beginning until every `wanted` event id was read (the broker is shared with other tests
    of the package: their records are in it too)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(TopicSettings().partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        missing = set(wanted)
        while time.monotonic() < deadline and missing:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp in batch:
                records.extend(batch[tp])
                missing -= {(header(r, "event_id") or b"").decode() for r in batch[tp]}
        return records
    finally:
        await consumer.stop()


def check_order(records: list[Any], acked: dict[str, tuple[str, int]]) -> tuple[int, int]:
    """Every acknowledged event is in Kafka, first occurrences in per-account send order.

    Returns (records seen, duplicates)."""
    seen: dict[str, int] = {}
    last_seq: dict[str, int] = defaultdict(lambda: -1)
    duplicates = 0
    for record in records:
        event_id = (header(record, "event_id") or b"").decode()
        if event_id not in acked:
            continue
        if event_id in seen:
            duplicates += 1  # at-least-once: a timed-out send may land and be drained again
            continue
        seen[event_id] = 1
        account, seq = acked[event_id]
        assert record.key == account.encode()
        assert seq > last_seq[account], f"account {account}: seq {seq} after {last_seq[account]}"
        last_seq[account] = seq
    missing = set(acked) - set(seen)
    assert not missing, f"{len(missing)} acknowledged deliveries lost"
    return len(seen), duplicates


async def run_load(
    url: str,
    cert: Path,
    accounts: list[str],
    per_account: int,
    rate_per_s: float,
    acked: dict[str, tuple[str, int]],
    stats: dict[str, int],
    first_seq: int = 0,
) -> None:
    """One sequential sender per account (seq n+1 leaves after seq n got its 200), paced globally."""
    interval = 1.0 / rate_per_s
    next_slot = time.monotonic()
    lock = asyncio.Lock()
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=cert)

    async def pace() -> None:
        nonlocal next_slot
        async with lock:
            now = time.monotonic()
            next_slot = max(next_slot + interval, now)
            wait = next_slot - now
        await asyncio.sleep(wait)

    async def sender(account: str) -> None:
        connection = RawConnection(parts.hostname or "127.0.0.1", parts.port or 443, context)
        try:
            for seq in range(first_seq, first_seq + per_account):
                event_id = str(uuid.uuid4())
                body = event_body("income.added", account, seq, event_id=event_id)
                await pace()
                while True:  # Pinwheel retries on 5xx; the test does too, with the same body
                    status, answer = await connection.post(parts.path, body, signed_headers(body))
                    stats[answer.get("status", str(status))] += 1
                    if status == 200:
                        acked[event_id] = (account, seq)
                        break
                    assert status == 503, answer
                    await asyncio.sleep(0.5)
        finally:
            await connection.close()

    await asyncio.gather(*(sender(a) for a in accounts))


async def test_broker_killed_under_load_loses_nothing_and_keeps_order(
    private_broker: LocalKafka, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    # The gateway in its own process (as in production): the load generator does not share its GIL.
    settings = gateway_settings(tls_pair, tmp_path / "spool")
    url = f"https://127.0.0.1:{settings.port}"
    log = tmp_path / "gateway.log"
    process = start_subprocess(gateway_env(settings, private_broker.bootstrap, quiet=True), log)
    accounts = [str(uuid.uuid4()) for _ in range(100)]
    acked: dict[str, tuple[str, int]] = {}
    stats: dict[str, int] = defaultdict(int)
    timeline: dict[str, float] = {}
    try:
        async with client(tls_pair[0]) as http:
            await wait_up(http, url, process, log)
            started = time.monotonic()

            async def outage() -> None:
                await asyncio.sleep(5)
                await asyncio.to_thread(private_broker.kill)
                timeline["killed"] = time.monotonic() - started
                await asyncio.sleep(OUTAGE_S)
                await asyncio.to_thread(private_broker.start)
                timeline["restarted"] = time.monotonic() - started

            # 100 accounts x 20 = 2,000 deliveries at 125/s (~16 s): the broker dies 5 s in.
            async def load() -> None:
                await run_load(url + settings.route, tls_pair[0], accounts, 20, 125, acked, stats)
                timeline["load_sent"] = time.monotonic() - started

            await asyncio.gather(load(), outage())
            # After the restart: traffic keeps flowing while the spool drains, still in order.
            await run_load(url + settings.route, tls_pair[0], accounts, 2, 125, acked, stats, first_seq=20)
            ready = await wait_drained(http, admin_url(settings), 60)
            timeline["drained"] = time.monotonic() - started
            metrics = (await http.get(admin_url(settings) + "/metrics")).text
    finally:
        stop_subprocess(process)
    assert len(acked) == 2200
    rate = 2000 / timeline["load_sent"]
    assert stats["spooled"] > 500, stats  # the outage really went through the spool
    records = await read_topic(private_broker.bootstrap, TOPIC, set(acked), 60)
    seen, duplicates = check_order(records, acked)
    print(
        f"\n[outage] acked={len(acked)} in_kafka={seen} duplicates={duplicates} rate={rate:.0f}/s "
        f"stats={dict(stats)} timeline={ {k: round(v, 1) for k, v in timeline.items()} } ready={ready}"
    )
    assert "gateway_drained_total" in metrics
    assert rate >= 100  # the load kept >= 100 deliveries/s through the outage


async def test_gateway_killed_with_spooled_events_loses_nothing(
    private_broker: LocalKafka, tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    settings = gateway_settings(tls_pair, tmp_path / "spool")
    env = gateway_env(settings, private_broker.bootstrap)
    url = f"https://127.0.0.1:{settings.port}"
    log = tmp_path / "gateway.log"
    account = str(uuid.uuid4())
    acked: dict[str, tuple[str, int]] = {}
    await asyncio.to_thread(private_broker.kill)  # Kafka is down: every event must go to the spool
    process = start_subprocess(env, log)
    try:
        async with client(tls_pair[0]) as http:
            await wait_up(http, url, process, log)
            for seq in range(200):
                event_id = str(uuid.uuid4())
                body = event_body("identity.added", account, seq, event_id=event_id)
                response = await http.post(url + settings.route, content=body, headers=signed_headers(body))
                assert response.status_code == 200, response.text
                assert response.json()["status"] == "spooled"
                acked[event_id] = (account, seq)
            ready = (await http.get(admin_url(settings) + "/readyz")).json()
            assert ready["spool_records"] == 200
            assert ready["kafka"] == "down"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        spooled = sum(p.stat().st_size for p in (tmp_path / "spool").rglob("*.seg"))
        assert spooled > 200 * 500  # the events are on disk, nowhere else
        await asyncio.to_thread(private_broker.start)
        process = start_subprocess(env, log)
        async with client(tls_pair[0]) as http:
            await wait_up(http, url, process, log)
            await wait_drained(http, admin_url(settings), 60)
    finally:
        stop_subprocess(process)
    # Graceful shutdown on SIGTERM (uvicorn re-raises the signal once it has shut down cleanly).
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    records = await read_topic(private_broker.bootstrap, TOPIC, set(acked), 30)
    seen, duplicates = check_order(records, acked)
    assert seen == 200
    text = log.read_text()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line["message"] == "publisher started" and line["spool_records"] == 200 for line in lines)
    assert [line["spool_records"] for line in lines if line["message"] == "publisher stopped"] == [0]
    print(f"\n[kill -9] spooled={len(acked)} recovered={seen} duplicates={duplicates}")
