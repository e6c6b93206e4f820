"""The account table: the latest known facts of one account, folded from its events.

Pure functions ``(AccountState, ...) -> AccountState``. Fields that can be reordered by delivery carry their
own "as of" time and follow last-writer-wins on payload time, so a late delivery never overwrites a newer
fact. Sync progress is accumulated with order-independent operations (sum, min, max, union) except for the
bounded id lists, which keep the most recent ids in processing order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from functools import lru_cache
from typing import Any, Final, NamedTuple

from processors.logic.events import is_canonical_uuid
from processors.logic.join import JobOutcome
from schemas import catalog
from schemas.models import uuid_or_none

#: event type -> (dataset, milestone field of SyncProgress)
SYNC_MILESTONES: Final = {
    event_type: (dataset, f"{level}_synced_at_us")
    for event_type, (dataset, level) in catalog.SYNC_MILESTONE_EVENTS.items()
}
SYNC_BATCHES: Final = catalog.SYNC_BATCH_EVENTS


class Recommendation(NamedTuple):
    platform_type: str | None
    action: str | None
    platform_id: str | None


class SyncProgress(NamedTuple):
    """Progress of one dataset (paystubs or shifts) across batches and milestone events."""

    seven_days_synced_at_us: int | None = None
    thirty_days_synced_at_us: int | None = None
    ninety_days_synced_at_us: int | None = None
    fully_synced_at_us: int | None = None
    sync_status: str | None = None  # params.sync_status of the latest batch (payload time)
    sync_status_at_us: int | None = None
    batches: int = 0  # successful *.added batches
    reported_count: int = 0  # sum of params.count of those batches
    added_count: int = 0  # ids listed in ``added`` (repeats included)
    deleted_count: int = 0
    pay_date_from: str | None = None  # min params.from_pay_date (ISO date strings compare as dates)
    pay_date_to: str | None = None  # max params.to_pay_date
    added_ids: tuple[str, ...] = ()  # distinct, most recent last, at most max_sync_ids
    deleted_ids: tuple[str, ...] = ()
    ids_truncated: bool = False  # some ids were dropped by the cap
    last_job_id: str | None = None

    @property
    def deepest_milestone(self) -> str | None:
        for level, index in _DEEPEST_FIRST:
            if self[index] is not None:
                return level
        return None


#: (level, index of its ``<level>_synced_at_us`` field), deepest level first.
_DEEPEST_FIRST: Final = tuple(
    (level, SyncProgress._fields.index(f"{level}_synced_at_us")) for level in reversed(catalog.SYNC_LEVELS)
)

_NO_JOBS: Final[Mapping[str, JobOutcome]] = {}
_NO_TIMES: Final[Mapping[str, int]] = {}


class Readiness(NamedTuple):
    """Where the account stands against the deployment's readiness rule (processors/logic/readiness.py).

    ``status`` None: waiting (nothing said yet, or blocked no more). ``account_ready`` is final: later refreshes
    and failures are account updates, not readiness. ``met`` keeps when each requirement was first met (payload
    time), so a later pending of a refresh job does not un-meet it.
    """

    status: str | None = None  # None | account_ready | account_blocked
    reason: str | None = None  # blocked: error | timeout | user_action_required
    blocked_by: str | None = None  # blocked: the requirement (event type), or the monitoring status event
    met: Mapping[str, int] = _NO_TIMES  # requirement (event type) -> payload time first met
    first_seen_us: int | None = None  # earliest payload time of an event applied to the account
    decided_at_us: int | None = None  # stream time of the last readiness update


class AccountState(NamedTuple):
    """The latest snapshot of one account (value of the accounts store and of ``pinwheel.account_state.v1``).

    Immutable: every change builds a new instance, so an output can hold it without copying. ``products`` is
    never mutated in place either (copy on write). Only accounts with an ``account_id`` have a state.
    """

    account_id: str
    end_user_id: str | None = None
    platform_id: str | None = None
    platform_name: str | None = None
    link_token_id: str | None = None
    connected: bool | None = None
    created_at_us: int | None = None
    monitoring_status: str | None = None
    monitoring_status_at_us: int | None = None
    additional_platforms: tuple[Recommendation, ...] = ()
    additional_platforms_at_us: int | None = None
    #: Latest outcome per job name (pending and timed_out included), last writer wins on ``as_of_us``.
    jobs: Mapping[str, JobOutcome] = _NO_JOBS
    paystubs: SyncProgress | None = None
    shifts: SyncProgress | None = None
    #: Number of updates applied: strictly increasing per account, one per account update.
    version: int = 0
    last_event_id: str | None = None
    last_event_type: str | None = None
    last_event_sent_at_us: int | None = None
    last_change: str | None = None
    #: Stream time of the last update (received_at of the event, or the deadline of a timeout).
    updated_at_us: int | None = None
    #: Readiness against the deployment's rule (None: no rule, or nothing evaluated yet).
    readiness: Readiness | None = None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _uuid(value: object) -> str | None:
    """An id the outputs type as a UUID (end user, platform, link token), in canonical form (lowercase, dashed,
    as account and job ids are); None for what is not a UUID, which must not overwrite the known one. Refresh
    jobs send "an undefined link token" (`""`, `"undefined"`...), and an `end_user_id` is the customer's own id,
    any text. The gateway's model reads ids the same way (`schemas.models.uuid_or_none`); the exact value stays
    in the event's raw body. Canonical ids are also what ``pinwheel.account_state.v1`` gives back (its `uuid`
    fields), so the state survives that topic (processors/wire.py ``account_state_of``)."""
    if not isinstance(value, str):
        return None
    if is_canonical_uuid(value):
        return value  # already what str(UUID(value)) gives, at a fraction of the cost
    parsed = uuid_or_none(value)
    return None if parsed is None else str(parsed)


def _pay_date(value: object) -> str | None:
    """A pay date as canonical ISO text (those compare as dates), None for what is not a date: the outputs type
    it as a date, so the state keeps only what they can carry."""
    return _pay_date_text(value) if isinstance(value, str) else None


@lru_cache(maxsize=4096)
def _pay_date_text(value: str) -> str | None:
    # Cached: pay periods repeat across batches and accounts, and parsing a date costs more than the lookup.
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return None


def _newer(at_us: int, current_us: int | None) -> bool:
    # Ties go to the later-processed event, so replaying the same sequence gives the same result.
    return current_us is None or at_us >= current_us


def apply_account_added(state: AccountState, payload: Mapping[str, Any], created_us: int) -> AccountState:
    """account.added: platform and link come from the latest processed login; the monitoring status
    competes with account.monitoring_status.updated on payload time (created_at vs updated_at)."""
    connected = payload.get("connected")
    status = _str(payload.get("monitoring_status"))
    take_status = status is not None and _newer(created_us, state.monitoring_status_at_us)
    return state._replace(
        platform_id=_uuid(payload.get("platform_id")) or state.platform_id,
        platform_name=_str(payload.get("platform_name")) or state.platform_name,
        link_token_id=_uuid(payload.get("link_token_id")) or state.link_token_id,
        connected=connected if isinstance(connected, bool) else state.connected,
        created_at_us=created_us if state.created_at_us is None else min(state.created_at_us, created_us),
        monitoring_status=status if take_status else state.monitoring_status,
        monitoring_status_at_us=created_us if take_status else state.monitoring_status_at_us,
    )


def apply_monitoring_status(state: AccountState, payload: Mapping[str, Any], updated_us: int) -> AccountState:
    status = _str(payload.get("current_monitoring_status"))
    if status is None or not _newer(updated_us, state.monitoring_status_at_us):
        return state
    return state._replace(monitoring_status=status, monitoring_status_at_us=updated_us)


def apply_recommendations(state: AccountState, payload: Mapping[str, Any], at_us: int) -> AccountState:
    """The payload has no time of its own: ``at_us`` is received_at."""
    raw = payload.get("additional_platforms")
    if not isinstance(raw, list) or not _newer(at_us, state.additional_platforms_at_us):
        return state
    recommendations = tuple(
        Recommendation(_str(item.get("platform_type")), _str(item.get("action")), _uuid(item.get("platform_id")))
        for item in raw
        if isinstance(item, Mapping)
    )
    return state._replace(additional_platforms=recommendations, additional_platforms_at_us=at_us)


def merge_outcome(jobs: Mapping[str, JobOutcome], outcome: JobOutcome) -> Mapping[str, JobOutcome]:
    """``outcome`` as its job's latest unless a newer one (payload time) is already there (copy on write)."""
    current = jobs.get(outcome.job)
    if current is not None and outcome.as_of_us < current.as_of_us:
        return jobs
    merged = dict(jobs)
    merged[outcome.job] = outcome
    return merged


