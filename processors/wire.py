"""The wire shape of every record the processors write: its Avro datum, key and headers, for each output topic.

The logic returns typed values (``AccountUpdate``, ``AccountStateSnapshot``, ``ReadinessUpdate``,
``RejectedEvent``); only this module knows how they look on ``pinwheel.account_updates.v1``,
``pinwheel.account_state.v1``, ``pinwheel.account_readiness.v1`` and ``pinwheel.deadletter.v1``: field names,
times as epoch microseconds (exactly what Avro ``timestamp-micros`` stores, so fastavro writes the ints as they
are), union branches named up front, and the headers that say which Pinwheel delivery a record comes from
(docs/wire-format.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any, Final, NamedTuple, final
from uuid import UUID

from aiokafka.structs import ConsumerRecord

from processors.logic.account_table import AccountState, Readiness, Recommendation, SyncProgress
from processors.logic.events import EventEnvelope
from processors.logic.join import JobOutcome
from processors.logic.outputs import AccountUpdate, Change, ReadinessUpdate
from schemas.catalog import ACCOUNT_STATE_TOPIC, ACCOUNT_UPDATES_TOPIC
from schemas.codec import Codec, avro_long, avro_string
from schemas.deadletter import build_dead_letter, dead_letter_key
from schemas.enums import MonitoringStatus, OpenEnum, PlatformAction, PlatformType
from schemas.envelope import record_headers

Headers = list[tuple[str, bytes]]

# Union branches named up front (fastavro's tuple notation): otherwise the writer validates a whole nested
# record, id lists included, to find its branch before writing it.
_JOB_OUTCOME = "pinwheel.JobOutcome"
_SYNC_PROGRESS = "pinwheel.SyncProgress"
_READINESS = "pinwheel.Readiness"
_CONTEXT = "pinwheel.AccountContext"

# -- datums ------------------------------------------------------------------------------------------------


def envelope_datum(envelope: EventEnvelope) -> dict[str, Any]:
    return {
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "family": envelope.family,
        "sent_at": envelope.sent_at_us,
        "received_at": envelope.received_at_us,
    }


def outcome_datum(outcome: JobOutcome) -> dict[str, Any]:
    return {
        "job": outcome.job,
        "job_id": outcome.job_id,
        "outcome": outcome.outcome,
        "error_code": outcome.error_code,
        "error_type": outcome.error_type,
        "pending_since": outcome.pending_since_us,
        "resolved_at": outcome.resolved_at_us,
        "time_to_resolve_ms": outcome.time_to_resolve_ms,
        "deliveries_seen": outcome.deliveries_seen,
        "as_of": outcome.as_of_us,
    }


def _open_enum(enum: type[OpenEnum]) -> Callable[[str | None], str]:
    """The Avro symbol of a value the logic took from Pinwheel's payload: the value if `enum` knows it, else
    ``unknown``, as `enum` itself reads it (a value Pinwheel added since; the real one is in the trigger's raw
    body). The state keeps the real value: only its wire shape is limited to the schema's symbols. A lookup
    table, not a call of `enum` per value (an Enum call costs as much as the rest of an account update's
    context)."""
    symbols = {member.value: member.value for member in enum}
    unknown = enum("unknown").value
    return lambda value: symbols.get(value or unknown, unknown)


_monitoring_status = _open_enum(MonitoringStatus)
_platform_type = _open_enum(PlatformType)
_platform_action = _open_enum(PlatformAction)


def _recommendation_datum(recommendation: Recommendation) -> dict[str, Any]:
    return {
        "platform_type": _platform_type(recommendation.platform_type),
        "action": _platform_action(recommendation.action),
        "platform_id": recommendation.platform_id,
    }


def _date(value: str | None) -> date | None:
    """ISO dates are kept as text in the state (they compare correctly); outputs carry real dates."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def sync_datum(progress: SyncProgress) -> dict[str, Any]:
    return {
        "seven_days_synced_at": progress.seven_days_synced_at_us,
        "thirty_days_synced_at": progress.thirty_days_synced_at_us,
        "ninety_days_synced_at": progress.ninety_days_synced_at_us,
        "fully_synced_at": progress.fully_synced_at_us,
        "sync_status": progress.sync_status,
        "sync_status_at": progress.sync_status_at_us,
        "batches": progress.batches,
        "reported_count": progress.reported_count,
        "added_count": progress.added_count,
        "deleted_count": progress.deleted_count,
        "pay_date_from": _date(progress.pay_date_from),
        "pay_date_to": _date(progress.pay_date_to),
        "added_ids": list(progress.added_ids),
        "deleted_ids": list(progress.deleted_ids),
        "ids_truncated": progress.ids_truncated,
        "last_job_id": progress.last_job_id,
    }


