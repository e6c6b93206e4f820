"""The codec's encoder (cavro) writes the bytes fastavro writes, and refuses what fastavro refuses.

fastavro is the reference here: it decodes every record we read, and downstream readers use it or Avro's Java
library. The datums are the gateway's own (real and documented deliveries, generated payloads, dead letters);
the processors' outputs are checked the same way by tests/processors/pipeline_driver.py on every record.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings

from schemas.codec import Codec
from schemas.deadletter import build_dead_letter
from schemas.envelope import build_family_record
from tests.schemas.schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT, Delivery
from tests.schemas.schema_strategies import modelled_body

codec = Codec()


def _fastavro(topic: str, datum: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, codec.reader_schema(topic), datum)
    return out.getvalue()


def _assert_same_bytes(topic: str, datum: Mapping[str, Any]) -> None:
    written = codec.encode(topic, datum)
    assert written[:2] == b"\xc3\x01"
    assert written[10:] == _fastavro(topic, datum)


@pytest.mark.parametrize("delivery", ALL_DELIVERIES, ids=lambda d: d.name)
def test_family_records_of_real_and_documented_deliveries(delivery: Delivery) -> None:
    record = build_family_record(
        delivery.body, webhook_id="w", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    _assert_same_bytes(record.topic, record.value)


@settings(max_examples=200, deadline=None)
@given(modelled_body())
def test_family_records_of_generated_payloads(event: tuple[str, dict[str, Any]]) -> None:
    _, body = event
    raw = json.dumps(body).encode()
    record = build_family_record(raw, webhook_id=None, pinwheel_version=None, sent_at=SENT_AT, received_at=RECEIVED_AT)
    _assert_same_bytes(record.topic, record.value)


def test_dead_letters() -> None:
    datum = build_dead_letter(stage="gateway", reason="invalid_json", error="x", raw=b"{\xff", failed_at=SENT_AT)
    _assert_same_bytes("pinwheel.deadletter.v1", datum)


@pytest.mark.parametrize(
    ("field", "value"),
    [("sent_at", 2**80), ("event_id", 12), ("raw_body", None), ("event_type", b"bytes")],
)
def test_a_value_its_schema_cannot_carry_is_refused_by_both(field: str, value: Any) -> None:
    record = build_family_record(
        ALL_DELIVERIES[0].body, webhook_id="w", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    datum = {**record.value, field: value}
    with pytest.raises((ValueError, TypeError, OverflowError)):
        _fastavro(record.topic, datum)
    with pytest.raises(ValueError, match="Invalid value"):  # the gateway and the processors catch ValueError
        codec.encode(record.topic, datum)
