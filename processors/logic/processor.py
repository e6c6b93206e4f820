"""``AccountProcessor``: dedupe, pending/final join and account table for one input partition.

The runtime owns one instance per partition task and calls ``process`` for each record in offset order and
``on_time`` on punctuation. All state is in ``Stores``; the instance only caches what it can re-read (stream
time, next timer due), so after the runtime restores or rolls back the stores it must build a new instance. It
holds back one write: stream time reaches the timers store at ``flush`` (the runtime's commit), its latest value
once instead of on every record; until then only this instance reads it, from its cache.
Deterministic: outputs depend only on the sequence of calls and their arguments (no wall clock, no random).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Final

from processors.logic.account_table import (
    SYNC_BATCHES,
    SYNC_MILESTONES,
    AccountState,
    SyncProgress,
    apply_account_added,
    apply_monitoring_status,
    apply_recommendations,
    merge_outcome,
    sync_progress,
    touch,
    with_readiness,
)
from processors.logic.config import LogicConfig
from processors.logic.events import Event, EventEnvelope
from processors.logic.join import AccountJobs, JobOutcome, JoinKind, apply_final, apply_pending, apply_timeout
from processors.logic.keys import (
    CLOCK_KEY,
    TIMERS_END,
    TimerKey,
    TimerKind,
    due_prefix,
    join_key,
    split_join_key,
)
from processors.logic.outputs import AccountStateSnapshot, AccountUpdate, Change, Output, ReadinessUpdate, RejectedEvent
from processors.logic.readiness import assess
from processors.logic.stores import Stores
from processors.logic.timers import TimerRules
from processors.logic.timeutil import opt_from_us, span_us, to_us
from schemas import catalog

_NEVER: Final = 10**16
_NO_JOBS: Final[AccountJobs] = {}
#: A watermark that holds no timer back: the calls are the whole input, in order (tests, drivers, benches).
NO_WATERMARK: Final = 2**63 - 1
_UNLOADED: Final = -1

_ACCOUNT_CHANGES: Final = {
    catalog.ACCOUNT_ADDED: Change.ACCOUNT_CONNECTED,
    catalog.ACCOUNT_MONITORING_STATUS_UPDATED: Change.MONITORING_STATUS_CHANGED,
    catalog.ACCOUNT_CONNECTIONS_RECOMMENDED: Change.CONNECTIONS_RECOMMENDED,
}

#: The plain text of each change (an enum's ``value`` is a descriptor call; a lookup costs a fraction of it).
_CHANGE_VALUES: Final = {change: change.value for change in Change}


class AccountProcessor:
    __slots__ = (
        "_accounts",
        "_clock",
        "_clock_moved",
        "_dedupe",
        "_jobs",
        "_max_ids",
        "_next_due",
        "_rule",
        "_rules",
        "_skew_us",
        "_timers",
        "_window_us",
        "config",
        "counters",
    )

    def __init__(self, config: LogicConfig, stores: Stores) -> None:
        self.config = config
        self._dedupe = stores.dedupe
        self._jobs = stores.jobs
        self._accounts = stores.accounts
        self._timers = stores.timers
        self._rules = TimerRules(config)
        self._window_us = span_us(config.pending_timeout + config.timeout_grace)
        self._max_ids = config.max_sync_ids
        self._skew_us = span_us(config.max_clock_skew)
        self._rule = config.readiness
        self._clock: int | None = _UNLOADED
        self._clock_moved = False  # the cached stream time is ahead of the store's: `flush` writes it
        self._next_due = _UNLOADED
        #: Observability only (never affects outputs): duplicate, dead_letter, stale_pending, timed_out, ...
        self.counters: Counter[str] = Counter()

    # -- time ----------------------------------------------------------------------------------------

    @property
    def stream_time(self) -> datetime | None:
        """Max received_at (or ``on_time`` argument) seen by this partition, kept in the timers store."""
        return opt_from_us(self._load_clock())

    def _load_clock(self) -> int | None:
        if self._clock == _UNLOADED:
            self._clock = self._timers.get(CLOCK_KEY)
        return self._clock

    def flush(self) -> None:
        """Write back what the instance holds: stream time, if it moved. Before every commit of the stores (a
        new instance, built on the committed stores, reads stream time from there)."""
        if self._clock_moved:
            clock = self._clock
            assert clock is not None  # moved: loaded, and set
            self._timers.put(CLOCK_KEY, clock)
            self._clock_moved = False

    def _first_due(self, start: str = "") -> int:
        for _key, due in self._timers.range(start, TIMERS_END):
            return due
        return _NEVER

    def _add_timer(self, timer: TimerKey) -> None:
        due_us = timer.due_us
        self._timers.put(timer.encode(), due_us)
        if self._next_due != _UNLOADED and due_us < self._next_due:
            self._next_due = due_us

    def _advance(self, now_us: int, out: list[Output], watermark_us: int) -> None:
        """Move stream time forward (never back) and fire every timer due strictly before it and before
        ``watermark_us``: the runtime's word that every input record of an earlier time has been processed."""
        clock = self._clock
        if clock == _UNLOADED:
            clock = self._load_clock()
        if clock is None or now_us > clock:
            clock = self._clock = now_us
            self._clock_moved = True
        if self._next_due == _UNLOADED:
            self._next_due = self._first_due()
        limit = min(clock, watermark_us)
        if self._next_due >= limit:
            return
        # The timers store is a queue: fired keys are deleted at its head, and a store scanning from ""
        # would step over every deletion not yet compacted away. No timer is due before `_next_due`, and
        # after firing none before `end` (firing adds no timer due before `limit`), so both scans start there.
        start = due_prefix(self._next_due)
        end = due_prefix(limit)  # keys due at exactly `limit` sort after it: not yet due
        # Materialize first: firing deletes keys of the range being read.
        for key, due in list(self._timers.range(start, end)):
            self._timers.delete(key)
            timer = TimerKey.decode(key, due)
            if timer.kind is TimerKind.DEDUPE:
                self._expire(timer.target, limit)
            else:
                self._fire_timeout(timer.target, due, out)
        self._next_due = self._first_due(end)

    def on_time(self, stream_time: datetime, watermark_us: int = NO_WATERMARK) -> list[Output]:
        """Punctuation: advance stream time to ``stream_time`` and emit the timeouts due before it and before
        ``watermark_us``. Idempotent."""
        out: list[Output] = []
        self._advance(to_us(stream_time), out, watermark_us)
        return out

    def event_time(self, event: Event) -> int:
        """The epoch µs ``event`` moves stream time to: its ``received_at``, but no further than the broker's
        append time plus ``max_clock_skew``. The runtime orders a task's records by it."""
        return self._event_time(event, event.received_at_us)

    def _event_time(self, event: Event, received_us: int) -> int:
        logged = event.logged_at_us
        if logged is not None and received_us > (ceiling := logged + self._skew_us):
            return ceiling
        return received_us

    # -- events --------------------------------------------------------------------------------------

    def process(self, event: Event, watermark_us: int = NO_WATERMARK) -> list[Output]:
        """Handle one event; first fire the timers due before its event time and before ``watermark_us``
        (default: none held back, the calls being the only input)."""
        received_us = event.received_at_us
        out: list[Output] = []
        stream_us = self._event_time(event, received_us)
        if stream_us != received_us:
            self.counters["clock_ahead"] += 1  # received_at runs ahead of the broker's clock: time moves less
        self._advance(stream_us, out, watermark_us)
        event_id = event.event_id
        dedupe = self._dedupe
        if dedupe.get(event_id) is not None:
            self.counters["duplicate"] += 1
            return out
        account_id = event.account_id
        is_job = event.is_job
        if account_id is not None and is_job and event.outcome not in catalog.JOB_OUTCOMES:
            # Dead-lettered and not remembered: once a fix makes it valid, its replay goes through.
            self._dead_letter(event, "missing_outcome", f"{event.event_type} carries no outcome", out)
            return out
        dedupe.put(event_id, received_us)
        self._add_timer(self._rules.dedupe_timer(event_id, received_us))
        if account_id is None:
            # account_updates and account_state are keyed by account: nothing to say about this event there.
            self.counters["no_account"] += 1
        elif is_job:
            self._process_job(event, received_us, out)
        else:
            self._process_account_event(event, received_us, out)
        return out

    def _account(self, event: Event) -> AccountState:
        account_id = event.account_id
        assert account_id is not None
        return self._accounts.get(account_id) or AccountState(account_id)

    def _dead_letter(self, event: Event, reason: str, error: str, out: list[Output]) -> None:
        self.counters["dead_letter"] += 1
        out.append(RejectedEvent(event.event_id, event.event_type, event.account_key, reason, error))

    def _process_job(self, event: Event, received_us: int, out: list[Output]) -> None:
        outcome = event.outcome
        assert outcome is not None  # checked by `process`
        occurred = event.occurred_at
        occurred_us = received_us if occurred is None else to_us(occurred)
        event_type = event.event_type
        job = event.job_name or event_type
        account_id = event.account_id
        assert account_id is not None
        account_jobs = self._jobs.get(account_id) or _NO_JOBS
        before = account_jobs.get(event_type)
        envelope = EventEnvelope.of(event, received_us)
        if outcome == catalog.PENDING:
            result = apply_pending(
                before,
                job=job,
                job_id=event.job_id,
                occurred_us=occurred_us,
                envelope=envelope,
                window_us=self._window_us,
            )
        else:
            result = apply_final(
                before,
                job=job,
                job_id=event.job_id,
                outcome=outcome,
                error_code=event.error_code,
                error_type=event.error_type,
                occurred_us=occurred_us,
                window_us=self._window_us,
            )
        kind = result.kind
        after = result.state
        if kind is JoinKind.STALE_PENDING:
            self.counters["stale_pending"] += 1
            change = Change.JOB_STALE
        else:
            self._jobs.put(account_id, {**account_jobs, event_type: after})
            # The timers of one join key differ by their due time only: compared first, built only if they do.
            if (None if before is None else TimerRules.job_due(before)) != TimerRules.job_due(after):
                key = join_key(account_id, event_type)
                old_timer = None if before is None else TimerRules.job_timer(key, before)
                new_timer = TimerRules.job_timer(key, after)
                if old_timer is not None:
                    self._timers.delete(old_timer.encode())
                if new_timer is not None:
                    self._add_timer(new_timer)
            if outcome == catalog.PENDING:
                change = Change.JOB_PENDING
            elif outcome == catalog.ERROR:
                change = Change.JOB_FAILED
            elif event_type in SYNC_MILESTONES:
                change = Change.SYNC_PROGRESSED
            else:
                change = Change.JOB_SUCCEEDED
            if kind is JoinKind.LATE_JOINED:
                self.counters["late_joined"] += 1
        state = self._account(event)
        synced = None
        if outcome == catalog.SUCCESS and (event_type in SYNC_BATCHES or event_type in SYNC_MILESTONES):
            synced = sync_progress(state, event_type, event.payload, event.job_id, occurred_us, self._max_ids)
        job_outcome = result.outcome
        jobs = None if job_outcome is None else merge_outcome(state.jobs, job_outcome)
        self._emit(event, envelope, change, job_outcome, state, received_us, occurred_us, out, jobs, synced)

    def _process_account_event(self, event: Event, received_us: int, out: list[Output]) -> None:
        change = _ACCOUNT_CHANGES.get(event.event_type, Change.EVENT_RECORDED)
        state = self._account(event)
        occurred = event.occurred_at
        at_us = received_us if occurred is None else to_us(occurred)
        if change is Change.ACCOUNT_CONNECTED:
            state = apply_account_added(state, event.payload, at_us)
        elif change is Change.MONITORING_STATUS_CHANGED:
            state = apply_monitoring_status(state, event.payload, at_us)
        elif change is Change.CONNECTIONS_RECOMMENDED:
            state = apply_recommendations(state, event.payload, received_us)
        self._emit(event, EventEnvelope.of(event, received_us), change, None, state, received_us, at_us, out)

    def _emit(
        self,
        event: Event,
        envelope: EventEnvelope,
        change: Change,
        outcome: JobOutcome | None,
        state: AccountState,
        received_us: int,
        occurred_us: int,
        out: list[Output],
        jobs: Mapping[str, JobOutcome] | None = None,
        synced: tuple[str, SyncProgress] | None = None,
    ) -> None:
        end_user = event.payload.get("end_user_id")
        state = touch(
            state,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            sent_at_us=envelope.sent_at_us,
            change=_CHANGE_VALUES[change],
            at_us=received_us,
            end_user_id=end_user if isinstance(end_user, str) and end_user else None,
            jobs=jobs,
            synced=synced,
        )
        state, readiness = self._judge(envelope.event_id, envelope, state, occurred_us)
        self._accounts.put(state.account_id, state)
        out.append(AccountUpdate(envelope.event_id, state.account_id, change, envelope, outcome, state))
        out.append(AccountStateSnapshot(state))
        if readiness is not None:
            out.append(readiness)

    def _judge(
        self, update_id: str, envelope: EventEnvelope, state: AccountState, occurred_us: int
    ) -> tuple[AccountState, ReadinessUpdate | None]:
        """The readiness rule applied to the state an update made: the state with its readiness, and the
        readiness update when the verdict changed (its id derives from the update's: deterministic)."""
        rule = self._rule
        if rule is None:
            return state, None
        now_us = state.updated_at_us if state.updated_at_us is not None else occurred_us
        readiness, verdict = assess(rule, state, occurred_us=occurred_us, now_us=now_us)
        if readiness != state.readiness:
            state = with_readiness(state, readiness)
        if verdict is None:
            return state, None
        self.counters[verdict.status] += 1
        update = ReadinessUpdate(f"{update_id}:{verdict.status}", state.account_id, verdict, rule.text, envelope, state)
        return state, update

    # -- timers --------------------------------------------------------------------------------------

    def _expire(self, event_id: str, limit_us: int) -> None:
        """A dedupe timer of ``event_id`` fired: its entry is deleted if the entry's own expiry is due too
        (before ``limit_us``, as the timer). A restored timer may be an older entry's
        (``processors.logic.timers``): the entry deleted and written anew since, or a retention since changed.
        Then the entry's expiry is armed (again: the restore derived it), so no entry outlives its retention."""
        received_us = self._dedupe.get(event_id)
        if received_us is not None:
            timer = self._rules.dedupe_timer(event_id, received_us)
            if timer.due_us < limit_us:
                self._dedupe.delete(event_id)
                self.counters["dedupe_expired"] += 1
                return
            self._add_timer(timer)
        self.counters["timer_obsolete"] += 1

    def _fire_timeout(self, key: str, due_us: int, out: list[Output]) -> None:
        account_id, event_type = split_join_key(key)  # jobs exist only for events with an account_id (= account key)
        jobs = self._jobs.get(account_id) or _NO_JOBS
        result = apply_timeout(jobs.get(event_type), deadline_us=due_us)
        if result is None or result.outcome is None or result.state.timed_out is None:
            self.counters["timer_obsolete"] += 1  # a restored timer of a job that moved on (processors.logic.timers)
            return
        self.counters["timed_out"] += 1
        self._jobs.put(account_id, {**jobs, event_type: result.state})
        first = result.state.timed_out.first
        state = self._accounts.get(account_id) or AccountState(account_id)
        state = touch(
            state,
            event_id=first.event_id,
            event_type=first.event_type,
            sent_at_us=first.sent_at_us,
            change=_CHANGE_VALUES[Change.JOB_TIMED_OUT],
            at_us=due_us,
            end_user_id=None,
            jobs=merge_outcome(state.jobs, result.outcome),
        )
        update_id = f"{first.event_id}:timed_out"
        state, readiness = self._judge(update_id, first, state, result.outcome.as_of_us)
        self._accounts.put(account_id, state)
        out.append(AccountUpdate(update_id, account_id, Change.JOB_TIMED_OUT, first, result.outcome, state))
        out.append(AccountStateSnapshot(state))
        if readiness is not None:
            out.append(readiness)