def state_datum(state: AccountState) -> dict[str, Any]:
    """The record of ``pinwheel.account_state.v1``: the whole state of the account."""
    paystubs, shifts = state.paystubs, state.shifts
    return {
        **_state_fields(state),
        "jobs": {job: outcome_datum(outcome) for job, outcome in state.jobs.items()},
        "paystubs": None if paystubs is None else (_SYNC_PROGRESS, sync_datum(paystubs)),
        "shifts": None if shifts is None else (_SYNC_PROGRESS, sync_datum(shifts)),
    }


def _state_fields(state: AccountState) -> dict[str, Any]:
    """The fields of `state_datum` but its job outcomes and sync progress (`WireEncoder` writes those apart)."""
    return {**_identity_fields(state), **_progress_fields(state)}


def _identity_fields(state: AccountState) -> dict[str, Any]:
    """The fields of `state_datum` that `_IDENTITY_KEY` determines: they change rarely (`WireEncoder` caches them)."""
    return {
        "account_id": state.account_id,
        "end_user_id": state.end_user_id,
        "platform_id": state.platform_id,
        "platform_name": state.platform_name,
        "link_token_id": state.link_token_id,
        "connected": state.connected,
        "account_created_at": state.created_at_us,
        "monitoring_status": None if state.monitoring_status is None else _monitoring_status(state.monitoring_status),
        "monitoring_status_updated_at": state.monitoring_status_at_us,
        "additional_platforms": [_recommendation_datum(r) for r in state.additional_platforms],
        "additional_platforms_updated_at": state.additional_platforms_at_us,
    }


#: The state's values `_identity_fields` reads: their tuple (`_IDENTITY_KEY`) is the key of those fields' bytes in
#: `WireEncoder`'s cache, so it must name every one (tests/processors/test_wire_cache_keys.py checks it).
IDENTITY_ATTRS: Final = (
    "account_id",
    "end_user_id",
    "platform_id",
    "platform_name",
    "link_token_id",
    "connected",
    "created_at_us",
    "monitoring_status",
    "monitoring_status_at_us",
    "additional_platforms",
    "additional_platforms_at_us",
)
_IDENTITY_KEY = attrgetter(*IDENTITY_ATTRS)


def _progress_fields(state: AccountState) -> dict[str, Any]:
    """The other fields of `_state_fields`: those of every event, and the readiness."""
    fields = _event_fields(state)
    fields["readiness"] = None if state.readiness is None else (_READINESS, readiness_state_datum(state.readiness))
    return fields


def _event_fields(state: AccountState) -> dict[str, Any]:
    """The fields of `_progress_fields` but the readiness (`WireEncoder` writes it apart, cached)."""
    paystubs, shifts = state.paystubs, state.shifts
    return {
        "paystubs_synced": None if paystubs is None else paystubs.deepest_milestone,
        "shifts_synced": None if shifts is None else shifts.deepest_milestone,
        "version": state.version,
        "events_applied": state.version,
        "last_event_id": state.last_event_id,
        "last_event_type": state.last_event_type,
        "last_event_sent_at": state.last_event_sent_at_us,
        "last_change": state.last_change,
        "updated_at": state.updated_at_us,
    }


def _itself(value: Hashable) -> Hashable:
    return value


