"""Classification of verified bodies (pure: catalog + codec, no Kafka)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.kafka_record import decode_record, encode_record
from gateway.records import Route, plan_record
from schemas.catalog import DEADLETTER_TOPIC, FAMILY_TOPICS, Family
from schemas.codec import Codec

CODEC = Codec()
NOW = datetime(2025, 6, 24, 22, 4, 40, tzinfo=UTC)
HEADERS = {"x-timestamp": "1750802680", "x-pinwheel-signature": "v2=" + "0" * 64, "pinwheel-version": "2023-11-22"}


def planned(body: bytes) -> Any:
    return plan_record(
        body,
        request_headers=HEADERS,
        webhook_id="wh-1",
        pinwheel_version="2023-11-22",
        sent_at=NOW,
        received_at=NOW,
        codec=CODEC,
    )


def test_capture_goes_to_family_topics(capture: list[dict[str, Any]]) -> None:
    for delivery in capture:
        body = delivery["body"].encode()
        result = planned(body)
        parsed = json.loads(body)
        assert result.route is Route.FAMILY
        assert result.record.key == parsed["payload"]["account_id"].encode()
        assert dict(result.record.headers)["event_id"] == parsed["event_id"].encode()
        assert result.record.timestamp_ms == int(NOW.timestamp() * 1000)
        assert CODEC.decode(result.record.topic, result.record.value)["raw_body"] == body
        assert decode_record(encode_record(result.record)) == result.record  # spoolable as is


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[]", "not_an_object"),
        (b'{"event": "income.added"}', "missing_event_id"),
        (b'{"event_id": "e1", "event": "income.added", "payload": {"account_id": 5}}', "invalid_payload"),
        (b"[" * 50_000 + b"]" * 50_000, "too_deeply_nested"),  # past the parser's nesting limit
        (b'{"event_id": "\\ud800", "event": "income.added", "payload": {}}', "invalid_json"),  # lone surrogate
    ],
)
def test_genuine_but_unusable_bodies_are_dead_lettered(body: bytes, reason: str) -> None:
    result = planned(body)
    assert result.route is Route.DEAD_LETTER
    assert result.reason == reason
    assert result.record.topic == DEADLETTER_TOPIC
    value = CODEC.decode(DEADLETTER_TOPIC, result.record.value)
    assert value["raw"] == body
    assert value["reason"] == reason
    assert {h["name"] for h in value["headers"]} >= {"x-timestamp", "x-pinwheel-signature"}
    if result.event_id is None:
        assert result.record.key == hashlib.sha256(body).hexdigest().encode()
    else:
        assert result.record.key == result.event_id.encode()


@pytest.mark.parametrize("depth", [201, 900])
def test_json_nested_past_the_parser_limit_says_so(depth: int) -> None:
    """Valid JSON we cannot parse is not called "not valid JSON": the dead letter names the nesting depth."""
    body = b'{"event_id": "e1", "event": "income.added", "payload": ' + b"[" * depth + b"]" * depth + b"}"
    json.loads(body)  # well-formed for an independent parser
    result = planned(body)
    assert result.route is Route.DEAD_LETTER
    assert result.reason == "too_deeply_nested"
    error = CODEC.decode(DEADLETTER_TOPIC, result.record.value)["error"]
    assert error == "JSON nested deeper than 200 levels"
    shallow = b'{"event_id": "e1", "event": "x.y", "payload": {"a": ' + b"[" * 190 + b"]" * 190 + b"}}"
    assert planned(shallow).route is Route.OTHER  # the limit is where the parser's is, not lower


def test_unknown_types_go_to_other_with_the_fallback_key() -> None:
    body = b'{"event_id": "e2", "event": "bill.reminder", "payload": {"end_user_id": "u-9", "amount": 12}}'
    result = planned(body)
    assert result.route is Route.OTHER
    assert result.record.topic == FAMILY_TOPICS[Family.OTHER]
    assert result.record.key == b"u-9"


class FailingFamilyCodec:
    """A codec whose family writer fails (as fastavro does on values it cannot write)."""

    content_format = CODEC.content_format

    def encode(self, topic: str, datum: Any) -> bytes:
        if topic != DEADLETTER_TOPIC:
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
        return CODEC.encode(topic, datum)


def test_a_body_the_writer_cannot_encode_is_dead_lettered_not_a_500(capture: list[dict[str, Any]]) -> None:
    body = capture[0]["body"].encode()
    result = plan_record(
        body,
        request_headers=HEADERS,
        webhook_id=None,
        pinwheel_version=None,
        sent_at=NOW,
        received_at=NOW,
        codec=FailingFamilyCodec(),
    )
    assert result.route is Route.DEAD_LETTER
    assert result.reason == "unprocessable"
    value = CODEC.decode(DEADLETTER_TOPIC, result.record.value)
    assert value["error"] == "UnicodeEncodeError"  # the type only: exception text can quote values
    assert value["raw"] == body
