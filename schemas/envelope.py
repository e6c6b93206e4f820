"""The gateway's single entry point: raw webhook body → the family-topic record (or a typed error).

Errors carry field paths and error types only — never payload values, since payroll data must not
reach logs or the dead-letter `error` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from schemas import jsontext
from schemas.catalog import Family, family_of, partition_key, topic_for
from schemas.datum import extra_json_of, payload_to_datum
from schemas.deadletter import build_dead_letter, dead_letter_key
from schemas.models import PAYLOAD_MODELS

__all__ = [
    "CONTENT_FORMAT_HEADER",
    "FamilyRecord",
    "PayloadError",
    "build_dead_letter",
    "build_family_record",
    "dead_letter_key",
    "parse_body",
    "read_body",
    "record_headers",
    "validation_summary",
]

CONTENT_FORMAT_HEADER = "content_format"
#: The headers that name the Pinwheel delivery a record comes from (docs/wire-format.md, Record headers).
EVENT_HEADERS = ("event_id", "event_type", "webhook_id", "pinwheel_version")
_ENVELOPE_FIELDS = frozenset({"event_id", "event", "payload"})


class PayloadError(ValueError):
    """A body that cannot become a family record; the gateway dead-letters it.

    reason: invalid_json | too_deeply_nested | not_an_object | missing_event_id | missing_event_type | invalid_payload.
    """

    def __init__(self, reason: str, detail: str, event_id: str | None = None, event_type: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_id = event_id
        self.event_type = event_type


@dataclass(frozen=True, slots=True)
class FamilyRecord:
    topic: str
    key: bytes
    event_id: str
    event_type: str
    value: dict[str, Any]
    """The Avro datum of `pinwheel.<Family>Event`."""

    @property
    def family(self) -> Family:
        return family_of(self.event_type) if self.value["payload"] is not None else Family.OTHER

    def kafka_headers(self, content_format: str) -> list[tuple[str, bytes]]:
        v = self.value
        return record_headers(content_format, self.event_id, self.event_type, v["webhook_id"], v["pinwheel_version"])


def record_headers(
    content_format: str,
    event_id: str | None = None,
    event_type: str | None = None,
    webhook_id: str | None = None,
    pinwheel_version: str | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of a record on any of our topics: the ids of the delivery it comes from (those known;
    an absent one is left out), then `content_format`. Values in UTF-8 (a lone surrogate escaped).

    Written out, not a loop over `EVENT_HEADERS`: one call per output record."""
    headers = []
    if event_id is not None:
        headers.append((_EVENT_ID, event_id.encode("utf-8", "backslashreplace")))
    if event_type is not None:
        headers.append((_EVENT_TYPE, event_type.encode("utf-8", "backslashreplace")))
    if webhook_id is not None:
        headers.append((_WEBHOOK_ID, webhook_id.encode("utf-8", "backslashreplace")))
    if pinwheel_version is not None:
        headers.append((_PINWHEEL_VERSION, pinwheel_version.encode("utf-8", "backslashreplace")))
    header = _CONTENT_FORMATS.get(content_format)
    if header is None:  # a codec's format: a couple of values in all
        header = _CONTENT_FORMATS[content_format] = (CONTENT_FORMAT_HEADER, content_format.encode())
    headers.append(header)
    return headers


_EVENT_ID, _EVENT_TYPE, _WEBHOOK_ID, _PINWHEEL_VERSION = EVENT_HEADERS
#: The content-format header of each format (a tuple, shared by the records: immutable).
_CONTENT_FORMATS: dict[str, tuple[str, bytes]] = {}


class WebhookBody(NamedTuple):
    """A webhook body read by the one set of rules both the gateway and the processors apply."""

    event_id: str
    event_type: str
    fields: dict[str, Any]
    """The whole body object: `payload` (absent, or anything a sender put there) and any other field."""

    @property
    def payload(self) -> Any:
        return self.fields.get("payload")


def parse_body(raw_body: bytes | str) -> WebhookBody:
    """Parse and check a webhook body (the JSON text Pinwheel signed). Raises PayloadError."""
    try:
        body = jsontext.loads(raw_body)
    except jsontext.TooDeepError as exc:
        raise PayloadError("too_deeply_nested", str(exc)) from None
    except ValueError:
        # The parser's message may quote the body; keep none of it.
        raise PayloadError("invalid_json", "body is not valid UTF-8 JSON") from None
    return read_body(body)


def read_body(body: object) -> WebhookBody:
    """Check an already parsed body. Raises PayloadError."""
    if not isinstance(body, dict):
        raise PayloadError("not_an_object", f"body is a JSON {type(body).__name__}, expected an object")
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise PayloadError("missing_event_id", "event_id is missing, empty or not a string")
    event_type = body.get("event")
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("missing_event_type", "event is missing, empty or not a string", event_id)
    return WebhookBody(event_id, event_type, body)


def validation_summary(error: ValidationError, prefix: str = "payload") -> str:
    """`path: error_type` per problem; ValidationError's own text would quote the input values."""
    parts = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        path = ".".join(str(part) for part in (prefix, *item["loc"]))
        parts.append(f"{path}: {item['type']}")
    return "; ".join(parts)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def build_family_record(
    raw_body: bytes,
    *,
    webhook_id: str | None,
    pinwheel_version: str | None,
    sent_at: datetime,
    received_at: datetime,
    signature: str | None = None,
    timestamp: str | None = None,
) -> FamilyRecord:
    """Parse, validate and route one webhook body. Raises PayloadError.

    `signature` and `timestamp` are the `x-pinwheel-signature` and `x-timestamp` request headers as received:
    kept beside `raw_body`, they let anyone holding the secret prove the record's origin again, offline.
    """
    parsed = parse_body(raw_body)
    event_id, event_type, body = parsed.event_id, parsed.event_type, parsed.fields
    payload = parsed.payload
    model = PAYLOAD_MODELS.get(event_type)
    if model is None:
        family = Family.OTHER
        payload_datum = None
        extra_json = jsontext.dumps(payload) if "payload" in body else None
    else:
        family = family_of(event_type)
        try:
            typed = model.model_validate(payload)
        except ValidationError as exc:
            raise PayloadError("invalid_payload", validation_summary(exc), event_id, event_type) from None
        payload_datum = payload_to_datum(typed)
        extra_json = extra_json_of(typed)

    envelope_extra = {k: v for k, v in body.items() if k not in _ENVELOPE_FIELDS}
    value: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "webhook_id": webhook_id,
        "pinwheel_version": pinwheel_version,
        "sent_at": _utc(sent_at),
        "received_at": _utc(received_at),
        "payload": payload_datum,
        "extra_json": extra_json,
        "envelope_extra_json": jsontext.dumps(envelope_extra) if envelope_extra else None,
        "raw_body": bytes(raw_body),
        "x_pinwheel_signature": signature,
        "x_timestamp": timestamp,
    }
    return FamilyRecord(
        topic=topic_for(family),
        key=partition_key(event_type, event_id, payload).encode(),
        event_id=event_id,
        event_type=event_type,
        value=value,
    )