def readiness_key(readiness: Readiness) -> Hashable:
    """What determines `readiness_state_datum(readiness)`, its map's order included: the key of its bytes in
    `WireEncoder`'s cache (tests/processors/test_wire_cache_keys.py checks it)."""
    return (
        readiness.status,
        readiness.reason,
        readiness.blocked_by,
        tuple(readiness.met.items()),
        readiness.first_seen_us,
        readiness.decided_at_us,
    )


#: The names of `_identity_fields`.
_IDENTITY_FIELDS: Final = frozenset(_identity_fields(AccountState("")))

_Part = Callable[[Any, dict[str, Any]], bytes]
"""One part of a record's Avro body: from the value written (a state, an update) and its fields' datum."""


class _CachedRun(NamedTuple):
    """Fields whose bytes `WireEncoder` keeps by value, a run of them at a time: their values change rarely."""

    fields: frozenset[str]
    key: Callable[[Any, dict[str, Any]], Hashable]
    """From the value written and its fields' datum: what determines `fields` (hashable)."""
    datum: Callable[[Any, dict[str, Any]], Mapping[str, Any]]
    """`fields` (others may come along), when they are not cached."""


_SYNC_MILESTONES: Final = ("paystubs_synced", "shifts_synced")
_milestones_of = itemgetter(*_SYNC_MILESTONES)
#: The deepest sync milestones, fields of both a state and an update's context: a few values in all.
_MILESTONES: Final = _CachedRun(
    frozenset(_SYNC_MILESTONES), lambda _, fields: _milestones_of(fields), lambda _, fields: fields
)


