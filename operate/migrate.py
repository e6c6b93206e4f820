"""`pinwheel-connector processor migrate`: carry the state of a deployment from before two changes of the stores'
changelogs onto the new ones, so that the processors' next restore finds it. Run once, with every processor
instance stopped, before the new version starts; run again, it writes nothing. (`migrate-jobs`, its earlier name,
does the same.)

**The dedupe store.** Before, its changelog was the compacted `<application_id>-dedupe-changelog`, one record per
event id. Now it is `<application_id>-dedupe-log`, kept by time, one record per transaction holding its entries
(docs/processing.md). The command writes every entry live in the old changelog (latest value per key, not a
tombstone) whose key the new log lacks into the new log, in the same partition. Without it, the first start of
the new version (which restores every task from scratch: its changelogs changed) forgets every event id seen
before the upgrade, and lets a late redelivery of one through.

**The jobs store.** Before, the jobs store had a changelog of its own, `<application_id>-jobs-changelog`: one record
per job, key `<account_id>|<event_type>`, value the job's join state. Now each account's jobs travel in the
`pinwheel_jobs` header of its records on `pinwheel.account_state.v1` (docs/processing.md), and the old topic is not
read. With every processor instance stopped, this command writes, for each account that has jobs in the old
changelog and whose latest state record carries none, that latest record again (same partition, key, value and
headers) with the header added. Downstream sees the account's state written again, unchanged. An account whose
latest record already carries jobs (written since the upgrade) is left as it is; run again, the command writes
nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from common.settings import KafkaSettings
from operate.reset import live_members, read_to_end
from processors.logic.codec import ACCOUNT_JOBS_SERDE, legacy_job_state_from_bytes
from processors.logic.join import JobState
from processors.logic.keys import split_join_key
from processors.logic.stores import DEDUPE, JOBS, JOBS_HEADER
from processors.runtime.entrylog import decode_entries, encode_entries
from processors.settings import ProcessorSettings
from schemas.catalog import ACCOUNT_STATE_TOPIC, changelog_topic, entry_log_topic

Headers = tuple[tuple[str, bytes], ...]


class MigrationRefused(RuntimeError):
    """The migration cannot run now (live group members); nothing was written."""


@dataclass(frozen=True)
class Latest:
    """The latest committed record of a key on a compacted topic."""

    partition: int
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Rewrite:
    """A state record written again with its account's jobs."""

    partition: int
    key: bytes
    value: bytes
    headers: Headers


@dataclass(frozen=True)
class MigrationPlan:
    rewrites: list[Rewrite]
    migrated_jobs: int
    already_carried: int  # accounts whose latest state record carries jobs already
    without_state: int  # accounts with old jobs and no state (never written, or deleted by a reset)


def plan_migration(old_jobs: Mapping[bytes, Latest], states: Mapping[bytes, Latest]) -> MigrationPlan:
    """What to write, from the latest records of the old jobs changelog and of the state topic (pure)."""
    by_account: dict[str, dict[str, JobState]] = {}
    for key, latest in old_jobs.items():
        if latest.value is not None:
            account, event_type = split_join_key(key.decode())
            by_account.setdefault(account, {})[event_type] = legacy_job_state_from_bytes(latest.value)
    rewrites, migrated, carried, stateless = [], 0, 0, 0
    for account, jobs in sorted(by_account.items()):
        state = states.get(account.encode())
        if state is None or state.value is None:
            stateless += 1
        elif any(name == JOBS_HEADER for name, _ in state.headers):
            carried += 1
        else:
            headers = (*state.headers, (JOBS_HEADER, ACCOUNT_JOBS_SERDE.to_bytes(jobs)))
            rewrites.append(Rewrite(state.partition, account.encode(), state.value, headers))
            migrated += len(jobs)
    return MigrationPlan(rewrites, migrated, carried, stateless)


async def _partitions(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, int]:
    """The partition count of each of `topics` that exists."""
    described = await admin.describe_topics(list(topics))
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0 and t["partitions"]}


async def latest_records(kafka: KafkaSettings, topic: str, partitions: int) -> dict[bytes, Latest]:
    """The latest committed record of every key of `topic` (read_committed, up to the end offsets)."""
    latest: dict[bytes, Latest] = {}
    async for partition, records in read_to_end(kafka, topic, partitions):
        for record in records:
            if record.key is not None:
                latest[record.key] = Latest(partition, record.value, tuple(record.headers))
    return latest


