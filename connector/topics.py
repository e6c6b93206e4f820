"""Topics as code: one declaration of every topic, and idempotent provisioning against a cluster.

`ensure_topics` creates what is missing and refuses to paper over what disagrees: a topic with
another partition count, replication factor or configuration is reported, never altered, and topics
that must be co-partitioned (the family topics and the changelogs) must all have one partition count,
or the processors would join partition p of one topic with a different set of accounts in another.
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

from connector.settings import KafkaSettings

DAY_MS = 24 * 3600 * 1000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A dead letter carries a whole family record and more: its topic takes twice the family topics' limit, so the
# dead letter of any record the family topics accepted fits (the processors' producers allow as much).
DEADLETTER_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES

# The processors' state stores; each has a compacted changelog named by `changelog_topic`.
STORE_NAMES = ("dedupe", "jobs", "accounts", "timers")

# Co-partitioning group of everything a processor task reads or restores together.
ACCOUNT_PARTITIONED = "account-keyed"


class TopicSettings(BaseSettings):
    """How topics are created (env prefix `TOPICS_`)."""

    model_config = SettingsConfigDict(env_prefix="TOPICS_", extra="ignore")

    partitions: int = Field(default=6, ge=1, le=10_000, description="Partitions of every account-keyed topic.")
    replication_factor: int | None = Field(
        default=None, ge=1, description="Replication factor; empty means min(3, number of brokers)."
    )
    retention_days: int = Field(default=30, ge=1, description="Retention of the family, update and dead-letter topics.")
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


class TopicMismatchError(RuntimeError):
    """An existing topic disagrees with its declaration."""


def changelog_topic(application_id: str, store: str) -> str:
    return f"{application_id}-{store}-changelog"


def all_topics(settings: TopicSettings | None = None) -> list[TopicSpec]:
    """Every topic the connector reads or writes."""
    from schemas import catalog

    s = settings or TopicSettings()
    retention = {"cleanup.policy": "delete", "retention.ms": str(s.retention_days * DAY_MS)}
    # A 1 MiB body (the gateway's cap) encodes to up to about twice that (raw bytes + typed payload).
    large = {**retention, "max.message.bytes": str(MAX_MESSAGE_BYTES)}
    # The broker's clock stamps family records: stream time is bounded by it, so a record whose received_at
    # jumped ahead (a gateway clock jump) cannot carry the processors' stream time days forward.
    family = {**large, "message.timestamp.type": "LogAppendTime"}
    deadletter = {**retention, "max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES)}
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(DAY_MS)}
    specs = [
        TopicSpec(topic, s.partitions, dict(family), ACCOUNT_PARTITIONED, s.replication_factor)
        for topic in catalog.FAMILY_TOPICS.values()
    ]
    specs += [
        TopicSpec(changelog_topic(s.processor_application_id, store), s.partitions, dict(compacted),
                  ACCOUNT_PARTITIONED, s.replication_factor)
        for store in STORE_NAMES
    ]  # fmt: skip
    specs += [
        TopicSpec(catalog.ACCOUNT_UPDATES_TOPIC, s.partitions, dict(retention), None, s.replication_factor),
        TopicSpec(catalog.ACCOUNT_STATE_TOPIC, s.partitions, dict(compacted), None, s.replication_factor),
        TopicSpec(catalog.DEADLETTER_TOPIC, s.partitions, dict(deadletter), None, s.replication_factor),
    ]
    return specs


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
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        brokers = len(cluster["brokers"])
        existing = set(await admin.list_topics())
        report: list[str] = []
        missing = [s for s in specs if s.name not in existing]
        if missing and create:
            new = [
                NewTopic(s.name, s.partitions, s.replication_factor or min(3, brokers), topic_configs=s.config)
                for s in missing
            ]
            response = await admin.create_topics(new)
            failures = [
                f"{name}: {Errors.for_code(code).__name__} {message or ''}".strip()
                for name, code, message in _topic_errors(response)
                # a concurrent `topics create` may win the race; the checks below still run
                if code not in (0, Errors.TopicAlreadyExistsError.errno)
            ]
            if failures:
                raise TopicMismatchError("\n  - ".join(["could not create topics:", *failures]))
            await _wait_for_leaders(admin, [s.name for s in missing])
            report += [f"created {s.name} ({s.partitions} partitions)" for s in missing]
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


async def _compare(
    admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], brokers: int
) -> tuple[list[str], dict[str, int]]:
    if not specs:
        return [], {}
    described = await admin.describe_topics([s.name for s in specs])
    by_name = {t["topic"]: t for t in described}
    configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs])
    actual_config: dict[str, dict[str, str]] = {}
    for response in configs:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            actual_config[name] = {entry[0]: entry[1] for entry in entries}
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
        wanted_rf = spec.replication_factor or min(3, brokers)
        if replicas != wanted_rf:
            problems.append(f"{spec.name}: replication factor {replicas}, declared {wanted_rf}")
        for key, value in spec.config.items():
            have = actual_config.get(spec.name, {}).get(key)
            if have != value:
                problems.append(f"{spec.name}: {key}={have}, declared {value}")
    return problems, partitions


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


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    # CreateTopicsResponse v0 has (topic, code); v1+ adds the message.
    rows = getattr(response, "topic_errors", [])
    return [(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]
