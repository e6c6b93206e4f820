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
from processors.logic.timeutil import time_out


class Change(StrEnum):
    """What an account update is about (the ``change`` enum of ``pinwheel.AccountUpdate``)."""

    ACCOUNT_CONNECTED = "account_connected"  # account.added
    MONITORING_STATUS_CHANGED = "monitoring_status_changed"
    CONNECTIONS_RECOMMENDED = "additional_connections_recommended"
    JOB_PENDING = "job_pending"
    JOB_SUCCEEDED = "job_succeeded"
    JOB_FAILED = "job_failed"
    JOB_TIMED_OUT = "job_timed_out"
    SYNC_PROGRESSED = "sync_progressed"  # successful *_synced milestone
    #: Not (yet) in schemas/avro AccountChange: a pending that arrived after its job was over.
    JOB_STALE = "job_stale"
    #: Not (yet) in schemas/avro AccountChange: any other event of the account (newer types included).
    EVENT_RECORDED = "event_recorded"


def envelope_to_dict(envelope: EventEnvelope, micros: bool = False) -> dict[str, Any]:
    t = time_out(micros)
    return {
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "family": envelope.family,
        "sent_at": t(envelope.sent_at_us),
        "received_at": t(envelope.received_at_us),
    }


class AccountUpdate(NamedTuple):
    """One record of ``pinwheel.account_updates.v1`` (key: account_id)."""

    update_id: str  # "<event_id>" or "<first pending event_id>:timed_out"
    account_id: str
    change: Change
    trigger: EventEnvelope  # the event that caused it; for a timeout, the job's first pending
    outcome: JobOutcome | None
    account: AccountState  # the account after the change; published as its context (``context_dict``)

    @property
    def key(self) -> str:
        return self.account_id

    def to_dict(self, micros: bool = False) -> dict[str, Any]:
        """``micros=True``: timestamps as epoch µs ints (Avro-ready, cheaper than datetimes)."""
        return {
            "update_id": self.update_id,
            "account_id": self.account_id,
            "change": self.change.value,
            "trigger": envelope_to_dict(self.trigger, micros),
            "outcome": None if self.outcome is None else self.outcome.to_dict(micros),
            "account": self.account.context_dict(micros),
        }


class AccountStateSnapshot(NamedTuple):
    """One record of the compacted ``pinwheel.account_state.v1`` (key: account_id)."""

    account: AccountState

    @property
    def key(self) -> str:
        return self.account.account_id

    def to_dict(self, micros: bool = False) -> dict[str, Any]:
        return self.account.to_dict(micros)


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

    def to_dict(self, micros: bool = False) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "account_key": self.account_key,
            "reason": self.reason,
            "error": self.error,
        }


Output = AccountUpdate | AccountStateSnapshot | DeadLetter