def _ids(items: object) -> list[str]:
    if not isinstance(items, list):
        return []
    ids: list[str] = []
    for item in items:
        if type(item) is dict or isinstance(item, Mapping):  # parsed JSON: a dict, checked without the ABC
            value = item.get("id")
            if isinstance(value, str) and value:
                ids.append(value)
    return ids


def _merge_ids(current: tuple[str, ...], new: Sequence[str], cap: int) -> tuple[tuple[str, ...], bool]:
    """Distinct ids, most recent last, at most ``cap``; the flag says whether any were dropped."""
    if not new:
        return current, False
    fresh = dict.fromkeys(new)
    if fresh.keys().isdisjoint(current):  # the usual case: new ids only, appended without a loop in Python
        merged = current + tuple(fresh)
    else:
        merged = (*(i for i in current if i not in fresh), *fresh)
    if len(merged) > cap:
        return merged[len(merged) - cap :], True
    return merged, False


def _date_min(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else min(a, b)


def _date_max(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else max(a, b)


def sync_progress(
    state: AccountState,
    event_type: str,
    payload: Mapping[str, Any],
    job_id: str | None,
    occurred_us: int,
    max_ids: int,
) -> tuple[str, SyncProgress] | None:
    """A successful paystubs/shifts batch (``*.added``) or milestone (``*_synced``) event: the dataset
    (``paystubs`` or ``shifts``) and its new progress, None for an event of neither; the processor folds it into
    the update's one copy of the state (``touch``)."""
    batch_dataset = SYNC_BATCHES.get(event_type)
    milestone = SYNC_MILESTONES.get(event_type)
    dataset = batch_dataset if batch_dataset is not None else milestone[0] if milestone is not None else None
    if dataset is None:
        return None
    progress = (state.paystubs if dataset == "paystubs" else state.shifts) or _NO_PROGRESS
    raw_params = payload.get("params")
    params: Mapping[str, Any] = raw_params if isinstance(raw_params, Mapping) else _NO_PARAMS
    values = list(progress)
    values[_PAY_DATE_FROM] = _date_min(progress.pay_date_from, _pay_date(params.get("from_pay_date")))
    values[_PAY_DATE_TO] = _date_max(progress.pay_date_to, _pay_date(params.get("to_pay_date")))
    values[_LAST_JOB_ID] = job_id or progress.last_job_id
    if milestone is not None:
        reached: int | None = getattr(progress, milestone[1])
        values[_MILESTONE_INDEX[milestone[1]]] = occurred_us if reached is None else min(reached, occurred_us)
    else:
        added = _ids(payload.get("added"))
        deleted = _ids(payload.get("deleted"))
        added_ids, cut_added = _merge_ids(progress.added_ids, added, max_ids)
        deleted_ids, cut_deleted = _merge_ids(progress.deleted_ids, deleted, max_ids)
        count = params.get("count")
        status = _str(params.get("sync_status"))
        take_status = status is not None and _newer(occurred_us, progress.sync_status_at_us)
        values[_BATCHES] = progress.batches + 1
        values[_REPORTED_COUNT] = _saturated(progress.reported_count + (count if type(count) is int else 0))
        values[_ADDED_COUNT] = progress.added_count + len(added)
        values[_DELETED_COUNT] = progress.deleted_count + len(deleted)
        values[_ADDED_IDS] = added_ids
        values[_DELETED_IDS] = deleted_ids
        values[_IDS_TRUNCATED] = progress.ids_truncated or cut_added or cut_deleted
        if take_status:
            values[_SYNC_STATUS] = status
            values[_SYNC_STATUS_AT_US] = occurred_us
    return dataset, SyncProgress._make(values)


# Field indexes of SyncProgress and AccountState: an update copies the fields into a list, sets the changed
# ones and makes one tuple of it (a namedtuple's ``_replace`` costs several times that).
_NO_PROGRESS: Final = SyncProgress()
_NO_PARAMS: Final[Mapping[str, Any]] = {}
(
    _PAY_DATE_FROM,
    _PAY_DATE_TO,
    _LAST_JOB_ID,
    _BATCHES,
    _REPORTED_COUNT,
    _ADDED_COUNT,
    _DELETED_COUNT,
    _ADDED_IDS,
    _DELETED_IDS,
    _IDS_TRUNCATED,
    _SYNC_STATUS,
    _SYNC_STATUS_AT_US,
) = (
    SyncProgress._fields.index(name)
    for name in (
        "pay_date_from",
        "pay_date_to",
        "last_job_id",
        "batches",
        "reported_count",
        "added_count",
        "deleted_count",
        "added_ids",
        "deleted_ids",
        "ids_truncated",
        "sync_status",
        "sync_status_at_us",
    )
)
_MILESTONE_INDEX: Final = {field: SyncProgress._fields.index(field) for _dataset, field in SYNC_MILESTONES.values()}
(
    _END_USER_ID,
    _JOBS,
    _PAYSTUBS,
    _SHIFTS,
    _VERSION,
    _LAST_EVENT_ID,
    _LAST_EVENT_TYPE,
    _LAST_EVENT_SENT_AT_US,
    _LAST_CHANGE,
    _UPDATED_AT_US,
    _READINESS,
) = (
    AccountState._fields.index(name)
    for name in (
        "end_user_id",
        "jobs",
        "paystubs",
        "shifts",
        "version",
        "last_event_id",
        "last_event_type",
        "last_event_sent_at_us",
        "last_change",
        "updated_at_us",
        "readiness",
    )
)


def touch(
    state: AccountState,
    *,
    event_id: str,
    event_type: str,
    sent_at_us: int | None,
    change: str,
    at_us: int,
    end_user_id: str | None,
    jobs: Mapping[str, JobOutcome] | None = None,
    synced: tuple[str, SyncProgress] | None = None,
) -> AccountState:
    """Every account update bumps the version: the snapshot sequence of an account is strictly ordered.

    ``jobs`` (the job outcome merged) and ``synced`` (``sync_progress``'s change) fold into the same copy: one
    tuple per event on the hot path.
    """
    values = list(state)
    if jobs is not None:
        values[_JOBS] = jobs
    if synced is not None:
        values[_PAYSTUBS if synced[0] == "paystubs" else _SHIFTS] = synced[1]
    values[_VERSION] = state.version + 1
    values[_LAST_EVENT_ID] = event_id
    values[_LAST_EVENT_TYPE] = event_type
    values[_LAST_EVENT_SENT_AT_US] = sent_at_us
    values[_LAST_CHANGE] = change
    updated = state.updated_at_us
    values[_UPDATED_AT_US] = at_us if updated is None or at_us > updated else updated
    if end_user_id is not None:
        values[_END_USER_ID] = _uuid(end_user_id) or state.end_user_id
    return AccountState._make(values)


def with_readiness(state: AccountState, readiness: Readiness | None) -> AccountState:
    """``state`` with ``readiness``, copied as `touch` copies it (a named tuple's ``_replace`` costs several times
    as much: it is Python, even compiled)."""
    values = list(state)
    values[_READINESS] = readiness
    return AccountState._make(values)


#: The range of an Avro long: a sum of reported counts saturates there instead of making a state that the
#: AccountState schema cannot carry (each count is a long, their sum need not be).
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _saturated(value: int) -> int:
    return max(_LONG_MIN, min(_LONG_MAX, value))
