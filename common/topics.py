"""Topics as code: the declaration of a topic, and idempotent provisioning against a cluster (the topics
themselves are declared in schemas/topics.py).

`ensure_topics` creates what is missing and refuses to paper over what disagrees: a topic with
another partition count, replication factor or configuration is reported, never altered, and topics
that must be co-partitioned (the family topics and the changelogs) must all have one partition count,
or the processors would join partition p of one topic with a different set of accounts in another.

Every topic also declares its durability, derived from its replication factor: `min.insync.replicas`
(RF - 1, at least 1: 2 of 3 replicas must hold a record before an acks=all write or a transaction is
acknowledged, whatever the broker's default) and `unclean.leader.election.enable=false` (an out-of-sync
replica never becomes leader and silently drops acknowledged records).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import errors as Errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.kafka_access import TOPIC_AUTHORIZATION_FAILED, TopicOp, not_authorized, require, topic_access
from common.settings import KafkaSettings

DAY_MS = 24 * 3600 * 1000
MIN_ISR = "min.insync.replicas"
UNCLEAN = "unclean.leader.election.enable"


class TopicSettings(BaseSettings):
    """How topics are created (env prefix `TOPICS_`)."""

    model_config = SettingsConfigDict(env_prefix="TOPICS_", extra="ignore")

    partitions: int = Field(default=6, ge=1, le=10_000, description="Partitions of every account-keyed topic.")
    replication_factor: int | None = Field(
        default=None, ge=1, description="Replication factor; empty means min(3, number of brokers)."
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="min.insync.replicas of every topic; empty means replication factor - 1 (at least 1).",
    )
    retention_days: int = Field(
        default=30,
        ge=1,
        description="Retention of the family, update and dead-letter topics, and of the processors' dedupe log "
        "(at least PROCESSOR_DEDUPE_RETENTION_H).",
    )
    processor_application_id: str = Field(
        default="pinwheel-processor",
        description="The processors' application id; names their changelog topics and consumer group.",
        validation_alias="PROCESSOR_APPLICATION_ID",
    )


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    copartition_group: str | None = None
    replication_factor: int | None = None  # None: decided from the cluster size
    min_insync_replicas: int | None = None  # None: replication factor - 1 (at least 1)

    def durability(self, brokers: int) -> tuple[int, dict[str, str]]:
        """(replication factor, durability configuration) of this topic on a cluster of `brokers` brokers."""
        rf = self.replication_factor or min(3, brokers)
        min_isr = self.min_insync_replicas or default_min_insync_replicas(rf)
        if min_isr > rf:
            raise TopicMismatchError(
                f"{self.name}: min.insync.replicas {min_isr} exceeds the replication factor {rf}: no write could "
                "ever be acknowledged (lower TOPICS_MIN_INSYNC_REPLICAS or raise TOPICS_REPLICATION_FACTOR)"
            )
        return rf, {MIN_ISR: str(min_isr), UNCLEAN: "false"}

    def declared_config(self, brokers: int) -> dict[str, str]:
        return {**self.config, **self.durability(brokers)[1]}


class TopicMismatchError(RuntimeError):
    """An existing topic disagrees with its declaration."""


def default_min_insync_replicas(replication_factor: int) -> int:
    """RF - 1, at least 1: RF 3 → 2 (one broker may be down, writes go on, none rests on one copy); RF 1 → 1."""
    return max(1, replication_factor - 1)


def check_copartitioning(specs: Iterable[TopicSpec], actual_partitions: dict[str, int]) -> list[str]:
    """Problems where topics of one co-partitioning group have different partition counts."""
    groups: dict[str, dict[str, int]] = defaultdict(dict)
    for spec in specs:
        if spec.copartition_group:
            groups[spec.copartition_group][spec.name] = actual_partitions.get(spec.name, spec.partitions)
    problems = []
    for group, counts in groups.items():
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{name}={n}" for name, n in sorted(counts.items()))
            problems.append(
                f"topics that must be co-partitioned ({group}) have different partition counts: {listing}; "
                "give them one partition count (add partitions with kafka-topics --alter, which moves keys, "
                "or recreate them) before starting the processors"
            )
    return problems


async def ensure_topics(settings: KafkaSettings, specs: Sequence[TopicSpec], *, create: bool = True) -> list[str]:
    """Create missing topics (when `create`); raise TopicMismatchError if any existing one disagrees.

    Returns one human-readable line per topic.
    """
    admin = AIOKafkaAdminClient(**settings.client_kwargs(), client_id=f"{settings.client_id_prefix}-topics")
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        brokers = len(cluster["brokers"])
        # Per topic, not a listing: a listing hides a topic the principal may not describe ("missing").
        access = await topic_access(admin, [s.name for s in specs])
        absent = set(require(access, {s.name: (TopicOp.DESCRIBE_CONFIGS,) for s in specs}))
        existing = {s.name for s in specs} - absent
        report: list[str] = []
        missing = [s for s in specs if s.name not in existing]
        if missing and create:
            new = [
                NewTopic(s.name, s.partitions, s.durability(brokers)[0], topic_configs=s.declared_config(brokers))
                for s in missing
            ]
            errors = topic_errors(await admin.create_topics(new))
            if refused := [name for name, code, _ in errors if code == TOPIC_AUTHORIZATION_FAILED]:
                raise not_authorized(TopicOp.CREATE.tool_name, "topic" if len(refused) == 1 else "topics", refused)
            failures = [
                f"{name}: {Errors.for_code(code).__name__} {message or ''}".strip()
                for name, code, message in errors
                if code not in (0, Errors.TopicAlreadyExistsError.errno)
            ]
            if failures:
                raise TopicMismatchError("\n  - ".join(["could not create topics:", *failures]))
            # Created meanwhile (a concurrent `topics create`, or the listing lagged behind): checked below.
            existing |= {name for name, code, _ in errors if code == Errors.TopicAlreadyExistsError.errno}
            created = [s for s in missing if s.name not in existing]
            await _wait_for_leaders(admin, [s.name for s in missing])
            report += [f"created {s.name} ({s.partitions} partitions)" for s in created]
        elif missing:
            report += [f"missing {s.name}" for s in missing]
        present = [s for s in specs if s.name in existing]
        problems, actual = await _compare(admin, present, brokers)
        problems += check_copartitioning(specs, actual)
        if problems:
            raise TopicMismatchError("\n  - ".join(["existing topics disagree with their declaration:", *problems]))
        report += [f"ok {s.name}" for s in present]
        if missing and not create:
            raise TopicMismatchError("\n  - ".join(["topics are missing:", *(s.name for s in missing)]))
        return report
    finally:
        await admin.close()


DURABILITY_HINTS = {
    MIN_ISR: "acknowledged writes must rest on that many replicas; fix it with kafka-configs --alter "
    "--entity-type topics --entity-name {topic} --add-config min.insync.replicas={value}, or declare "
    "another value with TOPICS_MIN_INSYNC_REPLICAS",
    UNCLEAN: "an out-of-sync replica elected leader drops acknowledged records; fix it with kafka-configs "
    "--alter --entity-type topics --entity-name {topic} --add-config unclean.leader.election.enable=false",
}


async def _compare(
    admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], brokers: int
) -> tuple[list[str], dict[str, int]]:
    if not specs:
        return [], {}
    described = await admin.describe_topics([s.name for s in specs])
    by_name = {t["topic"]: t for t in described}
    actual_config = await _topic_configs(admin, [s.name for s in specs])
    problems: list[str] = []
    partitions: dict[str, int] = {}
    for spec in specs:
        topic = by_name[spec.name]
        count = len(topic["partitions"])
        partitions[spec.name] = count
        if count != spec.partitions and spec.copartition_group is None:
            problems.append(f"{spec.name}: {count} partitions, declared {spec.partitions}")
        elif count != spec.partitions:
            problems.append(f"{spec.name}: {count} partitions, declared {spec.partitions} (co-partitioned)")
        replicas = len(topic["partitions"][0]["replicas"]) if topic["partitions"] else 0
        wanted_rf, durability = spec.durability(brokers)
        if replicas != wanted_rf:
            problems.append(f"{spec.name}: replication factor {replicas}, declared {wanted_rf}")
        for key, value in spec.declared_config(brokers).items():
            have = actual_config.get(spec.name, {}).get(key)
            if have != value:
                hint = f" ({DURABILITY_HINTS[key].format(topic=spec.name, value=value)})" if key in durability else ""
                problems.append(f"{spec.name}: {key}={have}, declared {value}{hint}")
    return problems, partitions


async def _topic_configs(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 15.0
) -> dict[str, dict[str, str]]:
    """Every topic's configuration; asked again while a broker does not know a topic yet (just created)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
        # (error_code, error_message, resource_type, resource_name, config_entries)
        resources = [resource for response in responses for resource in response.resources]
        if refused := [r[3] for r in resources if r[0] == TOPIC_AUTHORIZATION_FAILED]:  # not worth asking again
            raise not_authorized(
                TopicOp.DESCRIBE_CONFIGS.tool_name, "topic" if len(refused) == 1 else "topics", refused
            )
        errors = [f"{r[3]}: {Errors.for_code(r[0]).__name__}" for r in resources if r[0] != 0]
        if not errors:
            return {r[3]: {entry[0]: entry[1] for entry in r[4]} for r in resources}
        if asyncio.get_running_loop().time() > deadline:
            raise TopicMismatchError("\n  - ".join(["could not read the configuration of topics:", *errors]))
        await asyncio.sleep(0.2)


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    """Creation returns before every partition has a leader; clients started at once would stall."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TopicMismatchError(f"topics created but without leaders after {timeout_s}s: {', '.join(names)}")
        await asyncio.sleep(0.1)


def topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    # CreateTopicsResponse v0 has (topic, code); v1+ adds the message.
    rows = getattr(response, "topic_errors", [])
    return [(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]
