"""Every topic the connector reads or writes, declared once (common/topics.py creates and checks them).

The family topics, the account update, state and readiness topics and the dead-letter topic are named in `catalog`;
the processors' state stores (`catalog.STORE_NAMES`) each have a compacted changelog named by
`catalog.changelog_topic`.
"""

from __future__ import annotations

from common.topics import DAY_MS, TopicSettings, TopicSpec
from schemas import catalog

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A dead letter carries a whole family record and more: its topic takes twice the family topics' limit, so the
# dead letter of any record the family topics accepted fits (the processors' producers allow as much).
DEADLETTER_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES

# Co-partitioning group of everything a processor task reads or restores together.
ACCOUNT_PARTITIONED = "account-keyed"


def all_topics(settings: TopicSettings | None = None) -> list[TopicSpec]:
    """Every topic the connector reads or writes."""
    s = settings or TopicSettings()
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
        TopicSpec(catalog.changelog_topic(s.processor_application_id, store), s.partitions, dict(compacted),
                  ACCOUNT_PARTITIONED, rf, min_isr)
        for store in catalog.STORE_NAMES
    ]  # fmt: skip
    specs += [
        TopicSpec(catalog.ACCOUNT_UPDATES_TOPIC, s.partitions, dict(retention), None, rf, min_isr),
        TopicSpec(catalog.ACCOUNT_STATE_TOPIC, s.partitions, dict(compacted), None, rf, min_isr),
        TopicSpec(catalog.ACCOUNT_READINESS_TOPIC, s.partitions, dict(retention), None, rf, min_isr),
        TopicSpec(catalog.DEADLETTER_TOPIC, s.partitions, dict(deadletter), None, rf, min_isr),
    ]
    return specs
