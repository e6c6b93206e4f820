"""`pinwheel-connector processor migrate`: the jobs of an old `<app>-jobs-changelog` reach the state topic, so
that the processors, restarted, join a final with the pending the old version saw; the event ids of an old
`<app>-dedupe-changelog` reach the dedupe log, so that a redelivery of an event the old version saw is still a
duplicate. The plans themselves (pure), then the command against the real broker and the real processors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from common.topics import TopicSettings
from operate.migrate import Latest, plan_dedupe_migration, plan_migration
from schemas import catalog
from schemas.catalog import changelog_topic, entry_log_topic
from tests.operate.ops_helpers import App, caught_up, read_topic
from tests.operate.test_reset import CODEC, FAMILIES, deliver, job
from tests.sample_data import account_added

STATE = catalog.ACCOUNT_STATE_TOPIC


def _old_job(job_id: str, since: datetime, deadline: datetime) -> bytes:
    """A pending job as the old jobs changelog held it (version 1: [open, closed_through, timed_out]), by hand."""
    since_us, deadline_us = int(since.timestamp() * 1e6), int(deadline.timestamp() * 1e6)
    first = [str(uuid.uuid4()), "employment.added", "income_employment", since_us, since_us]
    return b"\x01" + orjson.dumps([[job_id, since_us, since_us, 1, deadline_us, first, "employment"], None, None])


def test_the_plan_carries_each_accounts_jobs_onto_its_latest_state_record() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    pending = _old_job("j1", at, at + timedelta(hours=25))
    old = {
        b"a|employment.added": Latest(0, pending, ()),
        b"a|income.added": Latest(0, b"\x01[null,5,null]", ()),
        b"b|income.added": Latest(1, b"\x01[null,6,null]", ()),  # b's latest state carries its jobs already
        b"c|income.added": Latest(2, b"\x01[null,7,null]", ()),  # c has no state
        b"d|income.added": Latest(0, None, ()),  # a tombstone: no job
    }
    states = {
        b"a": Latest(3, b"state-a", (("event_id", b"e"),)),
        b"b": Latest(1, b"state-b", (("pinwheel_jobs", b"\x01{}"),)),
        b"d": Latest(0, b"state-d", ()),
    }
    plan = plan_migration(old, states)
    assert (plan.migrated_jobs, plan.already_carried, plan.without_state) == (2, 1, 1)
    [rewrite] = plan.rewrites
    assert (rewrite.partition, rewrite.key, rewrite.value) == (3, b"a", b"state-a")
    assert rewrite.headers[0] == ("event_id", b"e")  # the record's own headers kept, in order
    name, jobs = rewrite.headers[1]
    assert name == "pinwheel_jobs"
    assert (
        orjson.loads(jobs[1:])
        == {  # read back as plain JSON: not by the codec that wrote it
            "employment.added": orjson.loads(pending[1:]),
            "income.added": [None, 5, None],
        }
    )


async def test_after_the_migration_a_final_joins_the_pending_the_old_version_saw(app: App) -> None:
    now = datetime.now(UTC)
    account, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    await deliver(app.bootstrap, [account_added(account, now)], now)
    async with app.running():  # the account's state record, with no jobs
        await caught_up(app.bootstrap, app.app_id, FAMILIES)
    assert "no jobs to migrate" in await app.cli("processor", "migrate-jobs")  # no old changelog: its old name

    # What the old version left: its jobs changelog, holding the account's pending job.
    old_topic = changelog_topic(app.app_id, "jobs")
    admin = AIOKafkaAdminClient(bootstrap_servers=app.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(old_topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=app.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        old = _old_job(job_id, now - timedelta(minutes=5), now + timedelta(hours=24))
        await producer.send_and_wait(old_topic, old, key=f"{account}|employment.added".encode())
    finally:
        await producer.stop()

    dry = await app.cli("processor", "migrate", "--dry-run")
    assert "1 jobs of 1 accounts" in dry
    assert "dry run: nothing written" in dry
    done = await app.cli("processor", "migrate")
    assert "wrote 1 state records" in done
    [migrated] = [r for r in await read_topic(app.bootstrap, STATE, lambda r: r.key == account.encode())][-1:]
    assert orjson.loads(dict(migrated.headers)["pinwheel_jobs"][1:])["employment.added"][0][0] == job_id

    final = job("employment.added", account, "success", now, job_id=job_id)
    await deliver(app.bootstrap, [final], now + timedelta(seconds=1))
    async with app.running():  # restored from its checkpoint and the tail: the migrated record
        await caught_up(app.bootstrap, app.app_id, FAMILIES)
    updates = await read_topic(app.bootstrap, catalog.ACCOUNT_UPDATES_TOPIC, lambda r: r.key == account.encode())
    [joined] = [CODEC.decode(catalog.ACCOUNT_UPDATES_TOPIC, r.value) for r in updates][-1:]
    assert joined["outcome"]["outcome"] == "success"
    assert joined["outcome"]["pending_since"] is not None  # joined with the old version's pending
    again = await app.cli("processor", "migrate")
    assert "1 accounts carry their jobs already" in again
    assert "nothing to write" in again


def _old_entry(at: datetime) -> bytes:
    """A dedupe entry's value, the event's first receipt, as the old changelog held it (by hand: version byte 1,
    then epoch µs as 8 bytes big-endian)."""
    return b"\x01" + int(at.timestamp() * 1e6).to_bytes(8, "big", signed=True)


def test_the_dedupe_plan_carries_the_live_entries_the_log_lacks() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    old = {
        b"e1": Latest(0, _old_entry(at), ()),
        b"e2": Latest(1, _old_entry(at), ()),
        b"e3": Latest(1, None, ()),  # expired: a tombstone
        b"e4": Latest(0, _old_entry(at), ()),  # in the log already (written since the upgrade, or migrated)
    }
    assert plan_dedupe_migration(old, {0: {b"e4"}}) == {0: [(b"e1", _old_entry(at))], 1: [(b"e2", _old_entry(at))]}
    assert plan_dedupe_migration(old, {0: {b"e1", b"e4"}, 1: {b"e2"}}) == {}


async def test_after_the_migration_a_redelivery_of_an_event_the_old_version_saw_is_a_duplicate(app: App) -> None:
    now = datetime.now(UTC)
    account = str(uuid.uuid4())
    seen = account_added(account, now - timedelta(minutes=5))
    await deliver(app.bootstrap, [account_added(str(uuid.uuid4()), now)], now)
    async with app.running():  # the new version's topics, its dedupe log among them
        await caught_up(app.bootstrap, app.app_id, FAMILIES)
    assert "no dedupe entries to migrate" in await app.cli("processor", "migrate")

    # What the old version left: its compacted dedupe changelog, co-partitioned with the family topics, holding
    # the id of an event it processed in the partition of the event's account (the task that saw it).
    old_topic = changelog_topic(app.app_id, "dedupe")
    partitions = TopicSettings().partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=app.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(old_topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    partition = DefaultPartitioner()(account.encode(), list(range(partitions)), list(range(partitions)))
    producer = AIOKafkaProducer(bootstrap_servers=app.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        entry = _old_entry(now - timedelta(minutes=5))
        await producer.send_and_wait(old_topic, entry, key=seen["event_id"].encode(), partition=partition)
    finally:
        await producer.stop()

    assert "1 event ids to carry onto" in await app.cli("processor", "migrate", "--dry-run")
    done = await app.cli("processor", "migrate")
    assert f"1 event ids to carry onto {entry_log_topic(app.app_id, 'dedupe')}" in done
    assert "wrote 1 records" in done
    await deliver(app.bootstrap, [seen], now + timedelta(seconds=1))  # a late redelivery
    async with app.running():  # restored from its checkpoint and the tail: the migrated entry
        await caught_up(app.bootstrap, app.app_id, FAMILIES)
    updates = await read_topic(app.bootstrap, catalog.ACCOUNT_UPDATES_TOPIC, lambda r: r.key == account.encode())
    assert updates == []  # a duplicate: nothing published for it
    again = await app.cli("processor", "migrate")
    assert "0 event ids to carry onto" in again