class WireEncoder:
    """``Codec.encode_plain`` of ``state_datum(state)`` and ``update_datum(update)``: the same bytes, for less work.

    A state record carries every job outcome and the sync progress (with its ids) of the account, most of them
    those of the account's previous record, and an update's outcome is the one its account's state carries next:
    an outcome or a progress (immutable values) is encoded once and its bytes kept, by value, for the records
    that follow; the other fields are encoded in the runs between them. A record's Avro body is its fields'
    bodies one after the other (a map: its entry count, the entries, then 0; a union: its branch, then the
    value), so the parts make the body `encode_plain` writes. The runs of a state's fields that change rarely
    (the account's identity, its sync milestones) are kept by value too, so a state record encodes only the
    fields of its event. Held by one task (not thread-safe); each cache (`max_cached` values: a few MB, a
    progress holding its ids) is dropped whole when full. A record laid out otherwise than these parts expect is
    written whole.
    """

    def __init__(self, codec: Codec, max_cached: int = 10_000) -> None:
        self._codec = codec
        self._max_cached = max_cached
        self._jobs: dict[JobOutcome, bytes] = {}
        self._keys: dict[str, bytes] = {}
        self._state_parts: list[_Part] | None = None
        self._update_parts: list[_Part] | None = None
        state = {field["name"]: field["type"] for field in codec.reader_schema(ACCOUNT_STATE_TOPIC)["fields"]}
        jobs = state.get("jobs")
        if not (isinstance(jobs, dict) and jobs.get("type") == "map" and _type_name(jobs["values"]) == _JOB_OUTCOME):
            return
        if not all(_nullable(state.get(name)) == _SYNC_PROGRESS for name in ("paystubs", "shifts")):
            return
        self._job = codec.plain_type_encoder(ACCOUNT_STATE_TOPIC, _JOB_OUTCOME)
        sync = codec.plain_type_encoder(ACCOUNT_STATE_TOPIC, _SYNC_PROGRESS)
        state_special: dict[str, _Part] = {"jobs": self._jobs_part}
        for name in ("paystubs", "shifts"):
            state_special[name] = self._nullable_record_part(attrgetter(name), sync, sync_datum, _itself)
        readiness_apart = _nullable(state.get("readiness")) == _READINESS
        if readiness_apart:
            readiness = codec.plain_type_encoder(ACCOUNT_STATE_TOPIC, _READINESS)
            state_special["readiness"] = self._nullable_record_part(
                attrgetter("readiness"), readiness, readiness_state_datum, readiness_key
            )
        self._state_parts, uncached = _layout(
            codec,
            ACCOUNT_STATE_TOPIC,
            _field_names(codec.reader_schema(ACCOUNT_STATE_TOPIC)),
            state_special,
            [
                _CachedRun(
                    _IDENTITY_FIELDS, lambda state, _: _IDENTITY_KEY(state), lambda state, _: _identity_fields(state)
                ),
                _MILESTONES,
            ],
            max_cached,
        )
        # The identity's fields are read from the state when they are not cached; else they are those of every state.
        self._state_fields = (
            _state_fields if uncached & _IDENTITY_FIELDS else _event_fields if readiness_apart else _progress_fields
        )
        update = {field["name"]: field["type"] for field in codec.reader_schema(ACCOUNT_UPDATES_TOPIC)["fields"]}
        # The same encoder object: the same definition of JobOutcome (`Codec` builds one per schema text).
        if (
            _nullable(update.get("outcome")) == _JOB_OUTCOME
            and codec.plain_type_encoder(ACCOUNT_UPDATES_TOPIC, _JOB_OUTCOME) is self._job
        ):
            special: dict[str, _Part] = {"outcome": self._outcome_part}
            self._update_fields = _update_fields
            context = update.get("account")
            if isinstance(context, dict) and context.get("type") == "record" and context.get("name") == _CONTEXT:
                special["account"] = self._context_part(codec, _field_names(context))
                self._update_fields = _update_head
            self._update_parts, _ = _layout(
                codec, ACCOUNT_UPDATES_TOPIC, _field_names(codec.reader_schema(ACCOUNT_UPDATES_TOPIC)), special
            )

    def _context_part(self, codec: Codec, names: list[str]) -> _Part:
        """The update's ``account`` (``context_datum``), in parts as a record is: the fields of its account's
        identity and its sync milestones kept by value."""
        parts, uncached = _layout(
            codec,
            ACCOUNT_UPDATES_TOPIC,
            names,
            {},
            [
                _CachedRun(
                    _CONTEXT_IDENTITY_FIELDS,
                    lambda state, _: _CONTEXT_KEY(state),
                    lambda state, _: _context_identity(state),
                ),
                _MILESTONES,
            ],
            self._max_cached,
            _CONTEXT,
        )
        datum = context_datum if uncached & _CONTEXT_IDENTITY_FIELDS else _context_progress

        def part(update: AccountUpdate, fields: dict[str, Any]) -> bytes:
            state = update.account
            context = datum(state)
            return b"".join([write(state, context) for write in parts])

        return part

    @property
    def writes_in_parts(self) -> bool:
        """Whether the schemas are laid out as the parts expect (else every record is written whole)."""
        return self._state_parts is not None and self._update_parts is not None

    def state(self, state: AccountState) -> bytes:
        """The record of ``pinwheel.account_state.v1`` (``state_datum``)."""
        parts = self._state_parts
        if parts is None:
            return self._codec.encode_plain(ACCOUNT_STATE_TOPIC, state_datum(state))
        fields = self._state_fields(state)
        return self._codec.framed(ACCOUNT_STATE_TOPIC, b"".join([part(state, fields) for part in parts]))

    def update(self, update: AccountUpdate) -> bytes:
        """The record of ``pinwheel.account_updates.v1`` (``update_datum``)."""
        parts = self._update_parts
        if parts is None:
            return self._codec.encode_plain(ACCOUNT_UPDATES_TOPIC, update_datum(update))
        fields = self._update_fields(update)
        return self._codec.framed(ACCOUNT_UPDATES_TOPIC, b"".join([part(update, fields) for part in parts]))

    def _job_bytes(self, outcome: JobOutcome) -> bytes:
        cache = self._jobs
        value = cache.get(outcome)
        if value is None:
            if len(cache) > self._max_cached:
                cache.clear()
                self._keys.clear()
            value = cache[outcome] = self._job(outcome_datum(outcome))
        return value

    def _outcome_part(self, update: AccountUpdate, fields: dict[str, Any]) -> bytes:
        outcome = update.outcome
        return b"\x00" if outcome is None else b"\x02" + self._job_bytes(outcome)  # the union's branch 0 or 1

    def _jobs_part(self, state: AccountState, fields: dict[str, Any]) -> bytes:
        jobs = state.jobs
        if not jobs:
            return b"\x00"
        cached, keys, job_bytes = self._jobs, self._keys, self._job_bytes
        parts = [avro_long(len(jobs))]
        for job, outcome in jobs.items():
            value = cached.get(outcome) or job_bytes(outcome)  # first: a full cache is dropped with the keys
            key = keys.get(job)
            if key is None:
                key = keys[job] = avro_string(job)
            parts.append(key)
            parts.append(value)
        parts.append(b"\x00")
        return b"".join(parts)

    def _nullable_record_part(
        self,
        read: Callable[[AccountState], Any],
        encode: Callable[[Mapping[str, Any]], bytes],
        datum: Callable[[Any], Mapping[str, Any]],
        key: Callable[[Any], Hashable],
    ) -> _Part:
        """A ``["null", record]`` field of a state, the record's bytes kept by its `key` (its value, when hashable):
        a sync progress or a readiness changes at a few of its account's events. One cache per part."""
        cache: dict[Hashable, bytes] = {}
        max_cached = self._max_cached

        def part(state: AccountState, fields: dict[str, Any]) -> bytes:
            value = read(state)
            if value is None:
                return b"\x00"  # the union's branch 0, null
            value_key = key(value)
            data = cache.get(value_key)
            if data is None:
                if len(cache) > max_cached:
                    cache.clear()
                data = cache[value_key] = b"\x02" + encode(datum(value))  # the union's branch 1, the record
            return data

        return part


