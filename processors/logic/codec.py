"""Versioned byte encodings of the store values (they travel through compacted changelog topics).

Layout: one version byte, then the body.
- ``int`` (dedupe first-seen time, timer due time, stream clock): version 1, 8-byte big-endian signed.
- ``AccountJobs`` (an account's ``JobState`` by event type), ``AccountState``: version 1, orjson of positional
  arrays in field order (compact, fast); the jobs an object of them by event type.

Evolution rule: a new field is appended with a default, so version 1 decoders of older data keep working
(a missing trailing element takes the default); any other change bumps the version byte and keeps a decoder
for every version still present in a changelog. A value with an unknown version raises ``StateCodecError``:
the runtime must stop rather than guess.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, NamedTuple, TypeVar

import orjson

from processors.logic.account_table import AccountState, Readiness, Recommendation, SyncProgress
from processors.logic.events import EventEnvelope
from processors.logic.join import AccountJobs, JobOutcome, JobState, OpenJob

T = TypeVar("T")

_V1: Final = 1
_INT: Final = struct.Struct(">bq")


class StateCodecError(ValueError):
    pass


class Serde(NamedTuple, Generic[T]):
    """How the runtime's store turns one value type into changelog bytes and back."""

    name: str
    to_bytes: Callable[[T], bytes]
    from_bytes: Callable[[bytes], T]


def _version(data: bytes, expected: int = _V1) -> None:
    if not data or data[0] != expected:
        found = data[0] if data else None
        raise StateCodecError(f"unsupported state encoding version {found!r} (expected {expected})")


# -- int -----------------------------------------------------------------------------------------------


def int_to_bytes(value: int) -> bytes:
    return _INT.pack(_V1, value)


def int_from_bytes(data: bytes) -> int:
    _version(data)
    if len(data) != _INT.size:
        raise StateCodecError(f"int state value must be {_INT.size} bytes, got {len(data)}")
    return int(_INT.unpack(data)[1])


# -- job state -----------------------------------------------------------------------------------------


def _open_from_list(raw: list[Any] | None) -> OpenJob | None:
    if raw is None:
        return None
    job_id, since, last, deliveries, deadline, first, job = raw[:7]
    return OpenJob(job_id, since, last, deliveries, deadline, EventEnvelope(*first), job)


def _job_from_list(raw: list[Any]) -> JobState:
    return JobState(_open_from_list(raw[0]), raw[1], _open_from_list(raw[2]))


def legacy_job_state_from_bytes(data: bytes) -> JobState:
    """One job's state as the jobs store's own changelog held it before the jobs rode on the state topic
    (version 1: ``[open, closed_through_us, timed_out]``): for ``processor migrate-jobs``."""
    _version(data)
    return _job_from_list(orjson.loads(data[1:]))


def account_jobs_to_bytes(jobs: AccountJobs) -> bytes:
    # A named tuple is written as the array of its fields (orjson calls `default` for it): JobState, OpenJob and
    # the EventEnvelope inside it, each positional, in field order.
    return b"\x01" + orjson.dumps(jobs, default=tuple)


def account_jobs_from_bytes(data: bytes) -> AccountJobs:
    _version(data)
    raw: dict[str, list[Any]] = orjson.loads(data[1:])
    if not isinstance(raw, dict):
        raise StateCodecError(f"account jobs must be an object, got {type(raw).__name__}")
    return {event_type: _job_from_list(state) for event_type, state in raw.items()}


# -- account state -------------------------------------------------------------------------------------

_JOBS: Final = AccountState._fields.index("jobs")
_PLATFORMS: Final = AccountState._fields.index("additional_platforms")
_PAYSTUBS: Final = AccountState._fields.index("paystubs")
_SHIFTS: Final = AccountState._fields.index("shifts")
_READINESS: Final = AccountState._fields.index("readiness")
_ADDED_IDS: Final = SyncProgress._fields.index("added_ids")
_DELETED_IDS: Final = SyncProgress._fields.index("deleted_ids")


def _sync_from_list(raw: list[Any] | None) -> SyncProgress | None:
    if raw is None:
        return None
    raw[_ADDED_IDS] = tuple(raw[_ADDED_IDS])
    raw[_DELETED_IDS] = tuple(raw[_DELETED_IDS])
    return SyncProgress(*raw)


def account_state_to_bytes(state: AccountState) -> bytes:
    body: list[Any] = list(state)
    body[_JOBS] = {job: tuple(outcome) for job, outcome in state.jobs.items()}
    body[_PLATFORMS] = [tuple(r) for r in state.additional_platforms]
    body[_PAYSTUBS] = None if state.paystubs is None else list(state.paystubs)
    body[_SHIFTS] = None if state.shifts is None else list(state.shifts)
    body[_READINESS] = None if state.readiness is None else list(state.readiness)
    return b"\x01" + orjson.dumps(body)


def account_state_from_bytes(data: bytes) -> AccountState:
    _version(data)
    raw = orjson.loads(data[1:])
    jobs: Mapping[str, list[Any]] = raw[_JOBS]
    raw[_JOBS] = {job: JobOutcome._make(outcome) for job, outcome in jobs.items()}
    raw[_PLATFORMS] = tuple(Recommendation(*r) for r in raw[_PLATFORMS])
    raw[_PAYSTUBS] = _sync_from_list(raw[_PAYSTUBS])
    raw[_SHIFTS] = _sync_from_list(raw[_SHIFTS])
    if len(raw) > _READINESS and raw[_READINESS] is not None:  # appended field: older values lack it
        raw[_READINESS] = Readiness(*raw[_READINESS])
    return AccountState(*raw)


INT_SERDE: Final[Serde[int]] = Serde("int", int_to_bytes, int_from_bytes)
ACCOUNT_JOBS_SERDE: Final[Serde[AccountJobs]] = Serde("account_jobs", account_jobs_to_bytes, account_jobs_from_bytes)
ACCOUNT_STATE_SERDE: Final[Serde[AccountState]] = Serde(
    "account_state", account_state_to_bytes, account_state_from_bytes
)
