"""Which timer each entry of a store implies: the one rule the processor arms timers by and the restore derives
them by.

Timers are not state of their own. A dedupe entry expires at its ``received_at`` + ``dedupe_retention``, rounded up
to ``dedupe_bucket`` (expiries fire in batches); a job with an open pending times out at its deadline (the jobs
store keeps an account's jobs in one entry: each open one implies a timer). So the timers store (``TIMERS``, not
logged) is an index of the dedupe and jobs stores by due time: the processor writes it with its owners, the task's
transactions commit it to the local store with them, and a restore rebuilds it from the owners' changelog records
(``timers_of``, for every record restored). A restored index can hold more than the owners imply (an owner changed
or deleted by a changelog record after the local checkpoint leaves its old timer behind); never less. So a timer is
checked against its owner when it fires, and an obsolete one is only deleted (a dedupe entry whose own expiry is
not due yet gets its timer armed again: ``AccountProcessor._expire``).

Stream time (the ``CLOCK_KEY`` entry) is kept in the same store and is not derived: after a restore it is the
local checkpoint's, or none (restored from scratch), then moved on by the next record or punctuation. It is
therefore never higher than the clock the partition had reached: timers fire later after a restore, never
earlier. (The dedupe entries' ``received_at`` would not be a safe lower bound: a record's event time is its
``received_at`` capped at broker append time + ``max_clock_skew``, which the entry does not keep.)
"""

from __future__ import annotations

from typing import Any

from processors.logic.config import LogicConfig
from processors.logic.join import AccountJobs, JobState
from processors.logic.keys import TimerKey, TimerKind, join_key
from processors.logic.stores import DEDUPE, JOBS
from processors.logic.timeutil import span_us

#: The stores whose entries own the timers.
TIMER_OWNERS: tuple[str, ...] = (DEDUPE, JOBS)


class TimerRules:
    """The due times of the timers, for one ``LogicConfig``."""

    __slots__ = ("_bucket_us", "_retention_us")

    def __init__(self, config: LogicConfig) -> None:
        self._retention_us = span_us(config.dedupe_retention)
        self._bucket_us = span_us(config.dedupe_bucket)

    def dedupe_due(self, received_us: int) -> int:
        """When a dedupe entry of ``received_us`` expires: retention later, rounded up to the bucket."""
        bucket = self._bucket_us
        return -(-(received_us + self._retention_us) // bucket) * bucket

    def dedupe_timer(self, event_id: str, received_us: int) -> TimerKey:
        return TimerKey(self.dedupe_due(received_us), TimerKind.DEDUPE, event_id)

    @staticmethod
    def job_due(state: JobState) -> int | None:
        """When a job's open pending times out, if it has one: the due time of its ``job_timer``."""
        current = state.open
        return None if current is None else current.deadline_us

    @staticmethod
    def job_timer(join_key: str, state: JobState) -> TimerKey | None:
        """The timeout of a job's open pending, if it has one."""
        due = TimerRules.job_due(state)
        return None if due is None else TimerKey(due, TimerKind.JOB, join_key)

    def timers_of(self, store: str, key: str, value: Any) -> list[TimerKey]:
        """The timers the entry ``key`` -> ``value`` of ``store`` implies (its decoded value): a dedupe entry's
        expiry; the timeout of each of an account's jobs with an open pending (none for a closed job); none for
        a store that owns no timer."""
        if store == DEDUPE:
            return [self.dedupe_timer(key, value)]
        if store == JOBS:
            jobs: AccountJobs = value
            timers = (self.job_timer(join_key(key, event_type), state) for event_type, state in jobs.items())
            return [timer for timer in timers if timer is not None]
        return []