def _type_name(avro_type: Any) -> str | None:
    return avro_type if isinstance(avro_type, str) else avro_type.get("name") if isinstance(avro_type, dict) else None


def _nullable(avro_type: Any) -> str | None:
    """The named type of a ``["null", <named type>]`` union, else None."""
    if isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null":
        return _type_name(avro_type[1])
    return None


def _field_names(record_type: Any) -> list[str]:
    return [field["name"] for field in record_type["fields"]]


def _layout(
    codec: Codec,
    topic: str,
    names: Sequence[str],
    special: Mapping[str, _Part],
    cached: Sequence[_CachedRun] = (),
    max_cached: int = 0,
    record: str | None = None,
) -> tuple[list[_Part], set[str]]:
    """The parts of the body of `topic`'s record (or of its nested record type `record`), whose fields are `names`:
    the `special` fields' own, and the runs of fields between them, a run of fields of one of `cached` kept by
    value (at most `max_cached` values each); and the fields written by the runs not cached (the parts read those
    from the fields' datum every time)."""
    parts: list[_Part] = []
    uncached: set[str] = set()

    def group(name: str) -> int:
        """-1: a field of no cached run; else the index of its `cached` run."""
        return next((i for i, run in enumerate(cached) if name in run.fields), -1)

    runs: list[tuple[int, list[str]]] = []  # consecutive fields of one group
    for name in names:
        if name in special:
            runs.append((-2, [name]))
        elif runs and runs[-1][0] == group(name):
            runs[-1][1].append(name)
        else:
            runs.append((group(name), [name]))
    for index, run in runs:
        if index == -2:
            parts.append(special[run[0]])
            continue
        encode = codec.plain_fields_encoder(topic, run, record)
        if index == -1:
            parts.append(_fields_part(encode))
            uncached.update(run)
        else:
            parts.append(_cached_fields_part(encode, cached[index], max_cached))
    return parts, uncached


def _fields_part(encode: Callable[[Mapping[str, Any]], bytes]) -> _Part:
    return lambda value, fields: encode(fields)


