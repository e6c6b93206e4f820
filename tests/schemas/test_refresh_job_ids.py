"""Issue 26: ids the docs call "undefined" in some flows, and the provenance headers on family records.

`link_token_id` accepts any string: a non-UUID becomes null in the typed fields, `raw_body` keeps it. The
signature and x-timestamp headers ride on the record as received (schema v2) and old v1 records still decode.
"""

from __future__ import annotations

import io
import json
import uuid

import fastavro
import pytest

from gateway.signature import sign
from schemas.catalog import MODELLED_EVENT_TYPES
from schemas.codec import Codec
from schemas.datum import read_family_record
from schemas.envelope import PayloadError, build_family_record
from schemas.models import AccountAdded, IncomeAdded, uuid_or_none
from schemas.store import TOPIC_RECORDS, load_store
from tests.refresh_jobs import LINK_TOKEN_SHAPES, refresh_body, samples_with_link_token
from tests.schemas.schema_fixtures import RECEIVED_AT, SENT_AT

SAMPLES = samples_with_link_token()
ACCOUNT = "449e7a5c-69d3-4b8a-aaaf-5c9b713ebc65"


def test_the_samples_cover_account_added_and_every_job_event() -> None:
    types = {sample["event"] for sample in SAMPLES}
    no_link_token = {"account.monitoring_status.updated", "account.additional_connections_recommended"}
    assert types == set(MODELLED_EVENT_TYPES) - no_link_token  # account.added and the 15 job event types


@pytest.mark.parametrize("shape", sorted(LINK_TOKEN_SHAPES))
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s["event"])
def test_refresh_job_link_tokens_are_null_in_the_typed_fields(sample: dict[str, object], shape: str) -> None:
    body = refresh_body(sample, shape, ACCOUNT)
    record = build_family_record(body, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT)
    codec = Codec()
    event = read_family_record(codec.decode(record.topic, codec.encode(record.topic, record.value)))
    assert event.payload is not None
    assert event.payload.link_token_id is None  # type: ignore[attr-defined]
    assert str(event.payload.account_id) == ACCOUNT
    assert event.raw_body == body  # the exact value Pinwheel sent stays available
    sent = LINK_TOKEN_SHAPES[shape]
    assert json.loads(event.raw_body)["payload"].get("link_token_id") == sent


def test_a_uuid_link_token_stays_typed_and_canonical() -> None:
    token = uuid.uuid4()
    payload = {"account_id": ACCOUNT, "name": "income", "timestamp": "2025-06-24T22:04:34+00:00", "outcome": "success"}
    assert IncomeAdded.model_validate({**payload, "link_token_id": str(token).upper()}).link_token_id == token
    assert uuid_or_none(str(token)) == token
    assert uuid_or_none("undefined") is None
    assert uuid_or_none(None) is None


@pytest.mark.parametrize("value", [7, {"id": "x"}, ["undefined"]])
def test_a_link_token_that_is_not_a_string_is_still_invalid(value: object) -> None:
    sample = next(s for s in SAMPLES if s["event"] == "income.added")
    body = json.loads(refresh_body(sample, "missing", ACCOUNT))
    body["payload"]["link_token_id"] = value
    with pytest.raises(PayloadError) as caught:
        build_family_record(
            json.dumps(body).encode(), webhook_id=None, pinwheel_version=None, sent_at=SENT_AT, received_at=RECEIVED_AT
        )
    assert caught.value.reason == "invalid_payload"
    assert "payload.link_token_id" in caught.value.detail


def test_account_added_link_token_is_optional_and_lenient() -> None:
    fields = AccountAdded.model_fields["link_token_id"]
    assert not fields.is_required()


def test_signature_and_timestamp_headers_are_kept_as_received() -> None:
    body = refresh_body(SAMPLES[0], "undefined", ACCOUNT)
    signature = sign(b"secret", 1750802674, body)
    record = build_family_record(
        body, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT,
        signature=signature, timestamp=" 1750802674",
    )  # fmt: skip
    codec = Codec()
    datum = codec.decode(record.topic, codec.encode(record.topic, record.value))
    assert (datum["x_pinwheel_signature"], datum["x_timestamp"]) == (signature, " 1750802674")
    event = read_family_record(datum)
    assert (event.x_pinwheel_signature, event.x_timestamp) == (signature, " 1750802674")


@pytest.mark.parametrize("event_type", ["account.added", "income.added", "bill.added"])
def test_records_written_with_v1_decode_with_null_provenance(event_type: str) -> None:
    """A record on the topics from before the evolution (an account.added with its then required link token, a job,
    an `other` event): read with the v2 reader, the new fields are null and nothing else changes."""
    sample = next(s for s in SAMPLES if s["event"] == event_type.replace("bill.added", "income.added"))
    body = json.loads(refresh_body(sample, "missing", ACCOUNT))
    body["event"] = event_type
    body["payload"]["link_token_id"] = str(uuid.uuid4())
    raw = json.dumps(body).encode()
    record = build_family_record(raw, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT)
    store = load_store()
    name = TOPIC_RECORDS[record.topic]
    v1, current = store.versions(name)[0], store.current(name)
    assert (v1.version, current.version) == (1, 2)
    old = {k: v for k, v in record.value.items() if k not in ("x_pinwheel_signature", "x_timestamp")}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, v1.parsed, old)
    datum = Codec().decode(record.topic, b"\xc3\x01" + v1.fingerprint + out.getvalue())
    assert datum == {**record.value, "x_pinwheel_signature": None, "x_timestamp": None}
