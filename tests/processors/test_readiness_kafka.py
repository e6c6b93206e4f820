"""Readiness through the real pipeline and broker: family records in, `pinwheel.account_readiness.v1` out.

An account whose events satisfy the rule gets exactly one `account_ready` (its events delivered twice, a deeper
milestone after it); one whose required job fails gets `account_blocked` with the reason. Read with
read_committed, as a lender's decision service would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common.settings import KafkaSettings
from processors.pipeline import PipelineCounters
from processors.readiness import ReadinessSettings
from processors.service import build_engine, serve_engine
from processors.settings import ProcessorSettings
from schemas import catalog
from schemas.settings import SchemaSettings
from tests.processors.test_pipeline_kafka import Harness, account_added, job_body, start_harness


async def readiness_for(harness: Harness, accounts: set[str], expect: int, settle_s: float = 3.0) -> list[Any]:
    """The committed readiness records of `accounts` (key, decoded value, headers): `expect` of them, then
    `settle_s` more to catch any extra."""
    consumer = await harness.read_outputs(catalog.ACCOUNT_READINESS_TOPIC)
    found: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        settle_until = None
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    if r.key.decode() in accounts:
                        value = harness.codec.decode(catalog.ACCOUNT_READINESS_TOPIC, r.value)
                        found.append((r.key.decode(), value, dict(r.headers)))
            if len(found) >= expect:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
    finally:
        await consumer.stop()
    return found


async def test_account_ready_exactly_once_and_account_blocked_with_its_reason(
    bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    app_id = unique("readiness")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    harness = await start_harness(bootstrap, app_id)  # at the end of the shared topics: reads none of the past
    ready_account, blocked_account = str(uuid.uuid4()), str(uuid.uuid4())
    t0 = datetime.now(UTC) - timedelta(hours=1)

    def at(minutes: int) -> datetime:
        return t0 + timedelta(minutes=minutes)

    ready_events = [
        account_added(ready_account, at(0)),
        job_body("income.added", ready_account, "success", at(3)),
        job_body("employment.added", ready_account, "success", at(5)),
        job_body("paystubs.seven_days_synced", ready_account, "success", at(8)),
        job_body("paystubs.thirty_days_synced", ready_account, "success", at(12)),
    ]
    later = job_body("paystubs.ninety_days_synced", ready_account, "success", at(20))
    blocked_events = [
        account_added(blocked_account, at(0)),
        job_body("employment.added", blocked_account, "success", at(2)),
        job_body("income.added", blocked_account, "error", at(4)),
    ]
    settings = ProcessorSettings(application_id=app_id, state_dir=tmp_path, health_port=0)
    counters = PipelineCounters()
    rule = ReadinessSettings(rule="income.added, employment.added, paystubs.thirty_days_synced").parsed()
    engine = build_engine(settings, kafka, SchemaSettings(), counters, readiness=rule)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_engine(settings, engine, counters, stop))
    try:
        # Every delivery twice (Pinwheel is at least once), then a deeper milestone after the account is ready.
        await harness.deliver([body for body in ready_events + blocked_events for _ in range(2)])
        await harness.deliver([later])
        found = await readiness_for(harness, {ready_account, blocked_account}, expect=2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)

    by_account = {key: [value for k, value, _ in found if k == key] for key in (ready_account, blocked_account)}
    [ready] = by_account[ready_account]
    assert ready["status"] == "account_ready"
    assert ready["readiness_id"] == f"{ready_events[-1]['event_id']}:account_ready"
    assert ready["reason"] is None
    assert ready["met"] == ["income.added", "employment.added", "paystubs.thirty_days_synced"]
    assert ready["missing"] == []
    assert ready["time_to_ready_ms"] == 12 * 60 * 1000  # account.added created_at → the 30-day milestone
    assert ready["account_version"] == 5  # after the five distinct events, duplicates removed
    assert ready["trigger"]["event_type"] == "paystubs.thirty_days_synced"

    [blocked] = by_account[blocked_account]
    assert blocked["status"] == "account_blocked"
    assert (blocked["reason"], blocked["blocked_by"]) == ("error", "income.added")
    assert (blocked["error_code"], blocked["error_type"]) == ("timeout", "platform")
    assert blocked["met"] == ["employment.added"]
    assert blocked["time_to_ready_ms"] is None

    # The headers name the deciding event, as on the account update it follows.
    headers = next(h for k, _, h in found if k == blocked_account)
    assert headers["event_id"].decode() == blocked_events[-1]["event_id"]
    assert headers["event_type"].decode() == "income.added"
    assert counters.outputs["account_readiness:account_ready"] >= 1
