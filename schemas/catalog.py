"""Event catalog: every Pinwheel event type → family → topic, and the partition-key rule.

The catalog is the one place that knows which events exist. Typed families hold exactly the event types
documented in pinwheel-webhooks.md; every other type (the newer documented ones, a future `account.*`
type, anything unknown) is routed to the `other` family, whose record keeps the payload as JSON text, so
no event is lost for lack of a model.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any


class Family(StrEnum):
    ACCOUNT = "account"
    DIRECT_DEPOSIT = "direct_deposit"
    INCOME_EMPLOYMENT = "income_employment"
    PAYSTUBS = "paystubs"
    SHIFTS = "shifts"
    OTHER = "other"


def topic_for(family: Family) -> str:
    return f"pinwheel.{family.value}.v1"


FAMILY_TOPICS: Mapping[Family, str] = MappingProxyType({family: topic_for(family) for family in Family})
ACCOUNT_UPDATES_TOPIC = "pinwheel.account_updates.v1"
ACCOUNT_STATE_TOPIC = "pinwheel.account_state.v1"
DEADLETTER_TOPIC = "pinwheel.deadletter.v1"
ACCOUNT_READINESS_TOPIC = "pinwheel.account_readiness.v1"
"""`account_ready` / `account_blocked` alone (docs/consuming.md "Readiness"): what a decision service subscribes to."""

#: The family topics, as a set: is this a topic the gateway writes events to?
FAMILY_TOPIC_NAMES: frozenset[str] = frozenset(FAMILY_TOPICS.values())
#: What the gateway writes: each event to its family topic, what it cannot route to the dead-letter topic.
GATEWAY_TOPICS: tuple[str, ...] = (*FAMILY_TOPICS.values(), DEADLETTER_TOPIC)
#: What the account pipeline writes (besides its changelogs, `changelog_topic`).
OUTPUT_TOPICS: tuple[str, ...] = (ACCOUNT_UPDATES_TOPIC, ACCOUNT_STATE_TOPIC, ACCOUNT_READINESS_TOPIC, DEADLETTER_TOPIC)
#: Every topic of records ours write, the changelogs aside: the families and the pipeline's outputs.
DATA_TOPICS: tuple[str, ...] = (*FAMILY_TOPICS.values(), *OUTPUT_TOPICS)


def changelog_topic(application_id: str, store: str) -> str:
    """The compacted changelog topic backing a processors' state store (Kafka Streams' naming rule). Which stores
    exist is the processors' to declare (`processors.logic.stores.STORES`; `processors.topics.changelog_topics`)."""
    return f"{application_id}-{store}-changelog"


def entry_log_topic(application_id: str, store: str) -> str:
    """The time-retained log backing a processors' store whose entries expire by time (one record per
    transaction holding the entries it put: `processors.logic.stores.StoreSpec.expiring`)."""
    return f"{application_id}-{store}-log"


ACCOUNT_ADDED = "account.added"
ACCOUNT_CONNECTIONS_RECOMMENDED = "account.additional_connections_recommended"
ACCOUNT_MONITORING_STATUS_UPDATED = "account.monitoring_status.updated"
ACCOUNT_EVENT_TYPES: frozenset[str] = frozenset(
    {ACCOUNT_ADDED, ACCOUNT_CONNECTIONS_RECOMMENDED, ACCOUNT_MONITORING_STATUS_UPDATED}
)
"""The account family's event types: facts about the account, not jobs."""

SYNC_DATASETS = ("paystubs", "shifts")
SYNC_LEVELS = ("seven_days", "thirty_days", "ninety_days", "fully")
"""Milestones of a dataset's sync, shallowest first: `<dataset>.<level>_synced` events."""

SYNC_BATCH_EVENTS: Mapping[str, str] = MappingProxyType({f"{dataset}.added": dataset for dataset in SYNC_DATASETS})
"""Event type of a synced batch → its dataset."""

SYNC_MILESTONE_EVENTS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {f"{dataset}.{level}_synced": (dataset, level) for dataset in SYNC_DATASETS for level in SYNC_LEVELS}
)
"""Event type of a sync milestone → (dataset, level)."""

PAYSTUBS_SYNC_EVENTS = frozenset(t for t, (dataset, _) in SYNC_MILESTONE_EVENTS.items() if dataset == "paystubs")
SHIFTS_SYNC_EVENTS = frozenset(t for t, (dataset, _) in SYNC_MILESTONE_EVENTS.items() if dataset == "shifts")

EVENT_FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        **dict.fromkeys(sorted(ACCOUNT_EVENT_TYPES), Family.ACCOUNT),
        "direct_deposit_allocations.added": Family.DIRECT_DEPOSIT,
        "direct_deposit_switch.added": Family.DIRECT_DEPOSIT,
        "employment.added": Family.INCOME_EMPLOYMENT,
        "identity.added": Family.INCOME_EMPLOYMENT,
        "income.added": Family.INCOME_EMPLOYMENT,
        "paystubs.added": Family.PAYSTUBS,
        **dict.fromkeys(sorted(PAYSTUBS_SYNC_EVENTS), Family.PAYSTUBS),
        "shifts.added": Family.SHIFTS,
        **dict.fromkeys(sorted(SHIFTS_SYNC_EVENTS), Family.SHIFTS),
    }
)
"""Event types with a typed payload model (pinwheel-webhooks.md)."""