def plan_dedupe_migration(
    old_entries: Mapping[bytes, Latest], logged: Mapping[int, set[bytes]]
) -> dict[int, list[tuple[bytes, bytes]]]:
    """Partition -> the entries to write to the new dedupe log: those live in the old changelog (`old_entries`,
    its latest records) whose key the log's partition (`logged`: its keys) lacks (pure)."""
    plan: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, latest in sorted(old_entries.items()):
        if latest.value is not None and key not in logged.get(latest.partition, set()):
            plan.setdefault(latest.partition, []).append((key, latest.value))
    return plan


async def migrate(settings: ProcessorSettings, kafka: KafkaSettings, dry_run: bool = False) -> list[str]:
    """Plan the migration of `settings.application_id`'s old dedupe and jobs changelogs and, unless `dry_run`,
    write it; the lines to print. Raises MigrationRefused while the group has live members."""
    group = settings.application_id
    old_dedupe, new_dedupe, old_jobs = (
        changelog_topic(group, DEDUPE),
        entry_log_topic(group, DEDUPE),
        changelog_topic(group, JOBS),
    )
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), client_id=f"{kafka.client_id_prefix}-migrate")
    try:
        await admin.start()
        members = await live_members(admin, group)
        if members:
            raise MigrationRefused(
                f"consumer group {group!r} has live members: {', '.join(members)}. Stop every processor instance "
                "first; nothing was written"
            )
        partitions = await _partitions(admin, [old_dedupe, new_dedupe, old_jobs, ACCOUNT_STATE_TOPIC])
    finally:
        await admin.close()
    lines: list[str] = []
    if old_dedupe not in partitions:
        lines.append(f"no {old_dedupe}: no dedupe entries to migrate")
    elif new_dedupe not in partitions:
        raise MigrationRefused(f"{new_dedupe} is missing (`pinwheel-connector topics create`); nothing was written")
    else:
        lines += await _migrate_dedupe(kafka, old_dedupe, new_dedupe, partitions, dry_run)
    if old_jobs not in partitions:
        return [*lines, f"no {old_jobs}: no jobs to migrate"]
    return [*lines, *await _migrate_jobs(kafka, old_jobs, partitions, dry_run)]


async def _migrate_dedupe(
    kafka: KafkaSettings, old_topic: str, new_topic: str, partitions: Mapping[str, int], dry_run: bool
) -> list[str]:
    old_entries = await latest_records(kafka, old_topic, partitions[old_topic])
    logged: dict[int, set[bytes]] = {}
    async for partition, records in read_to_end(kafka, new_topic, partitions[new_topic]):
        keys = logged.setdefault(partition, set())
        for record in records:
            if record.value is not None:
                keys.update(key for key, _ in decode_entries(record.value))
    plan = plan_dedupe_migration(old_entries, logged)
    entries = sum(len(mine) for mine in plan.values())
    lines = [f"{old_topic}: {entries} event ids to carry onto {new_topic}"]
    if dry_run or not entries:
        return [*lines, "dry run: nothing written" if dry_run else "nothing to write"]
    producer = AIOKafkaProducer(**kafka.client_kwargs(), enable_idempotence=True, acks="all")
    try:
        await producer.start()
        sent = [
            await producer.send(new_topic, value, partition=partition)
            for partition, mine in sorted(plan.items())
            for value in encode_entries(mine)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return [*lines, f"wrote {len(sent)} records; {old_topic} is no longer needed (delete it and its ACLs at leisure)"]


async def _migrate_jobs(
    kafka: KafkaSettings, old_topic: str, partitions: Mapping[str, int], dry_run: bool
) -> list[str]:
    if ACCOUNT_STATE_TOPIC not in partitions:
        raise MigrationRefused(f"{ACCOUNT_STATE_TOPIC} is missing; nothing was written")
    old_jobs = await latest_records(kafka, old_topic, partitions[old_topic])
    states = await latest_records(kafka, ACCOUNT_STATE_TOPIC, partitions[ACCOUNT_STATE_TOPIC])
    plan = plan_migration(old_jobs, states)
    lines = [
        f"{old_topic}: {plan.migrated_jobs} jobs of {len(plan.rewrites)} accounts to carry onto {ACCOUNT_STATE_TOPIC}"
        f" ({plan.already_carried} accounts carry their jobs already, {plan.without_state} have no state)"
    ]
    if dry_run or not plan.rewrites:
        return [*lines, "dry run: nothing written" if dry_run else "nothing to write"]
    producer = AIOKafkaProducer(**kafka.client_kwargs(), enable_idempotence=True, acks="all")
    try:
        await producer.start()
        sent = [
            await producer.send(ACCOUNT_STATE_TOPIC, r.value, key=r.key, partition=r.partition, headers=list(r.headers))
            for r in plan.rewrites
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return [
        *lines,
        f"wrote {len(sent)} state records; {old_topic} is no longer needed (delete it and its ACLs at leisure)",
    ]