def _cached_fields_part(encode: Callable[[Mapping[str, Any]], bytes], run: _CachedRun, max_cached: int) -> _Part:
    cache: dict[Hashable, bytes] = {}
    _, key_of, datum_of = run

    def part(value: Any, fields: dict[str, Any]) -> bytes:
        key = key_of(value, fields)
        data = cache.get(key)
        if data is None:
            if len(cache) > max_cached:
                cache.clear()
            data = cache[key] = encode(datum_of(value, fields))
        return data

    return part


def readiness_state_datum(readiness: Readiness) -> dict[str, Any]:
    return {
        "status": readiness.status,
        "reason": readiness.reason,
        "blocked_by": readiness.blocked_by,
        "met": dict(readiness.met),
        "first_seen": readiness.first_seen_us,
        "decided_at": readiness.decided_at_us,
    }


# -- the account state, read back ----------------------------------------------------------------------------
#
# The inverse of ``state_datum`` over a record as ``Codec.decode_plain`` gives it (uuids as text, times as epoch
# microseconds, as ``state_datum`` has them) or as ``Codec.decode`` does (fastavro's logical types: times as
# aware datetimes, uuids as UUIDs; ``decode_plain`` too for a record of an older writer schema); dates are dates
# in both. Lossless for the states the logic makes from what the gateway accepts
# (tests/processors/test_state_datum.py). A record written before AccountState v2 lacks the times that order
# job outcomes and sync statuses and the readiness: see ``account_state_of``.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(value: int | datetime | None) -> int | None:
    """Epoch microseconds, from themselves (a plain datum's) or from an aware datetime."""
    if value is None or isinstance(value, int):
        return value
    return _micros(value)


def _micros(value: int | datetime) -> int:
    return value if isinstance(value, int) else (value - _EPOCH) // _MICROSECOND


def _text(value: UUID | str | None) -> str | None:
    return None if value is None else str(value)


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _outcome_of(datum: Mapping[str, Any]) -> JobOutcome:
    pending_since, resolved_at = _us(datum["pending_since"]), _us(datum["resolved_at"])
    as_of = _us(datum["as_of"])
    if as_of is None:  # written before v2: the latest time the record has, so a newer delivery still wins
        as_of = max((t for t in (pending_since, resolved_at) if t is not None), default=0)
    return JobOutcome(
        datum["job"],
        _text(datum["job_id"]),
        datum["outcome"],
        datum["error_code"],
        datum["error_type"],
        pending_since,
        resolved_at,
        datum["deliveries_seen"],
        as_of,
    )


def _sync_of(datum: Mapping[str, Any] | None) -> SyncProgress | None:
    if datum is None:
        return None
    return SyncProgress(
        seven_days_synced_at_us=_us(datum["seven_days_synced_at"]),
        thirty_days_synced_at_us=_us(datum["thirty_days_synced_at"]),
        ninety_days_synced_at_us=_us(datum["ninety_days_synced_at"]),
        fully_synced_at_us=_us(datum["fully_synced_at"]),
        sync_status=datum["sync_status"],
        sync_status_at_us=_us(datum["sync_status_at"]),
        batches=datum["batches"],
        reported_count=datum["reported_count"],
        added_count=datum["added_count"],
        deleted_count=datum["deleted_count"],
        pay_date_from=_iso(datum["pay_date_from"]),
        pay_date_to=_iso(datum["pay_date_to"]),
        added_ids=tuple(datum["added_ids"]),
        deleted_ids=tuple(datum["deleted_ids"]),
        ids_truncated=datum["ids_truncated"],
        last_job_id=datum["last_job_id"],
    )


def _readiness_of(datum: Mapping[str, Any] | None) -> Readiness | None:
    if datum is None:
        return None
    return Readiness(
        datum["status"],
        datum["reason"],
        datum["blocked_by"],
        {requirement: _micros(at) for requirement, at in datum["met"].items()},
        _us(datum["first_seen"]),
        _us(datum["decided_at"]),
    )