MODELLED_EVENT_TYPES: frozenset[str] = frozenset(EVENT_FAMILIES)

NEWER_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "paystubs.documents.added",
        "tax_forms.added",
        "documents.added",
        "verification_reports.refreshed",
        "earnings_stream.payouts.refreshed",
        "paycheck_viewer.added",
        "company_connect.census.added",
        "company_connect.employments.added",
        "company_connect.incomes.added",
        "company_connect.status.updated",
        "bill_switch.added",
        "bill_switch.cancelled",
        "bill.added",
        "bill.updated",
        "bill.removed",
        "bill.reminder",
    }
)
"""Documented in newer API versions (PINWHEEL-NOTES.md) but not modelled: they go to the `other` family."""

KNOWN_EVENT_TYPES: frozenset[str] = MODELLED_EVENT_TYPES | NEWER_EVENT_TYPES

JOB_EVENT_TYPES: frozenset[str] = MODELLED_EVENT_TYPES - ACCOUNT_EVENT_TYPES
"""Job events of pinwheel-webhooks.md: each carries `outcome` and `timestamp`."""

PENDING = "pending"
SUCCESS = "success"
ERROR = "error"
FINAL_OUTCOMES: frozenset[str] = frozenset({SUCCESS, ERROR})
JOB_OUTCOMES: frozenset[str] = FINAL_OUTCOMES | {PENDING}
"""The values of a job event's `outcome`: `pending` is resolved later by a `success` or `error`."""
TIMED_OUT = "timed_out"
"""The outcome the processors publish for a pending job whose final never came (not a Pinwheel value)."""

ACCOUNT_READY = "account_ready"
ACCOUNT_BLOCKED = "account_blocked"
READINESS_STATUSES = (ACCOUNT_READY, ACCOUNT_BLOCKED)
BLOCKED_ERROR = "error"
BLOCKED_TIMEOUT = "timeout"
BLOCKED_USER_ACTION = "user_action_required"
BLOCKED_REASONS = (BLOCKED_ERROR, BLOCKED_TIMEOUT, BLOCKED_USER_ACTION)
"""Why an account is blocked: a required job failed (`error`), timed out (`timeout`), or Pinwheel needs the user
to log in again (`user_action_required`, the monitoring status of that name)."""
USER_ACTION_REQUIRED = "user_action_required"
"""The `account.monitoring_status.updated` status that needs the user back in Link (On Demand Updates)."""

DEFAULT_READINESS_RULE = "income.added, employment.added, paystubs.thirty_days_synced"
"""The readiness rule when `READINESS_RULE` is unset: income and employment succeeded and 30 days of paystubs
are synced (docs/consuming.md "Readiness")."""

SUBSCRIPTION_BASE_EVENTS: frozenset[str] = frozenset({ACCOUNT_ADDED, ACCOUNT_MONITORING_STATUS_UPDATED})
"""Event types every deployment needs in its Pinwheel subscription besides those of its readiness rule: the account
table's identity and the monitoring status that blocks readiness (`user_action_required`)."""

OCCURRED_AT_FIELDS: Mapping[str, str] = MappingProxyType(
    {ACCOUNT_ADDED: "created_at", ACCOUNT_MONITORING_STATUS_UPDATED: "updated_at"}
)
"""The payload field holding the event's own time, where it is not `timestamp` (job events and the rest)."""


def is_job(event_type: str, outcome: object) -> bool:
    """A job event: a documented job type, or any type that carries an `outcome` (newer API versions)."""
    return outcome is not None or event_type in JOB_EVENT_TYPES


def occurred_at_field(event_type: str) -> str:
    return OCCURRED_AT_FIELDS.get(event_type, "timestamp")


def family_of(event_type: str) -> Family:
    return EVENT_FAMILIES.get(event_type, Family.OTHER)


# Fallback order for events without an account (architecture.md topic table). event_id is the last resort.
_OTHER_KEY_FIELDS = ("account_id", "end_user_id", "company_connection_id")


@lru_cache(maxsize=65_536)
def normalise_id(value: str) -> str:
    # Co-partitioning compares key bytes: the same account must give the same bytes on every topic,
    # so UUIDs are written in their canonical lowercase form whatever case Pinwheel used. Cached: the same
    # accounts come back all the time, and parsing a UUID costs more than a dictionary lookup.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def partition_key(event_type: str, event_id: str, payload: Any) -> str:
    """The record key string of an event (its UTF-8 bytes are the Kafka key).

    Typed families: `account_id` (their models require it). `other`: account_id, else end_user_id,
    else company_connection_id, else event_id — the first one that is a non-empty string.
    """
    if isinstance(payload, Mapping):
        fields = ("account_id",) if family_of(event_type) is not Family.OTHER else _OTHER_KEY_FIELDS
        for name in fields:
            value = payload.get(name)
            if isinstance(value, str) and value:
                return normalise_id(value)
    return event_id
