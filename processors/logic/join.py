"""The pending/final join: one small state machine per join key ``<account_key>|<event_type>``.

Pure functions from (state, event) to (state, result). Times are epoch microseconds of payload time
(``occurred_at``), except the timeout deadline, which is compared with stream time by the processor.
See docs/processing.md "Pending/final join" for the rules; the comments here say why, not what.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple, final

from processors.logic.events import EventEnvelope
from schemas import catalog


class JobOutcome(NamedTuple):
    """One job outcome as published (``outcome`` of an update, entries of ``AccountState.products``)."""

    job: str  # job name: payload ``name`` (e.g. "paystubs"), else the event type
    job_id: str | None
    outcome: str  # success | error | pending | timed_out
    error_code: str | None
    error_type: str | None
    pending_since_us: int | None
    resolved_at_us: int | None
    deliveries_seen: int
    #: Latest payload time known for this job: orders outcomes of one product (last writer wins).
    as_of_us: int

    @property
    def time_to_resolve_ms(self) -> int | None:
        if self.pending_since_us is None or self.resolved_at_us is None:
            return None
        return (self.resolved_at_us - self.pending_since_us) // 1000


class OpenJob(NamedTuple):
    """A job known to be pending (or, in ``JobState.timed_out``, one that timed out)."""

    job_id: str | None
    pending_since_us: int  # earliest pending payload time
    last_pending_us: int  # latest pending payload time
    deliveries: int  # distinct pending events seen
    deadline_us: int  # pending_since + pending_timeout + grace, compared with stream time
    first: EventEnvelope  # the first pending processed: the envelope and id of the timed_out update
    job: str  # job name, for the timed_out outcome


class JobState(NamedTuple):
    open: OpenJob | None = None
    #: Highest payload time of a final (or of the last pending of a timed-out job): a pending at or before
    #: it belongs to a job that is already over and must not reopen it.
    closed_through_us: int | None = None
    #: The last timed-out job, kept so that a late final still joins with it (within its window).
    timed_out: OpenJob | None = None


#: The join states of one account: ``JobState`` by event type (the join key's second part). One value per
#: account, so that the account's state records can carry them (``processors.logic.stores``).
AccountJobs = Mapping[str, JobState]


class JoinKind(StrEnum):
    OPENED = "opened"  # first pending of a job
    PENDING_AGAIN = "pending_again"  # another pending event for the open job
    STALE_PENDING = "stale_pending"  # pending at or before closed_through: ignored
    JOINED = "joined"  # final that closes the open job
    LATE_JOINED = "late_joined"  # final that closes a job which already timed out
    DIRECT = "direct"  # final with no pending known
    TIMED_OUT = catalog.TIMED_OUT


@final
@dataclass(init=False)
class JoinResult:
    """What a join step did (a class with its own ``__init__``, built per job event: see ``outputs``)."""

    state: Final[JobState]
    kind: Final[JoinKind]
    outcome: Final[JobOutcome | None]  # None only for STALE_PENDING

    def __init__(self, state: JobState, kind: JoinKind, outcome: JobOutcome | None) -> None:
        self.state = state
        self.kind = kind
        self.outcome = outcome


def _max(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


def apply_pending(
    state: JobState | None,
    *,
    job: str,
    job_id: str | None,
    occurred_us: int,
    envelope: EventEnvelope,
    window_us: int,
) -> JoinResult:
    """A ``pending`` event. ``window_us`` = pending_timeout + timeout_grace."""
    if state is None:
        state = JobState()
    closed = state.closed_through_us
    if closed is not None and occurred_us <= closed:
        return JoinResult(state, JoinKind.STALE_PENDING, None)
    current = state.open
    if current is None:
        opened = OpenJob(job_id, occurred_us, occurred_us, 1, occurred_us + window_us, envelope, job)
        kind = JoinKind.OPENED
    else:
        # Reordered pendings of one job: pending_since is the earliest, so the deadline only moves earlier.
        since = min(current.pending_since_us, occurred_us)
        opened = OpenJob(
            current.job_id if current.job_id is not None else job_id,
            since,
            max(current.last_pending_us, occurred_us),
            current.deliveries + 1,
            since + window_us,
            current.first,
            current.job,
        )
        kind = JoinKind.PENDING_AGAIN
    outcome = JobOutcome(
        job,
        opened.job_id,
        catalog.PENDING,
        None,
        None,
        opened.pending_since_us,
        None,
        opened.deliveries,
        opened.last_pending_us,
    )
    return JoinResult(JobState(opened, closed, state.timed_out), kind, outcome)


def apply_final(
    state: JobState | None,
    *,
    job: str,
    job_id: str | None,
    outcome: str,
    error_code: str | None,
    error_type: str | None,
    occurred_us: int,
    window_us: int,
) -> JoinResult:
    """A ``success`` or ``error`` event."""
    if state is None:
        state = JobState()
    closed = _max(state.closed_through_us, occurred_us)
    current = state.open
    # A final older than the open job's first pending cannot resolve it: it is a late final of an earlier job.
    if current is not None and occurred_us >= current.pending_since_us:
        return JoinResult(
            JobState(None, closed, state.timed_out),
            JoinKind.JOINED,
            _joined(job, job_id, outcome, error_code, error_type, occurred_us, current),
        )
    expired = state.timed_out
    # Pinwheel resolves a pending job within its window: a later final belongs to a newer job.
    if expired is not None and 0 <= occurred_us - expired.pending_since_us <= window_us:
        return JoinResult(
            JobState(current, closed, None),
            JoinKind.LATE_JOINED,
            _joined(job, job_id, outcome, error_code, error_type, occurred_us, expired),
        )
    direct = JobOutcome(job, job_id, outcome, error_code, error_type, None, occurred_us, 1, occurred_us)
    return JoinResult(JobState(current, closed, expired), JoinKind.DIRECT, direct)


def _joined(
    job: str,
    job_id: str | None,
    outcome: str,
    error_code: str | None,
    error_type: str | None,
    occurred_us: int,
    pending: OpenJob,
) -> JobOutcome:
    return JobOutcome(
        job,
        job_id if job_id is not None else pending.job_id,
        outcome,
        error_code,
        error_type,
        pending.pending_since_us,
        occurred_us,
        pending.deliveries + 1,
        max(occurred_us, pending.last_pending_us),
    )


def apply_timeout(state: JobState | None, *, deadline_us: int) -> JoinResult | None:
    """The timer of ``deadline_us`` fired. ``None`` when it no longer applies (job closed or re-timed)."""
    if state is None or state.open is None or state.open.deadline_us != deadline_us:
        return None
    current = state.open
    outcome = JobOutcome(
        current.job,
        current.job_id,
        catalog.TIMED_OUT,
        None,
        None,
        current.pending_since_us,
        None,
        current.deliveries,
        current.last_pending_us,
    )
    closed = _max(state.closed_through_us, current.last_pending_us)
    return JoinResult(JobState(None, closed, current), JoinKind.TIMED_OUT, outcome)
