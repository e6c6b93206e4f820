"""What the processor emits: account updates, account state snapshots and dead letters.

Outputs are immutable and hold immutable state, so the runtime can serialize them whenever it likes.
``to_dict()`` gives plain dicts for the Avro writer: datetimes stay ``datetime``, absent values are ``None``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from processors.logic.account_table import AccountState
from processors.logic.events import EventEnvelope
from processors.logic.join import JobOutcome
from processors.logic.timeutil import from_us, opt_from_us


class Change(StrEnum):
    """What an account update is about (the ``change`` enum of ``pinwheel.AccountUpdate``)."""

    ACCOUNT_ADDED = "account_added"
    MONITORING_STATUS_CHANGED = "monitoring_status_changed"
    CONNECTIONS_RECOMMENDED = "connections_recommended"
    JOB_PENDING = "job_pending"
    JOB_OUTCOME = "job_outcome"
    JOB_TIMED_OUT = "job_timed_out"
    JOB_STALE = "job_stale"
    SYNC_PROGRESS = "sync_progress"
    EVENT_RECORDED = "event_recorded"


def envelope_to_dict(envelope: EventEnvelope) -> dict[str, Any]:
    return {
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "family": envelope.family,
        "sent_at": opt_from_us(envelope.sent_at_us),
        "received_at": from_us(envelope.received_at_us),
    }


class AccountUpdate(NamedTuple):
    """One record of ``pinwheel.account_updates.v1``."""

    update_id: str  # "<event_id>" or "<first pending event_id>:timed_out"
    account_key: str
    account_id: str | None
    change: Change
    event: EventEnvelope
    outcome: JobOutcome | None
    #: The account after the change; None for events that carry no account_id.
    account: AccountState | None

    @property
    def key(self) -> str:
        return self.account_id if self.account_id is not None else self.account_key

    def to_dict(self) -> dict[str, Any]:
        return {
            "update_id": self.update_id,
            "account_id": self.account_id,
            "account_key": self.account_key,
            "change": self.change.value,
            "event": envelope_to_dict(self.event),
            "outcome": None if self.outcome is None else self.outcome.to_dict(),
            "account": None if self.account is None else self.account.to_dict(),
        }


class AccountStateSnapshot(NamedTuple):
    """One record of the compacted ``pinwheel.account_state.v1`` (key: account_id)."""

    account: AccountState

    @property
    def key(self) -> str:
        account = self.account
        return account.account_id if account.account_id is not None else account.account_key

    def to_dict(self) -> dict[str, Any]:
        return self.account.to_dict()


class DeadLetter(NamedTuple):
    """An event the logic rejects. The runtime adds stage=processor, source topic/partition/offset, headers
    and the raw bytes; ``error`` never contains payload data."""

    event_id: str
    event_type: str
    account_key: str
    reason: str
    error: str

    @property
    def key(self) -> str:
        return self.event_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "account_key": self.account_key,
            "reason": self.reason,
            "error": self.error,
        }


Output = AccountUpdate | AccountStateSnapshot | DeadLetter
