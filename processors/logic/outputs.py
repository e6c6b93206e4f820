"""What the processor emits: account updates, account state snapshots and dead letters.

Outputs are immutable and hold immutable state, so the runtime can serialize them whenever it likes; how they
look on the output topics is ``processors.wire``'s business. Each is a class with its own ``__init__`` and
``Final`` fields (the dataclass gives it equality and its repr only): compiled (setup.py), one is built in a
tenth of a named tuple's time, whose constructor runs as Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, final

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


@final
@dataclass(init=False)
class AccountUpdate:
    """One record of ``pinwheel.account_updates.v1`` (key: account_id)."""

    update_id: Final[str]  # "<event_id>" or "<first pending event_id>:timed_out"
    account_id: Final[str]
    change: Final[Change]
    trigger: Final[EventEnvelope]  # the event that caused it; for a timeout, the job's first pending
    outcome: Final[JobOutcome | None]
    account: Final[AccountState]  # the account after the change; published as its context

    def __init__(
        self,
        update_id: str,
        account_id: str,
        change: Change,
        trigger: EventEnvelope,
        outcome: JobOutcome | None,
        account: AccountState,
    ) -> None:
        self.update_id = update_id
        self.account_id = account_id
        self.change = change
        self.trigger = trigger
        self.outcome = outcome
        self.account = account

    @property
    def key(self) -> str:
        return self.account_id


@final
@dataclass(init=False)
class AccountStateSnapshot:
    """One record of the compacted ``pinwheel.account_state.v1`` (key: account_id)."""

    account: Final[AccountState]

    def __init__(self, account: AccountState) -> None:
        self.account = account

    @property
    def key(self) -> str:
        return self.account.account_id


@final
@dataclass(init=False)
class RejectedEvent:
    """An event the logic rejects. The runtime adds stage=processor, source topic/partition/offset, headers
    and the raw bytes; ``error`` never contains payload data."""

    event_id: Final[str]
    event_type: Final[str]
    account_key: Final[str]
    reason: Final[str]
    error: Final[str]

    def __init__(self, event_id: str, event_type: str, account_key: str, reason: str, error: str) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.account_key = account_key
        self.reason = reason
        self.error = error

    @property
    def key(self) -> str:
        return self.event_id


@final
@dataclass(init=False)
class ReadinessUpdate:
    """One record of ``pinwheel.account_readiness.v1`` (key: account_id): the account became ready or blocked."""

    readiness_id: Final[str]  # "<update_id>:<status>": the account update that decided it, then the verdict
    account_id: Final[str]
    verdict: Final[Verdict]
    rule: Final[str]  # the rule it was judged against (normalised text)
    trigger: Final[EventEnvelope]  # the event of the deciding update (for a timeout, the job's first pending)
    account: Final[AccountState]  # the account after the change

    def __init__(
        self,
        readiness_id: str,
        account_id: str,
        verdict: Verdict,
        rule: str,
        trigger: EventEnvelope,
        account: AccountState,
    ) -> None:
        self.readiness_id = readiness_id
        self.account_id = account_id
        self.verdict = verdict
        self.rule = rule
        self.trigger = trigger
        self.account = account

    @property
    def key(self) -> str:
        return self.account_id


Output = AccountUpdate | AccountStateSnapshot | ReadinessUpdate | RejectedEvent