def account_state_of(datum: Mapping[str, Any]) -> AccountState:
    """The ``AccountState`` of a ``pinwheel.account_state.v1`` record decoded by ``Codec.decode_plain`` or
    ``Codec.decode`` (the inverse of ``state_datum``). A record written before AccountState v2 reads with the
    defaults of the fields v2 added: no readiness (the rule judges the account again at its next event), no sync
    status time (the next batch's status is taken), and each job outcome ordered by the latest time the record
    has."""
    return AccountState(
        account_id=str(datum["account_id"]),
        end_user_id=_text(datum["end_user_id"]),
        platform_id=_text(datum["platform_id"]),
        platform_name=datum["platform_name"],
        link_token_id=_text(datum["link_token_id"]),
        connected=datum["connected"],
        created_at_us=_us(datum["account_created_at"]),
        monitoring_status=datum["monitoring_status"],
        monitoring_status_at_us=_us(datum["monitoring_status_updated_at"]),
        additional_platforms=tuple(
            Recommendation(r["platform_type"], r["action"], _text(r["platform_id"]))
            for r in datum["additional_platforms"]
        ),
        additional_platforms_at_us=_us(datum["additional_platforms_updated_at"]),
        jobs={job: _outcome_of(outcome) for job, outcome in datum["jobs"].items()},
        paystubs=_sync_of(datum["paystubs"]),
        shifts=_sync_of(datum["shifts"]),
        version=datum["events_applied"],
        last_event_id=datum["last_event_id"],
        last_event_type=datum["last_event_type"],
        last_event_sent_at_us=_us(datum["last_event_sent_at"]),
        last_change=datum["last_change"],
        updated_at_us=_us(datum["updated_at"]),
        readiness=_readiness_of(datum["readiness"]),
    )


def context_datum(state: AccountState) -> dict[str, Any]:
    """The ``AccountContext`` an account update carries: a few fields, not the whole state.

    Encoding cost grows with every nullable field (fastavro resolves each union branch by validation),
    and the full state is one topic away on ``pinwheel.account_state.v1``.
    """
    return {**_context_identity(state), **_context_progress(state)}


def _context_identity(state: AccountState) -> dict[str, Any]:
    """The fields of `context_datum` that `_CONTEXT_KEY` determines: they change rarely (`WireEncoder` caches them)."""
    return {
        "account_id": state.account_id,
        "end_user_id": state.end_user_id,
        "link_token_id": state.link_token_id,
        "platform_id": state.platform_id,
        "platform_name": state.platform_name,
        "connected": state.connected,
        "monitoring_status": None if state.monitoring_status is None else _monitoring_status(state.monitoring_status),
        "account_created_at": state.created_at_us,
    }


#: The state's values `_context_identity` reads, as `IDENTITY_ATTRS` for `_identity_fields`.
CONTEXT_ATTRS: Final = (
    "account_id",
    "end_user_id",
    "link_token_id",
    "platform_id",
    "platform_name",
    "connected",
    "monitoring_status",
    "created_at_us",
)
_CONTEXT_KEY = attrgetter(*CONTEXT_ATTRS)


def _context_progress(state: AccountState) -> dict[str, Any]:
    """The other fields of `context_datum`: those of every update."""
    paystubs, shifts = state.paystubs, state.shifts
    return {
        "paystubs_synced": None if paystubs is None else paystubs.deepest_milestone,
        "shifts_synced": None if shifts is None else shifts.deepest_milestone,
        "events_applied": state.version,
        "updated_at": state.updated_at_us,
    }


#: The names of `_context_identity`.
_CONTEXT_IDENTITY_FIELDS: Final = frozenset(_context_identity(AccountState("")))


def update_datum(update: AccountUpdate) -> dict[str, Any]:
    """The record of ``pinwheel.account_updates.v1``."""
    return {
        **_update_fields(update),
        "outcome": None if update.outcome is None else (_JOB_OUTCOME, outcome_datum(update.outcome)),
    }


def _update_fields(update: AccountUpdate) -> dict[str, Any]:
    """The fields of `update_datum` but its outcome (`WireEncoder` writes it apart)."""
    fields = _update_head(update)
    fields["account"] = context_datum(update.account)
    return fields


#: The text of each change (an enum's ``value`` is a descriptor call, in Python, per update).
_CHANGE_TEXT: Final = {change: change.value for change in Change}


