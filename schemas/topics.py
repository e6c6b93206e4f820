"""How every topic the connector reads or writes is configured (common/topics.py creates and checks them).

The family topics, the account update, state and readiness topics and the dead-letter topic are named in `catalog`.
The processors' changelogs (one per state store, named by `catalog.changelog_topic`) are configured here too, but
which stores exist is the processors' to say (`processors.logic.stores.STORES`): `processors.topics.all_topics` is
the full list, this module's `topic_specs` given those changelog names.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.topics import DAY_MS, TopicSettings, TopicSpec
from schemas import catalog

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A dead letter carries a whole family record and more: its topic takes twice the family topics' limit, so the
# dead letter of any record the family topics accepted fits (the processors' producers allow as much).
DEADLETTER_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES

# Co-partitioning group of everything a processor task reads or restores together.
ACCOUNT_PARTITIONED = "account-keyed"


def topic_specs(s: TopicSettings, changelogs: Iterable[str], logs: Iterable[str] = ()) -> list[TopicSpec]:
    """Every topic the connector reads or writes, `changelogs` being the processors' compacted changelog topics
    and `logs` their time-retained ones (a store whose entries expire: kept as long as the family topics, which
    the dedupe retention may not exceed: `processors.settings`)."""
    retention = {"cleanup.policy": "delete", "retention.ms": str(s.retention_days * DAY_MS)}
    # A 1 MiB body (the gateway's cap) encodes to up to about twice that (raw bytes + typed payload).
    large = {**retention, "max.message.bytes": str(MAX_MESSAGE_BYTES)}
    # The broker's clock stamps family records: stream time is bounded by it, so a record whose received_at
    # jumped ahead (a gateway clock jump) cannot carry the processors' stream time days forward.
    family = {**large, "message.timestamp.type": "LogAppendTime"}
    deadletter = {**retention, "max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES)}
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(DAY_MS)}
    rf, min_isr = s.replication_factor, s.min_insync_replicas
    specs = [
        TopicSpec(topic, s.partitions, dict(family), ACCOUNT_PARTITIONED, rf, min_isr)
        for topic in catalog.FAMILY_TOPICS.values()
    ]
    specs += [
        TopicSpec(changelog, s.partitions, dict(compacted), ACCOUNT_PARTITIONED, rf, min_isr)
        for changelog in changelogs
    ]
    specs += [TopicSpec(log, s.partitions, dict(retention), ACCOUNT_PARTITIONED, rf, min_isr) for log in logs]
    specs += [
        TopicSpec(catalog.ACCOUNT_UPDATES_TOPIC, s.partitions, dict(retention), None, rf, min_isr),
        TopicSpec(catalog.ACCOUNT_STATE_TOPIC, s.partitions, dict(compacted), None, rf, min_isr),
        TopicSpec(catalog.ACCOUNT_READINESS_TOPIC, s.partitions, dict(retention), None, rf, min_isr),
        TopicSpec(catalog.DEADLETTER_TOPIC, s.partitions, dict(deadletter), None, rf, min_isr),
    ]
    return specs
