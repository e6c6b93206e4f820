"""What the processor emits: account updates, account state snapshots and dead letters.

Outputs are immutable and hold immutable state, so the runtime can serialize them whenever it likes; how they
look on the output topics is ``processors.wire``'s business.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from processors.logic.account_table import AccountState
from processors.logic.events import EventEnvelope
from processors.logic.join import JobOutcome
from processors.logic.readiness import Verdict


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


class AccountUpdate(NamedTuple):
    """One record of ``pinwheel.account_updates.v1`` (key: account_id)."""

    update_id: str  # "<event_id>" or "<first pending event_id>:timed_out"
    account_id: str
    change: Change
    trigger: EventEnvelope  # the event that caused it; for a timeout, the job's first pending
    outcome: JobOutcome | None
    account: AccountState  # the account after the change; published as its context

    @property
    def key(self) -> str:
        return self.account_id


class AccountStateSnapshot(NamedTuple):
    """One record of the compacted ``pinwheel.account_state.v1`` (key: account_id)."""

    account: AccountState

    @property
    def key(self) -> str:
        return self.account.account_id


class RejectedEvent(NamedTuple):
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


class ReadinessUpdate(NamedTuple):
    """One record of ``pinwheel.account_readiness.v1`` (key: account_id): the account became ready or blocked."""

    readiness_id: str  # "<update_id>:<status>": the account update that decided it, then the verdict
    account_id: str
    verdict: Verdict
    rule: str  # the rule it was judged against (normalised text)
    trigger: EventEnvelope  # the event of the deciding update (for a timeout, the job's first pending)
    account: AccountState  # the account after the change

    @property
    def key(self) -> str:
        return self.account_id


Output = AccountUpdate | AccountStateSnapshot | ReadinessUpdate | RejectedEvent
