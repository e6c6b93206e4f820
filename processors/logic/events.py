"""The normalized input of the processors: one ``Event`` per accepted webhook delivery.

The runtime builds an ``Event`` from the decoded family-topic record: its envelope, and the payload of its raw body
read by the gateway's own rules (``schemas.envelope.parse_body``); tests and the simulator build one from a raw
webhook body (``event_from_webhook``). Both go through ``event_from_payload``, so the account key, the event time
and the job fields are derived in exactly one place.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, NamedTuple, final

from processors.logic.timeutil import to_us
from schemas import catalog
from schemas.envelope import PayloadError, parse_body, read_body

#: Whether a string is a UUID in canonical form (lowercase, dashed): what ``str(uuid.UUID(value))`` gives back.
#: Most ids come that way, and the match costs a fraction of parsing one.
is_canonical_uuid: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_NO_PAYLOAD: Mapping[str, Any] = MappingProxyType({})


class InvalidEvent(ValueError):
    """A body or payload that cannot become an ``Event``; ``reason`` is a stable dead-letter reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@final
@dataclass(init=False)
class Event:
    """One webhook delivery, normalized. The delivery's times are epoch µs (what the records carry and the logic
    computes with); the payload's own time, parsed from its text, is an aware UTC datetime.

    A class with its own ``__init__`` (the dataclass gives it equality and its repr only): compiled, one is built
    per record in a tenth of a named tuple's time, whose constructor runs as Python.
    """

    event_id: Final[str]
    event_type: Final[str]
    #: The partition key: account_id, else end_user_id, else company_connection_id, else event_id.
    account_key: Final[str]
    account_id: Final[str | None]
    #: When the gateway read the request (epoch µs): the event time of stream processing.
    received_at_us: Final[int]
    #: The payload's own time: ``timestamp`` (jobs), ``updated_at`` (monitoring status),
    #: ``created_at`` (account.added).
    occurred_at: Final[datetime | None]
    family: Final[str]
    #: ``x-timestamp`` of the delivery attempt (epoch µs).
    sent_at_us: Final[int | None]
    job_id: Final[str | None]
    job_name: Final[str | None]
    #: One of ``catalog.JOB_OUTCOMES`` (checked when the event is built), None for other events.
    outcome: Final[str | None]
    error_code: Final[str | None]
    error_type: Final[str | None]
    payload: Final[Mapping[str, Any]]
    #: When the broker appended the record (epoch µs; topics with broker-set timestamps): bounds how far this
    #: event may move stream time, whatever clock stamped ``received_at_us``.
    logged_at_us: Final[int | None]

    def __init__(
        self,
        event_id: str,
        event_type: str,
        account_key: str,
        account_id: str | None,
        received_at_us: int,
        occurred_at: datetime | None = None,
        family: str = catalog.Family.OTHER.value,
        sent_at_us: int | None = None,
        job_id: str | None = None,
        job_name: str | None = None,
        outcome: str | None = None,
        error_code: str | None = None,
        error_type: str | None = None,
        payload: Mapping[str, Any] = _NO_PAYLOAD,
        logged_at_us: int | None = None,
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.account_key = account_key
        self.account_id = account_id
        self.received_at_us = received_at_us
        self.occurred_at = occurred_at
        self.family = family
        self.sent_at_us = sent_at_us
        self.job_id = job_id
        self.job_name = job_name
        self.outcome = outcome
        self.error_code = error_code
        self.error_type = error_type
        self.payload = payload
        self.logged_at_us = logged_at_us

    @property
    def is_job(self) -> bool:
        return catalog.is_job(self.event_type, self.outcome)


class EventEnvelope(NamedTuple):
    """The triggering event's envelope as carried by outputs and kept in job state (times in epoch µs)."""

    event_id: str
    event_type: str
    family: str
    sent_at_us: int | None
    received_at_us: int

    @classmethod
    def of(cls, event: Event, received_at_us: int) -> EventEnvelope:
        return cls(event.event_id, event.event_type, event.family, event.sent_at_us, received_at_us)


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _account_id(payload: Mapping[str, Any]) -> str | None:
    value = _opt_str(payload.get("account_id"))
    return None if value is None else catalog.normalise_id(value)


def _job_id(payload: Mapping[str, Any]) -> str | None:
    """A job's ``id`` in canonical form: outputs type it as a UUID, so anything else is refused."""
    value = payload.get("id")
    if value is None:
        return None
    try:
        if isinstance(value, str):
            if is_canonical_uuid(value):
                return value  # already what str(uuid.UUID(value)) gives, at a fraction of the cost
            return str(uuid.UUID(value))
    except ValueError:
        pass
    raise InvalidEvent("invalid_job_id", "a job's id must be a UUID string")


def parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 payload timestamp as aware UTC; ``None`` when absent or unparsable.

    Lenient on purpose: the gateway already validated the payload, and the processors fall back to
    ``received_at`` rather than dead-lettering a real event over a malformed time field. A naive timestamp is
    taken as UTC (Pinwheel always sends an offset).
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _epoch_us(name: str, value: datetime) -> int:
    """Epoch µs of an aware datetime; a naive one is refused (never guess a zone)."""
    if value.tzinfo is None:
        raise InvalidEvent("naive_datetime", f"{name} must be timezone-aware")
    return to_us(value)


def event_from_payload(
    *,
    event_id: str,
    event_type: str,
    payload: Mapping[str, Any],
    received_at_us: int,
    sent_at_us: int | None = None,
    family: str | None = None,
    logged_at_us: int | None = None,
) -> Event:
    """Normalize one decoded delivery (its times in epoch µs, as the records carry them). Raises ``InvalidEvent``
    for what no processor could use."""
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("missing_event_id", "event_id must be a non-empty string")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent("missing_event_type", "event must be a non-empty string")
    if type(payload) is not dict and not isinstance(payload, Mapping):  # parsed JSON: a dict, without the ABC
        raise InvalidEvent("invalid_payload", "payload must be an object")
    get = payload.get
    raw_outcome = get("outcome")
    if raw_outcome is not None and raw_outcome not in catalog.JOB_OUTCOMES:
        raise InvalidEvent("invalid_outcome", f"outcome must be one of {sorted(catalog.JOB_OUTCOMES)}")
    account_id = _account_id(payload)
    return Event(
        event_id,
        event_type,
        # The partition key rule takes a present account_id first, whatever the family: no second reading.
        account_id if account_id is not None else catalog.partition_key(event_type, event_id, payload),
        account_id,
        received_at_us,
        parse_timestamp(get(catalog.occurred_at_field(event_type))),
        family if family is not None else catalog.family_of(event_type).value,
        sent_at_us,
        _job_id(payload) if catalog.is_job(event_type, raw_outcome) else None,
        _opt_str(get("name")),
        raw_outcome,
        _opt_str(get("error_code")),
        _opt_str(get("error_type")),
        payload,
        logged_at_us,
    )


def event_from_webhook(
    body: bytes | str | Mapping[str, Any],
    received_at: datetime,
    *,
    sent_at: datetime | None = None,
    family: str | None = None,
) -> Event:
    """An ``Event`` from a raw webhook body ``{"event", "event_id", "payload"}`` (tests, simulator), read by the
    gateway's rules (``schemas.envelope.parse_body``); its times aware datetimes (a naive one is refused)."""
    try:
        parsed = parse_body(body) if isinstance(body, bytes | str) else read_body(body)
    except PayloadError as exc:
        raise InvalidEvent(exc.reason, exc.detail) from None
    return event_from_payload(
        event_id=parsed.event_id,
        event_type=parsed.event_type,
        payload=parsed.payload,
        received_at_us=_epoch_us("received_at", received_at),
        sent_at_us=None if sent_at is None else _epoch_us("sent_at", sent_at),
        family=family,
    )
