"""Readiness: a per-deployment rule turns the account table into ``account_ready`` / ``account_blocked``.

A lender decides on an account once the data it needs is there ("income and employment succeeded and paystubs
reached thirty_days_synced"), and must act when it cannot come (a job failed or timed out, the user has to log in
again). The rule is a comma-separated list of Pinwheel event types, each a requirement:

- a job event type (``income.added``, ``direct_deposit_allocations.added``, ...): that job succeeded once;
- a sync milestone (``paystubs.thirty_days_synced``, ...): that milestone or a deeper one was reached.

Pure functions of the account state after each update; see docs/consuming.md "Readiness" for what is emitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from processors.logic.account_table import AccountState, Readiness, SyncProgress
from processors.logic.join import JobOutcome
from schemas import catalog

_FAILED = {catalog.ERROR: catalog.BLOCKED_ERROR, catalog.TIMED_OUT: catalog.BLOCKED_TIMEOUT}


class Requirement(NamedTuple):
    event_type: str  # as written in the rule
    job: str  # the job name whose outcome it reads (payload ``name``: income, paystubs, ...)
    #: Milestones: index of the level in ``catalog.SYNC_LEVELS`` (it or a deeper one counts); None: a job success.
    level: int | None = None


class ReadinessRule(NamedTuple):
    text: str  # normalised: the event types joined by ", "
    requirements: tuple[Requirement, ...]

    @property
    def event_types(self) -> frozenset[str]:
        """What the Pinwheel subscription must enable for this rule ever to be met."""
        return frozenset(r.event_type for r in self.requirements)


def parse_rule(text: str) -> ReadinessRule:
    """``"income.added, employment.added, paystubs.thirty_days_synced"`` → a rule. Raises ValueError naming the
    term that is not a job event type of the catalog (account events are facts, not requirements)."""
    terms = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not terms:
        raise ValueError("needs at least one event type (e.g. " + catalog.DEFAULT_READINESS_RULE + ")")
    requirements = []
    for term in terms:
        milestone = catalog.SYNC_MILESTONE_EVENTS.get(term)
        if milestone is not None:
            dataset, level = milestone
            requirements.append(Requirement(term, dataset, catalog.SYNC_LEVELS.index(level)))
        elif term in catalog.JOB_EVENT_TYPES:
            requirements.append(Requirement(term, term.split(".", 1)[0]))
        else:
            known = ", ".join(sorted(catalog.JOB_EVENT_TYPES))
            raise ValueError(f"{term!r} is not a job or sync event type; known: {known}")
    return ReadinessRule(", ".join(terms), tuple(requirements))


class Verdict(NamedTuple):
    """One readiness update (times in epoch µs; payload times except ``decided_at_us``)."""

    status: str  # account_ready | account_blocked
    reason: str | None  # blocked: error | timeout | user_action_required
    blocked_by: str | None  # blocked: the requirement's event type, or account.monitoring_status.updated
    error_code: str | None
    error_type: str | None
    met: tuple[str, ...]  # requirements met so far, in rule order
    missing: tuple[str, ...]  # requirements not met, in rule order
    started_at_us: int | None  # account.added created_at, else the earliest payload time seen
    ready_at_us: int | None  # ready: when the last requirement was met (payload time)
    decided_at_us: int  # stream time of the update that decided it

    @property
    def time_to_ready_ms(self) -> int | None:
        if self.ready_at_us is None or self.started_at_us is None:
            return None
        return max(0, self.ready_at_us - self.started_at_us) // 1000


def _job(state: AccountState, requirement: Requirement) -> JobOutcome | None:
    # Jobs are keyed by payload `name`, else by event type (a payload without a name).
    return state.jobs.get(requirement.job) or state.jobs.get(requirement.event_type)


def _milestone_at(progress: SyncProgress | None, level: int) -> int | None:
    if progress is None:
        return None
    reached = [getattr(progress, f"{name}_synced_at_us") for name in catalog.SYNC_LEVELS[level:]]
    times = [t for t in reached if t is not None]
    return min(times) if times else None


def met_at(state: AccountState, requirement: Requirement) -> int | None:
    """When ``requirement`` is met by the state (payload time), or None."""
    if requirement.level is not None:
        progress = state.paystubs if requirement.job == "paystubs" else state.shifts
        return _milestone_at(progress, requirement.level)
    outcome = _job(state, requirement)
    if outcome is None or outcome.outcome != catalog.SUCCESS:
        return None
    return outcome.resolved_at_us if outcome.resolved_at_us is not None else outcome.as_of_us


def assess(
    rule: ReadinessRule, state: AccountState, *, occurred_us: int, now_us: int
) -> tuple[Readiness, Verdict | None]:
    """The account's readiness after an update, and the verdict to publish if it changed.

    ``occurred_us``: payload time of the update's event (the deadline for a timeout); ``now_us``: stream time.
    Ready is final. Blocked is published when it starts or its reason changes; an account no longer blocked (a
    retry pending) goes back to waiting silently, and is published again when ready or blocked anew.
    """
    before = state.readiness or Readiness()
    if before.status == catalog.ACCOUNT_READY:
        return before, None
    first_seen = occurred_us if before.first_seen_us is None else min(before.first_seen_us, occurred_us)
    met: Mapping[str, int] = before.met
    for requirement in rule.requirements:
        if requirement.event_type not in met and (at := met_at(state, requirement)) is not None:
            met = {**met, requirement.event_type: at}
    done = tuple(r.event_type for r in rule.requirements if r.event_type in met)
    missing = tuple(r.event_type for r in rule.requirements if r.event_type not in met)
    started = state.created_at_us if state.created_at_us is not None else first_seen
    if not missing:
        ready_at = max(met[r] for r in done)
        after = Readiness(catalog.ACCOUNT_READY, None, None, met, first_seen, now_us)
        verdict = Verdict(catalog.ACCOUNT_READY, None, None, None, None, done, (), started, ready_at, now_us)
        return after, verdict
    reason = blocked_by = code = kind = None
    for requirement in rule.requirements:
        outcome = _job(state, requirement)
        if requirement.event_type in met or outcome is None or outcome.outcome not in _FAILED:
            continue
        reason, blocked_by = _FAILED[outcome.outcome], requirement.event_type
        code, kind = outcome.error_code, outcome.error_type
        break
    else:
        if state.monitoring_status == catalog.USER_ACTION_REQUIRED:
            reason, blocked_by = catalog.BLOCKED_USER_ACTION, catalog.ACCOUNT_MONITORING_STATUS_UPDATED
    if reason is None:
        return Readiness(None, None, None, met, first_seen, before.decided_at_us), None
    after = Readiness(catalog.ACCOUNT_BLOCKED, reason, blocked_by, met, first_seen, now_us)
    if before.status == catalog.ACCOUNT_BLOCKED and (before.reason, before.blocked_by) == (reason, blocked_by):
        return after._replace(decided_at_us=before.decided_at_us), None
    verdict = Verdict(catalog.ACCOUNT_BLOCKED, reason, blocked_by, code, kind, done, missing, started, None, now_us)
    return after, verdict
