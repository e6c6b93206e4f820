"""`pinwheel-connector processor reset` against the real broker and the real processors: refused while the
group has live members; after it, the rebuilt account states equal the ones before (read from the
compacted account_state topic with a plain consumer) and downstream sees the same update_ids again."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processors.topics import own_changelog_topics
from schemas import catalog
from schemas.catalog import changelog_topic, entry_log_topic
from schemas.codec import build_codec
from schemas.envelope import build_family_record
from schemas.settings import SchemaSettings
from tests.operate.ops_helpers import App, caught_up, read_topic

CODEC = build_codec(SchemaSettings())
FAMILIES = list(catalog.FAMILY_TOPICS.values())


def job(event_type: str, account: str, outcome: str, at: datetime, job_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event": event_type,
        "payload": {
            "id": job_id or str(uuid.uuid4()), "account_id": account, "link_token_id": str(uuid.uuid4()),
            "name": event_type.split(".")[0], "timestamp": at.isoformat(), "outcome": outcome,
            "error_code": "timeout" if outcome == "error" else None,
            "error_type": "platform" if outcome == "error" else None, "params": {},
        },
    }  # fmt: skip


async def deliver(bootstrap: str, bodies: list[dict[str, Any]], start: datetime) -> None:
    """Family records as the gateway writes them, received one millisecond apart."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, body in enumerate(bodies):
            at = start + timedelta(milliseconds=i)
            record = build_family_record(
                orjson.dumps(body), webhook_id="wh", pinwheel_version="2023-11-22", sent_at=at, received_at=at
            )
            value = CODEC.encode(record.topic, record.value)
            headers = record.kafka_headers(CODEC.content_format)
            await producer.send(
                record.topic, value, key=record.key, headers=headers, timestamp_ms=int(at.timestamp() * 1000)
            )
        await producer.flush()
    finally:
        await producer.stop()


async def latest_states(bootstrap: str, accounts: set[str]) -> dict[str, dict[str, Any]]:
    records = await read_topic(bootstrap, catalog.ACCOUNT_STATE_TOPIC, lambda r: r.key.decode() in accounts)
    latest = {r.key.decode(): r.value for r in records}  # last one wins
    return {key: CODEC.decode(catalog.ACCOUNT_STATE_TOPIC, value) for key, value in latest.items() if value}


async def changelog_ends(bootstrap: str, app_id: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(topic, p)
            for topic in own_changelog_topics(app_id).values()  # not the state topic: emptied by tombstones
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def test_reset_then_rebuild_gives_the_same_account_states(app: App) -> None:
    now = datetime.now(UTC)
    accounts = [str(uuid.uuid4()) for _ in range(12)]
    bodies: list[dict[str, Any]] = []
    # One family topic (income_employment): the engine merges its input topics by timestamp only within a
    # fetched batch, so events of one account on two topics may be taken in another order by the rebuild.
    for i, account in enumerate(accounts):
        pending = job("employment.added", account, "pending", now)
        bodies += [pending, job("income.added", account, "error" if i % 3 == 0 else "success", now)]
        bodies.append(job("employment.added", account, "success", now, job_id=pending["payload"]["id"]))
        bodies.append(bodies[-1])  # a duplicate delivery
        bodies.append(job("identity.added", account, "success", now))
    await deliver(app.bootstrap, bodies, now)

    async with app.running():
        await caught_up(app.bootstrap, app.app_id, FAMILIES)
        refused = await app.cli("processor", "reset", "--yes", expect=1)
        assert "has live members" in refused
        assert "nothing was changed" in refused
    before = await latest_states(app.bootstrap, set(accounts))
    assert set(before) == set(accounts)
    updates_before = await read_topic(
        app.bootstrap, catalog.ACCOUNT_UPDATES_TOPIC, lambda r: r.key.decode() in accounts
    )
    ends = await changelog_ends(app.bootstrap, app.app_id)
    assert sum(ends.values()) > 0
    assert (app.state_dir / app.app_id).is_dir()

    dry = await app.cli("processor", "reset", "--dry-run")
    assert "dry run: nothing changed" in dry
    assert f"delete and recreate (empty) changelog {entry_log_topic(app.app_id, 'dedupe')}" in dry
    assert f"write a tombstone to {catalog.ACCOUNT_STATE_TOPIC} for each of its " in dry
    assert changelog_topic(app.app_id, "accounts") not in dry  # their changelog is the state topic
    assert changelog_topic(app.app_id, "jobs") not in dry
    assert await changelog_ends(app.bootstrap, app.app_id) == ends
    assert (app.state_dir / app.app_id).is_dir()

    done = await app.cli("processor", "reset", "--yes")
    assert f"deleted {entry_log_topic(app.app_id, 'dedupe')}" in done
    assert set((await changelog_ends(app.bootstrap, app.app_id)).values()) == {0}  # recreated empty
    assert f"tombstones to {catalog.ACCOUNT_STATE_TOPIC}" in done
    # The state topic (the accounts store's changelog, shared downstream) is not deleted: each account's latest
    # record is now a tombstone, so the next start restores none of the old states.
    states = await read_topic(app.bootstrap, catalog.ACCOUNT_STATE_TOPIC, lambda r: r.key.decode() in accounts)
    latest = {r.key.decode(): r.value for r in states}
    assert latest == dict.fromkeys(accounts)
    assert not (app.state_dir / app.app_id).exists()
    admin = AIOKafkaAdminClient(bootstrap_servers=app.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=app.bootstrap)
    await admin.start()
    await consumer.start()
    try:
        offsets = await admin.list_consumer_group_offsets(app.app_id)
        family_offsets = {tp: o.offset for tp, o in offsets.items() if tp.topic in FAMILIES}
        retained = await consumer.beginning_offsets(list(family_offsets))
    finally:
        await consumer.stop()
        await admin.close()
    assert len(family_offsets) == 6 * len(FAMILIES)
    # the earliest retained records: offset 0 unless another test deleted records of the shared topics
    assert family_offsets == retained

    async with app.running():
        await caught_up(app.bootstrap, app.app_id, FAMILIES, timeout_s=120)
    after = await latest_states(app.bootstrap, set(accounts))
    assert after == before
    updates_after = await read_topic(app.bootstrap, catalog.ACCOUNT_UPDATES_TOPIC, lambda r: r.key.decode() in accounts)
    ids_before = Counter(CODEC.decode(catalog.ACCOUNT_UPDATES_TOPIC, r.value)["update_id"] for r in updates_before)
    ids_after = Counter(CODEC.decode(catalog.ACCOUNT_UPDATES_TOPIC, r.value)["update_id"] for r in updates_after)
    assert len(ids_before) == 4 * len(accounts)  # pending, income, final, identity (duplicate dropped)
    assert ids_after == Counter({update_id: 2 * n for update_id, n in ids_before.items()})  # each seen again
