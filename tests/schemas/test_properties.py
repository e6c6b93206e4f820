"""Property tests: generated payloads (nulls, absent fields, unknown fields, new enum values) round-trip."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.catalog import Family
from schemas.codec import Codec
from schemas.datum import read_family_record
from schemas.enums import OpenEnum
from schemas.envelope import build_family_record
from schemas.models import PinwheelModel, parse_payload
from tests.schemas.schema_fixtures import RECEIVED_AT, SENT_AT
from tests.schemas.schema_strategies import json_values, modelled_body, uuids

codec = Codec()


def _extras_everywhere(model: Any, path: str = "") -> dict[str, Any]:
    """path → model_extra of the model and every nested model."""
    found = {path: dict(model.model_extra or {})}
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = value if isinstance(value, list) else [value]
        for index, child in enumerate(children):
            if isinstance(child, PinwheelModel):
                found |= _extras_everywhere(child, f"{path}.{name}[{index}]")
    return found


@settings(max_examples=300, deadline=None)
@given(modelled_body())
def test_generated_payloads_round_trip(event: tuple[str, dict[str, Any]]) -> None:
    event_type, body = event
    raw = json.dumps(body).encode()
    record = build_family_record(raw, webhook_id=None, pinwheel_version=None, sent_at=SENT_AT, received_at=RECEIVED_AT)

    decoded = codec.decode(record.topic, codec.encode(record.topic, record.value))
    assert decoded == record.value

    direct = parse_payload(event_type, body["payload"])
    assert direct is not None
    read = read_family_record(decoded).payload
    assert read == direct
    # Unknown fields survive at every depth, values intact.
    assert _extras_everywhere(read) == _extras_everywhere(direct)
    top_level_unknown = {k: v for k, v in body["payload"].items() if k not in type(direct).model_fields}
    assert (json.loads(record.value["extra_json"]) if record.value["extra_json"] else {}) == top_level_unknown
    # Open enums: a value we do not know yet maps to `unknown`, a known one stays typed.
    for name in ("outcome", "monitoring_status", "current_monitoring_status"):
        if name in body["payload"]:
            value = getattr(direct, name)
            assert isinstance(value, OpenEnum)
            sent = body["payload"][name]
            assert value.value == (sent if sent in {m.value for m in type(value).known()} else "unknown")


@settings(max_examples=150, deadline=None)
@given(
    event_type=st.sampled_from(["bill.added", "company_connect.status.updated", "account.renamed", "x"]),
    payload=json_values,
    event_id=uuids,
    with_payload=st.booleans(),
)
def test_unmodelled_types_keep_their_payload(event_type: str, payload: Any, event_id: str, with_payload: bool) -> None:
    body: dict[str, Any] = {"event_id": event_id, "event": event_type}
    if with_payload:
        body["payload"] = payload
    raw = json.dumps(body).encode()
    record = build_family_record(raw, webhook_id="w", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT)
    assert record.topic == "pinwheel.other.v1"
    assert record.family is Family.OTHER
    decoded = codec.decode(record.topic, codec.encode(record.topic, record.value))
    assert decoded == record.value
    assert decoded["raw_body"] == raw
    event = read_family_record(decoded)
    assert event.payload is None
    assert event.raw_payload == (payload if with_payload else None)
