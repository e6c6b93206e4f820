"""Request classification (pure): a verified body → the Kafka record to publish.

A verified body always becomes exactly one record: its family topic, the `other` topic (an event type
without a model), or the dead-letter topic (not JSON, not an object, failing its payload model, or not
encodable). Genuine Pinwheel data is never refused after the signature matched. An unreachable schema
registry is not a property of the event: the record is then written in the self-describing single-object
format and marked `schema_id_pending`, to be re-framed once the registry answers (the spool keeps it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from gateway.kafka_record import KafkaRecord
from gateway.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from schemas.catalog import DEADLETTER_TOPIC, Family
from schemas.codec import SchemaNotResolved
from schemas.envelope import PayloadError, build_dead_letter, build_family_record, dead_letter_key, record_headers


class RecordEncoder(Protocol):
    """What the gateway needs of a codec (`schemas.codec.Codec` is one): a record value in the configured format,
    or in the single-object format while the registry has not given the schema id."""

    @property
    def content_format(self) -> str: ...

    def encode(self, topic: str, datum: Mapping[str, Any]) -> bytes:
        """Raises SchemaNotResolved while the registry has not given the topic's schema id."""
        ...

    def encode_portable(self, topic: str, datum: Mapping[str, Any]) -> bytes:
        """The single-object format, which needs no registry (see `KafkaRecord.schema_id_pending`)."""
        ...

    def reframe(self, topic: str, data: bytes) -> bytes:
        """An `encode_portable` value in this encoder's format (raises like `encode`)."""
        ...


class Route(StrEnum):
    FAMILY = "family"
    OTHER = "other"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class PlannedRecord:
    record: KafkaRecord
    route: Route
    event_id: str | None
    event_type: str | None
    reason: str | None  # why it was dead-lettered


# Request headers kept on a dead letter: enough to re-verify the raw bytes later, nothing secret.
DEAD_LETTER_REQUEST_HEADERS = (
    "content-type",
    "pinwheel-version",
    "x-pinwheel-webhook-id",
    "x-timestamp",
    "x-pinwheel-signature",
)


def _encode(codec: RecordEncoder, topic: str, datum: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The record value, and whether its schema id is still to be set (the registry did not answer yet)."""
    try:
        return codec.encode(topic, datum), False
    except SchemaNotResolved:
        return codec.encode_portable(topic, datum), True


def plan_record(
    body: bytes,
    *,
    request_headers: Mapping[str, str],
    webhook_id: str | None,
    pinwheel_version: str | None,
    sent_at: datetime,
    received_at: datetime,
    codec: RecordEncoder,
) -> PlannedRecord:
    """The record for a verified body (never raises for any body).

    `request_headers` (lower-case names): the signature and timestamp headers are kept on the record as
    received, the provenance `pinwheel-connector verify-record` re-checks."""
    timestamp_ms = int(received_at.timestamp() * 1000)
    reason: str
    detail: str
    event_id: str | None = None
    event_type: str | None = None
    try:
        family_record = build_family_record(
            body,
            webhook_id=webhook_id,
            pinwheel_version=pinwheel_version,
            sent_at=sent_at,
            received_at=received_at,
            signature=request_headers.get(SIGNATURE_HEADER),
            timestamp=request_headers.get(TIMESTAMP_HEADER),
        )
        value, pending = _encode(codec, family_record.topic, family_record.value)
    except PayloadError as exc:
        reason, detail, event_id, event_type = exc.reason, exc.detail, exc.event_id, exc.event_type
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Bodies past what the parser or the Avro writer handle (deep nesting, lone surrogates...):
        # still genuine data, so dead-lettered; only the exception type is recorded, no values.
        reason, detail = "unprocessable", type(exc).__name__
    else:
        route = Route.OTHER if family_record.family is Family.OTHER else Route.FAMILY
        headers = tuple(family_record.kafka_headers(codec.content_format))
        record = KafkaRecord(family_record.topic, family_record.key, value, headers, timestamp_ms, pending)
        return PlannedRecord(record, route, family_record.event_id, family_record.event_type, None)
    return dead_letter(
        body,
        reason=reason,
        detail=detail,
        event_id=event_id,
        event_type=event_type,
        request_headers=request_headers,
        webhook_id=webhook_id,
        pinwheel_version=pinwheel_version,
        received_at=received_at,
        codec=codec,
    )


def dead_letter(
    body: bytes,
    *,
    reason: str,
    detail: str,
    event_id: str | None,
    event_type: str | None,
    request_headers: Mapping[str, str],
    webhook_id: str | None,
    pinwheel_version: str | None,
    received_at: datetime,
    codec: RecordEncoder,
) -> PlannedRecord:
    kept = [(name, request_headers[name]) for name in DEAD_LETTER_REQUEST_HEADERS if name in request_headers]
    datum = build_dead_letter(
        stage="gateway",
        reason=reason,
        error=detail,
        raw=body,
        headers=kept,
        event_id=event_id,
        event_type=event_type,
        failed_at=received_at.astimezone(UTC),
    )
    try:
        value, pending = _encode(codec, DEADLETTER_TOPIC, datum)
    except (ValueError, TypeError, OverflowError):
        # An event_id/type the writer cannot take (e.g. a lone surrogate): keep the raw bytes anyway.
        event_id = event_type = None
        datum |= {"event_id": None, "event_type": None}
        value, pending = _encode(codec, DEADLETTER_TOPIC, datum)
    key = dead_letter_key(event_id, body)
    headers = tuple(record_headers(codec.content_format, event_id, event_type, webhook_id, pinwheel_version))
    record = KafkaRecord(DEADLETTER_TOPIC, key, value, headers, int(received_at.timestamp() * 1000), pending)
    return PlannedRecord(record, Route.DEAD_LETTER, event_id, event_type, reason)
