"""`pinwheel-connector processor reset`: rebuild the processors' state and outputs from the family topics.

Like Kafka Streams' application reset tool, for this pipeline: with every processor instance stopped,
delete the application's changelog topics and recreate them empty, write a tombstone to
`pinwheel.account_state.v1` for every account it holds (that topic is the accounts store's changelog, and
shared with downstream: it is emptied of accounts, never deleted), delete the local state directory, and set
the consumer group's offsets on the family topics to the earliest retained records. The next start restores
nothing and reprocesses everything retained; downstream sees the updates again, with the same
deterministic update_ids, and each account's state deleted, then written again as it is rebuilt
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupAuthorizationFailedError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from common.kafka_access import (
    GROUP_AUTHORIZATION_FAILED,
    TOPIC_AUTHORIZATION_FAILED,
    TopicOp,
    not_authorized,
    require,
    topic_access,
)
from common.settings import KafkaSettings
from common.topics import TopicSettings, TopicSpec, ensure_topics, topic_errors
from processors.logic.stores import OUTPUT_LOGGED_TOPICS
from processors.settings import ProcessorSettings
from processors.topics import all_topics, own_changelog_topics
from schemas.catalog import FAMILY_TOPICS

#: The contract topics that are a store's changelog (the state topic): emptied by tombstones, not deleted.
SHARED_CHANGELOGS: tuple[str, ...] = OUTPUT_LOGGED_TOPICS


class ResetRefused(RuntimeError):
    """The reset cannot be done now (live group members, missing topics...); nothing was changed."""


@dataclass(frozen=True)
class ResetPlan:
    application_id: str
    changelogs: list[str]  # existing changelog topics (deleted, then recreated empty)
    tombstones: dict[str, int]  # shared changelog (the state topic) -> keys it holds a value for (tombstoned)
    state_dir: Path
    state_dir_exists: bool
    committed: dict[TopicPartition, int | None]  # the group's offsets now (None: none committed)
    earliest: dict[TopicPartition, int]  # the earliest retained offsets: where the group is set
    end: dict[TopicPartition, int]

    @property
    def records_to_reprocess(self) -> int:
        return sum(self.end[tp] - offset for tp, offset in self.earliest.items())

    def describe(self) -> str:
        lines = [f"processor reset of application {self.application_id!r}:"]
        lines += [f"  delete and recreate (empty) changelog {name}" for name in self.changelogs]
        lines += [
            f"  write a tombstone to {name} for each of its {count} accounts (the accounts store's changelog; "
            "downstream sees each account deleted, then written again as it is rebuilt)"
            for name, count in self.tombstones.items()
        ]
        if self.state_dir_exists:
            lines.append(f"  delete the local state directory {self.state_dir}")
        else:
            lines.append(f"  local state directory {self.state_dir}: absent here (other hosts: delete theirs)")
        lines.append("  set the group's offsets to the earliest retained records:")
        for tp in sorted(self.earliest, key=lambda t: (t.topic, t.partition)):
            now = self.committed.get(tp)
            lines.append(f"    {tp.topic}[{tp.partition}]: {'none' if now is None else now} -> {self.earliest[tp]}")
        lines.append(f"  records to process again: {self.records_to_reprocess}")
        lines.append(
            "  then every retained family record is processed again: downstream sees the account updates again "
            "(same update_ids); events older than the family topics' retention cannot be rebuilt"
        )
        return "\n".join(lines)


def _admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka.client_kwargs(), client_id=f"{kafka.client_id_prefix}-reset")


async def live_members(admin: AIOKafkaAdminClient, group: str) -> list[str]:
    """The members of `group` the coordinator still counts (a stopped static member stays until its session
    times out)."""
    members: list[str] = []
    for response in await admin.describe_consumer_groups([group]):
        for described in response.to_object()["groups"]:
            if described["group"] in (group, ""):
                members += [f"{m['member_id']} ({m['client_host']})" for m in described["members"]]
    return members


async def _refuse_if_alive(admin: AIOKafkaAdminClient, group: str) -> None:
    members = await live_members(admin, group)
    if members:
        raise ResetRefused(
            f"consumer group {group!r} has live members: {', '.join(members)}. Stop every processor instance "
            "first (an instance with PROCESSOR_INSTANCE_ID stays a member until PROCESSOR_SESSION_TIMEOUT_MS "
            "after it stopped); nothing was changed"
        )


async def _family_partitions(kafka: KafkaSettings) -> tuple[list[TopicPartition], dict[str, int]]:
    admin = _admin(kafka)
    try:
        await admin.start()
        described = await admin.describe_topics(list(FAMILY_TOPICS.values()))
    finally:
        await admin.close()
    missing = [t["topic"] for t in described if t["error_code"] != 0 or not t["partitions"]]
    if missing:
        raise ResetRefused(f"family topics missing: {', '.join(missing)}")
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    tps = [TopicPartition(topic, p) for topic, n in sorted(counts.items()) for p in range(n)]
    return tps, counts


def _changelog_specs(group: str, partitions: int) -> list[TopicSpec]:
    """The changelogs as `reset` recreates them: the family topics' partition count (co-partitioning) and their
    declared configuration."""
    declared = {spec.name: spec for spec in all_topics(TopicSettings(processor_application_id=group))}
    return [replace(declared[name], partitions=partitions) for name in own_changelog_topics(group).values()]


async def read_to_end(
    kafka: KafkaSettings, topic: str, partitions: int
) -> AsyncIterator[tuple[int, list[ConsumerRecord[bytes, bytes]]]]:
    """The committed records of `topic` (of `partitions` partitions), from the beginning to the end offsets it
    has when the read starts, in batches: (partition, records in offset order)."""
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), group_id=None, enable_auto_commit=False, isolation_level="read_committed"
    )
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:  # the initial positions first: a seek racing with their resolution can be lost
            await consumer.position(tp)
        end = await consumer.end_offsets(tps)
        for tp, offset in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, offset)
        remaining = {tp for tp in tps if end[tp] > await consumer.position(tp)}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                yield tp.partition, records
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()


async def live_keys(kafka: KafkaSettings, topic: str, partitions: int) -> dict[int, set[bytes]]:
    """The keys of a compacted topic (of `partitions` partitions) whose latest committed record is not a
    tombstone, per partition."""
    keys: dict[int, set[bytes]] = {p: set() for p in range(partitions)}
    async for partition, records in read_to_end(kafka, topic, partitions):
        for record in records:
            if record.key is None:
                continue
            if record.value is None:
                keys[partition].discard(record.key)
            else:
                keys[partition].add(record.key)
    return keys


async def write_tombstones(kafka: KafkaSettings, topic: str, keys: dict[int, set[bytes]]) -> int:
    """A tombstone for each key, in its partition (idempotent, acks=all); returns how many."""
    producer = AIOKafkaProducer(**kafka.client_kwargs(), enable_idempotence=True, acks="all")
    try:
        await producer.start()
        sent = [
            await producer.send(topic, None, key=key, partition=partition)
            for partition, partition_keys in sorted(keys.items())
            for key in sorted(partition_keys)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(sent)


async def shared_changelog_partitions(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """The partition count of each shared changelog (the state topic)."""
    access = await topic_access(admin, list(SHARED_CHANGELOGS))
    return {name: access[name].partitions for name in SHARED_CHANGELOGS}


async def check_permissions(admin: AIOKafkaAdminClient, group: str) -> list[str]:
    """Every permission the reset takes, checked before anything is changed (a reset stopped halfway, its
    changelogs deleted and not recreated, leaves the application unable to start): Read on the family
    topics, Delete on the existing changelogs (Metadata's authorized operations), Create on every changelog
    (CreateTopics with validate_only), Read and Write on the state topic (its tombstones) and Read on the group.
    Raises KafkaMisconfigured naming the first one refused; returns the changelogs that exist."""
    changelogs = list(own_changelog_topics(group).values())
    family = list(FAMILY_TOPICS.values())
    access = await topic_access(admin, [*family, *changelogs, *SHARED_CHANGELOGS])
    missing = require(
        access,
        {
            **dict.fromkeys(family, (TopicOp.READ,)),
            **dict.fromkeys(changelogs, (TopicOp.DELETE,)),
            **dict.fromkeys(SHARED_CHANGELOGS, (TopicOp.READ, TopicOp.WRITE)),
        },
    )
    if missing_topics := [name for name in (*family, *SHARED_CHANGELOGS) if name in missing]:
        raise ResetRefused(f"topics missing: {', '.join(missing_topics)}; nothing was changed")
    specs = _changelog_specs(group, max(access[name].partitions for name in family))
    trial = [NewTopic(s.name, s.partitions, s.durability(1)[0], topic_configs=s.declared_config(1)) for s in specs]
    if refused := [name for name, code, _ in topic_errors(await admin.create_topics(trial, validate_only=True))
                   if code == TOPIC_AUTHORIZATION_FAILED]:  # fmt: skip
        raise not_authorized(TopicOp.CREATE.tool_name, "topic" if len(refused) == 1 else "topics", refused)
    try:
        described = await admin.describe_consumer_groups([group])
    except GroupAuthorizationFailedError:
        raise not_authorized("Read", "consumer group", [group]) from None
    codes = [g["error_code"] for response in described for g in response.to_object()["groups"]]
    if GROUP_AUTHORIZATION_FAILED in codes:
        raise not_authorized("Read", "consumer group", [group])
    return [name for name in changelogs if name not in missing]


async def plan_reset(settings: ProcessorSettings, kafka: KafkaSettings) -> ResetPlan:
    """What `reset` would do; raises ResetRefused while the group has live members, KafkaMisconfigured when the
    principal lacks a permission the reset takes (checked before anything changes)."""
    group = settings.application_id
    admin = _admin(kafka)
    try:
        await admin.start()
        existing = set(await check_permissions(admin, group))
        shared = await shared_changelog_partitions(admin)
        await _refuse_if_alive(admin, group)
        tps, _ = await _family_partitions(kafka)
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
        earliest = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    tombstones = {}
    for topic, partitions in shared.items():
        tombstones[topic] = sum(len(keys) for keys in (await live_keys(kafka, topic, partitions)).values())
    state_dir = settings.state_dir / settings.application_id
    plan = ResetPlan(
        application_id=group,
        changelogs=[t for t in own_changelog_topics(group).values() if t in existing],
        tombstones=tombstones,
        state_dir=state_dir,
        state_dir_exists=state_dir.exists(),
        committed={tp: (o.offset if o.offset >= 0 else None) for tp, o in offsets.items()},
        earliest=dict(earliest),
        end=dict(end),
    )
    return plan


async def _wait_deleted(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while set(names) & set(await admin.list_topics()):
        if time.monotonic() > deadline:
            raise ResetRefused(f"changelog topics still exist {timeout_s:.0f}s after their deletion: {names}")
        await asyncio.sleep(0.3)


async def reset(settings: ProcessorSettings, kafka: KafkaSettings, plan: ResetPlan) -> list[str]:
    """Carry out `plan`; the group is checked again first. Returns one line per step done."""
    group = settings.application_id
    done: list[str] = []
    admin = _admin(kafka)
    try:
        await admin.start()
        await _refuse_if_alive(admin, group)
        shared = await shared_changelog_partitions(admin)
        if plan.changelogs:
            await admin.delete_topics(plan.changelogs)
            await _wait_deleted(admin, plan.changelogs)
            done += [f"deleted {name}" for name in plan.changelogs]
    finally:
        await admin.close()
    # Recreated empty at once, with the family topics' partition count (co-partitioning) and their declared
    # configuration: the processors must not start without them.
    _, counts = await _family_partitions(kafka)
    done += await ensure_topics(kafka, _changelog_specs(group, max(counts.values())))
    for topic, partitions in shared.items():  # read again: what the topic holds now, not at the plan
        count = await write_tombstones(kafka, topic, await live_keys(kafka, topic, partitions))
        done.append(f"wrote {count} tombstones to {topic}")
    if plan.state_dir.exists():
        shutil.rmtree(plan.state_dir)
        done.append(f"deleted {plan.state_dir}")
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=group, enable_auto_commit=False)
    try:
        await consumer.start()
        consumer.assign(list(plan.earliest))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in plan.earliest.items()})
    finally:
        await consumer.stop()
    done.append(f"set {len(plan.earliest)} offsets of group {group!r} to the earliest retained records")
    return done