def _update_head(update: AccountUpdate) -> dict[str, Any]:
    """The fields of `_update_fields` but its account's context (`WireEncoder` writes it apart too)."""
    return {
        "update_id": update.update_id,
        "account_id": update.account_id,
        "change": _CHANGE_TEXT[update.change],
        "trigger": envelope_datum(update.trigger),
    }


def readiness_datum(update: ReadinessUpdate) -> dict[str, Any]:
    """The record of ``pinwheel.account_readiness.v1``."""
    verdict = update.verdict
    return {
        "readiness_id": update.readiness_id,
        "account_id": update.account_id,
        "status": verdict.status,
        "reason": verdict.reason,
        "blocked_by": verdict.blocked_by,
        "error_code": verdict.error_code,
        "error_type": verdict.error_type,
        "rule": update.rule,
        "met": list(verdict.met),
        "missing": list(verdict.missing),
        "started_at": verdict.started_at_us,
        "ready_at": verdict.ready_at_us,
        "time_to_ready_ms": verdict.time_to_ready_ms,
        "decided_at": verdict.decided_at_us,
        "account_version": update.account.version,
        "trigger": envelope_datum(update.trigger),
    }


# -- headers -----------------------------------------------------------------------------------------------


@final
@dataclass(init=False)
class DeliveryIds:
    """The Pinwheel delivery of the record being processed: what output headers say they come from. A class with
    its own ``__init__`` (built per record: see ``processors.logic.outputs``)."""

    event_id: Final[str | None]
    event_type: Final[str | None]
    webhook_id: Final[str | None]
    pinwheel_version: Final[str | None]

    def __init__(
        self, event_id: str | None, event_type: str | None, webhook_id: str | None, pinwheel_version: str | None
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.webhook_id = webhook_id
        self.pinwheel_version = pinwheel_version

    @classmethod
    def of(cls, datum: dict[str, Any] | None, record: ConsumerRecord[bytes, bytes]) -> DeliveryIds:
        """From the decoded family record, or (undecodable) from the headers the gateway gave it."""
        if datum is None:
            datum = {}
            for name, value in record.headers or ():
                with contextlib.suppress(UnicodeDecodeError):
                    datum.setdefault(name, value.decode())
        get = datum.get
        event_id, event_type = get("event_id"), get("event_type")
        webhook_id, version = get("webhook_id"), get("pinwheel_version")
        return cls(
            event_id if isinstance(event_id, str) else None,
            event_type if isinstance(event_type, str) else None,
            webhook_id if isinstance(webhook_id, str) else None,
            version if isinstance(version, str) else None,
        )


def output_headers(
    content_format: str, event_id: str | None, event_type: str | None, delivery: DeliveryIds | None
) -> Headers:
    """The headers of every output record: the ids of the event it comes from. `webhook_id` and
    `pinwheel_version` are those of the delivery being processed, so they are given only when that
    delivery is the event (not for a timeout, whose event is a pending read long before)."""
    if delivery is not None and delivery.event_id == event_id:
        return record_headers(content_format, event_id, event_type, delivery.webhook_id, delivery.pinwheel_version)
    return record_headers(content_format, event_id, event_type)


# -- dead letters ------------------------------------------------------------------------------------------


def dead_letter_record(
    record: ConsumerRecord[bytes, bytes], delivery: DeliveryIds, reason: str, error: str, content_format: str
) -> tuple[bytes, dict[str, Any], Headers]:
    """(key, datum, headers) of the dead letter that keeps `record` whole, with why it was not processed."""
    event_id, event_type = delivery.event_id, delivery.event_type
    datum = build_dead_letter(
        stage="processor",
        reason=reason,
        error=error,
        raw=record.value or b"",
        headers=list(record.headers or ()),
        event_id=event_id,
        event_type=event_type,
        failed_at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_key=record.key,
    )
    headers = [*output_headers(content_format, event_id, event_type, delivery), ("error_reason", reason.encode())]
    return dead_letter_key(event_id, record.value or b""), datum, headers
