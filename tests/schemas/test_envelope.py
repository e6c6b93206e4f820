"""build_family_record errors and extras; dead letters; no payload values in error text."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.catalog import Family
from schemas.codec import Codec
from schemas.datum import read_family_record
from schemas.enums import MonitoringStatus, Outcome
from schemas.envelope import (
    FamilyRecord,
    PayloadError,
    build_dead_letter,
    build_family_record,
    dead_letter_key,
)
from schemas.models import PaystubsAdded
from tests.schemas.schema_fixtures import RECEIVED_AT, SENT_AT, capture

SECRET_VALUE = "4111-SECRET-payroll-value"


def build(body: bytes | dict[str, object]) -> FamilyRecord:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return build_family_record(raw, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT)


def capture_body(event_type: str) -> dict[str, object]:
    return next(json.loads(d.body) for d in capture() if json.loads(d.body)["event"] == event_type)


@pytest.mark.parametrize(
    ("body", "reason", "event_id"),
    [
        (b'{"event_id": "e1", "event": ', "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),
        (b"[1, 2]", "not_an_object", None),
        (b'{"event": "bill.added", "payload": {}}', "missing_event_id", None),
        (b'{"event_id": 7, "event": "bill.added"}', "missing_event_id", None),
        (b'{"event_id": "e1", "payload": {}}', "missing_event_type", "e1"),
        (b'{"event_id": "e1", "event": "paystubs.added", "payload": "x"}', "invalid_payload", "e1"),
        (b'{"event_id": "e1", "event": "paystubs.added"}', "invalid_payload", "e1"),
    ],
)
def test_unusable_bodies_raise_typed_errors(body: bytes, reason: str, event_id: str | None) -> None:
    with pytest.raises(PayloadError) as caught:
        build(body)
    assert caught.value.reason == reason
    assert caught.value.event_id == event_id


def test_validation_errors_name_paths_not_values() -> None:
    body = capture_body("paystubs.added")
    payload = body["payload"]
    assert isinstance(payload, dict)
    payload["account_id"] = SECRET_VALUE
    payload["timestamp"] = SECRET_VALUE
    payload["added"][0]["pay_date"] = SECRET_VALUE
    payload["outcome"] = 12345
    with pytest.raises(PayloadError) as caught:
        build(body)
    error = caught.value
    assert (error.reason, error.event_type) == ("invalid_payload", "paystubs.added")
    assert "payload.account_id: uuid_parsing" in error.detail
    assert "payload.added.0.pay_date" in error.detail
    assert "payload.outcome: enum" in error.detail
    assert SECRET_VALUE not in str(error)
    assert "12345" not in str(error)
    assert SECRET_VALUE not in repr(error)


def test_unknown_event_type_lands_in_other_with_raw_json() -> None:
    payload = {"end_user_id": "6a927ef1-6c91-43c9-abbe-6728dc8ef877", "bill": {"amount": 12.5, "n": 10**30}}
    raw = json.dumps({"event_id": "e9", "event": "bill.added", "payload": payload}).encode()
    record = build(raw)
    assert (record.topic, record.family) == ("pinwheel.other.v1", Family.OTHER)
    assert record.key == b"6a927ef1-6c91-43c9-abbe-6728dc8ef877"
    assert record.value["payload"] is None
    assert json.loads(record.value["extra_json"]) == payload
    assert record.value["raw_body"] == raw
    codec = Codec()
    event = read_family_record(codec.decode(record.topic, codec.encode(record.topic, record.value)))
    assert event.raw_payload == payload
    assert event.raw_body == raw


def test_unknown_fields_and_new_enum_values_are_kept() -> None:
    body = capture_body("paystubs.added")
    body["created_at"] = "top-level-extra"
    payload = body["payload"]
    assert isinstance(payload, dict)
    payload["outcome"] = "partially_succeeded"
    payload["brand_new"] = {"nested": [1, 2]}
    payload["params"]["window"] = "90d"
    payload["added"][0]["employer"] = "ACME"
    record = build(body)
    assert json.loads(record.value["extra_json"]) == {"brand_new": {"nested": [1, 2]}}
    assert json.loads(record.value["envelope_extra_json"]) == {"created_at": "top-level-extra"}
    _, datum = record.value["payload"]
    assert datum["outcome"] == "unknown"
    assert json.loads(datum["params"]["extra_json"]) == {"window": "90d"}
    assert json.loads(datum["added"][0]["extra_json"]) == {"employer": "ACME"}
    codec = Codec()
    event = read_family_record(codec.decode(record.topic, codec.encode(record.topic, record.value)))
    assert isinstance(event.payload, PaystubsAdded)
    assert event.payload.outcome is Outcome.UNKNOWN
    assert event.payload.model_extra == {"brand_new": {"nested": [1, 2]}}
    assert event.payload.params is not None
    assert event.payload.params.model_extra == {"window": "90d"}
    assert json.loads(event.raw_body)["payload"]["outcome"] == "partially_succeeded"


def test_timestamps_are_utc_instants() -> None:
    body = capture_body("account.added")
    body["payload"]["created_at"] = "2025-06-24T18:04:33.547314-04:00"  # type: ignore[index]
    local = timezone(timedelta(hours=2))
    record = build_family_record(
        json.dumps(body).encode(),
        webhook_id=None,
        pinwheel_version=None,
        sent_at=datetime(2025, 6, 25, 0, 4, 34, tzinfo=local),
        received_at=datetime(2025, 6, 24, 22, 4, 35),  # naive: taken as UTC
    )
    _, datum = record.value["payload"]
    assert datum["created_at"] == datetime(2025, 6, 24, 22, 4, 33, 547314, tzinfo=UTC)
    assert datum["created_at"].tzinfo is UTC
    assert record.value["sent_at"] == datetime(2025, 6, 24, 22, 4, 34, tzinfo=UTC)
    assert record.value["received_at"] == datetime(2025, 6, 24, 22, 4, 35, tzinfo=UTC)
    assert datum["monitoring_status"] == MonitoringStatus.ACTIVE


def test_kafka_headers() -> None:
    record = build(capture()[0].body)
    assert record.kafka_headers("avro-single-object") == [
        ("event_id", b"ec61a8b1-af27-4904-87e8-e5e2dbe25197"),
        ("event_type", b"account.added"),
        ("webhook_id", b"wh"),
        ("pinwheel_version", b"v"),
        ("content_format", b"avro-single-object"),
    ]


def test_dead_letter_from_a_payload_error() -> None:
    raw = b'{"event_id": "e1", "event": "paystubs.added", "payload": "' + SECRET_VALUE.encode() + b'"}'
    with pytest.raises(PayloadError) as caught:
        build(raw)
    error = caught.value
    datum = build_dead_letter(
        stage="gateway",
        reason=error.reason,
        error=error.detail,
        raw=raw,
        headers={"X-Timestamp": "1750802674", "X-Bin": b"\x00"},
        event_id=error.event_id,
        event_type=error.event_type,
        failed_at=datetime(2025, 6, 24, 22, 4, 35),
    )
    assert datum["failed_at"] == datetime(2025, 6, 24, 22, 4, 35, tzinfo=UTC)
    assert datum["headers"] == [
        {"name": "X-Timestamp", "value": b"1750802674"},
        {"name": "X-Bin", "value": b"\x00"},
    ]
    assert SECRET_VALUE not in datum["error"]
    codec = Codec()
    decoded = codec.decode("pinwheel.deadletter.v1", codec.encode("pinwheel.deadletter.v1", datum))
    assert decoded == datum
    assert dead_letter_key("e1", raw) == b"e1"
    assert dead_letter_key(None, raw) == hashlib.sha256(raw).hexdigest().encode()


@pytest.mark.parametrize("end_user_id", ["customer-user-42", "  padded  ", "x" * 255])
def test_an_end_user_id_of_the_customers_own_is_kept_not_refused(end_user_id: str) -> None:
    # Pinwheel's end_user_id is "User ID provided by you" (any text of 1-255 characters, returned in every webhook
    # event); the schemas type it `uuid`: a value that is not one is null in the typed payload, exact in raw_body.
    for event_type in ("account.added", "paystubs.added", "income.added", "shifts.added"):
        body = capture_body(event_type)
        payload = body["payload"]
        assert isinstance(payload, dict)
        payload["end_user_id"] = end_user_id
        raw = json.dumps(body).encode()
        record = build(raw)
        assert record.topic != "pinwheel.other.v1"
        _, datum = record.value["payload"]
        assert datum["end_user_id"] is None
        assert record.value["raw_body"] == raw
        codec = Codec()
        event = read_family_record(codec.decode(record.topic, codec.encode(record.topic, record.value)))
        assert json.loads(event.raw_body)["payload"]["end_user_id"] == end_user_id
