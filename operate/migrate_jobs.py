"""`pinwheel-connector processor migrate-jobs`: carry the jobs of a deployment from before they rode on the state
topic onto it, so that the processors' next restore finds them.

Before, the jobs store had a changelog of its own, `<application_id>-jobs-changelog`: one record per job, key
`<account_id>|<event_type>`, value the job's join state. Now each account's jobs travel in the `pinwheel_jobs`
header of its records on `pinwheel.account_state.v1` (docs/processing.md), and the old topic is not read. With
every processor instance stopped, this command writes, for each account that has jobs in the old changelog and
whose latest state record carries none, that latest record again (same partition, key, value and headers) with
the header added. Downstream sees the account's state written again, unchanged. An account whose latest record
already carries jobs (written since the upgrade) is left as it is; run again, the command writes nothing.
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
from processors.logic.stores import JOBS, JOBS_HEADER
from processors.settings import ProcessorSettings
from schemas.catalog import ACCOUNT_STATE_TOPIC, changelog_topic

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


async def migrate_jobs(settings: ProcessorSettings, kafka: KafkaSettings, dry_run: bool = False) -> list[str]:
    """Plan the migration of `settings.application_id`'s old jobs changelog and, unless `dry_run`, write it;
    the lines to print. Raises MigrationRefused while the group has live members."""
    group = settings.application_id
    old_topic = changelog_topic(group, JOBS)
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), client_id=f"{kafka.client_id_prefix}-migrate-jobs")
    try:
        await admin.start()
        members = await live_members(admin, group)
        if members:
            raise MigrationRefused(
                f"consumer group {group!r} has live members: {', '.join(members)}. Stop every processor instance "
                "first; nothing was written"
            )
        partitions = await _partitions(admin, [old_topic, ACCOUNT_STATE_TOPIC])
    finally:
        await admin.close()
    if old_topic not in partitions:
        return [f"no {old_topic}: nothing to migrate"]
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
