"""Every documented sample and every captured body: parse, route, key, encode, decode, read back."""

from __future__ import annotations

import json

import pytest

from schemas.catalog import Family, family_of, topic_for
from schemas.codec import Codec
from schemas.datum import read_family_record
from schemas.envelope import build_family_record
from schemas.models import parse_payload
from tests.schemas.schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT, SampleDelivery

EXPECTED_FAMILY = {
    "account": Family.ACCOUNT,
    "direct_deposit_allocations": Family.DIRECT_DEPOSIT,
    "direct_deposit_switch": Family.DIRECT_DEPOSIT,
    "employment": Family.INCOME_EMPLOYMENT,
    "identity": Family.INCOME_EMPLOYMENT,
    "income": Family.INCOME_EMPLOYMENT,
    "paystubs": Family.PAYSTUBS,
    "shifts": Family.SHIFTS,
}


@pytest.mark.parametrize("delivery", ALL_DELIVERIES, ids=lambda d: d.name)
def test_body_routes_encodes_and_decodes(delivery: SampleDelivery, codec: Codec) -> None:
    body = json.loads(delivery.body)
    record = build_family_record(
        delivery.body,
        webhook_id="wh",
        pinwheel_version="2023-11-22",
        sent_at=SENT_AT,
        received_at=RECEIVED_AT,
    )
    family = EXPECTED_FAMILY[body["event"].split(".")[0]]
    assert family_of(body["event"]) is family
    assert record.topic == topic_for(family) == f"pinwheel.{family.value}.v1"
    assert record.key == body["payload"]["account_id"].encode()
    assert record.event_id == body["event_id"]
    assert record.value["raw_body"] == delivery.body

    decoded = codec.decode(record.topic, codec.encode(record.topic, record.value))
    assert decoded == record.value

    direct = parse_payload(body["event"], body["payload"])
    assert direct is not None
    # Every field Pinwheel sent is either modelled or kept as an extra.
    assert set(direct.model_dump(exclude_unset=True)) == set(body["payload"])
    event = read_family_record(decoded)
    assert event.family is family
    assert event.payload == direct
