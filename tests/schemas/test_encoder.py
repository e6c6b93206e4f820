"""The codec's encoders write the bytes fastavro writes, and refuse what fastavro refuses.

Every test runs with each encoder: cavro (the `speed` extra; skipped where it is not installed) and the
fastavro writer it falls back to; `test_both_encoders_write_the_same_bytes` compares the two directly.
fastavro is the reference here: it decodes every record we read, and downstream readers use it or Avro's Java
library. The datums are the gateway's own (real and documented deliveries, generated payloads, dead letters);
the processors' outputs are checked the same way by tests/processors/pipeline_driver.py on every record.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings

from schemas.codec import CAVRO, FASTAVRO, Codec, DecodeError, InvalidValue, avro_long, avro_string, encoders
from schemas.deadletter import build_dead_letter
from schemas.envelope import build_family_record
from tests.schemas.schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT, SampleDelivery
from tests.schemas.schema_strategies import modelled_body

reference = Codec(encoder=FASTAVRO)  # its schemas only: the reference bytes are plain fastavro's


@pytest.fixture(scope="module", params=[CAVRO, FASTAVRO])
def codec(request: pytest.FixtureRequest) -> Codec:
    if request.param not in encoders():
        pytest.skip(f"{request.param} is not installed here (the [speed] extra, which installs nothing on Python 3.13)")
    return Codec(encoder=request.param)


def _fastavro(topic: str, datum: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, reference.reader_schema(topic), datum)
    return out.getvalue()


def _assert_same_bytes(codec: Codec, topic: str, datum: Mapping[str, Any]) -> None:
    written = codec.encode(topic, datum)
    assert written[:2] == b"\xc3\x01"
    assert written[10:] == _fastavro(topic, datum)


@pytest.mark.parametrize("delivery", ALL_DELIVERIES, ids=lambda d: d.name)
def test_family_records_of_real_and_documented_deliveries(codec: Codec, delivery: SampleDelivery) -> None:
    record = build_family_record(
        delivery.body, webhook_id="w", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    _assert_same_bytes(codec, record.topic, record.value)


@settings(max_examples=200, deadline=None)
@given(modelled_body())
def test_family_records_of_generated_payloads(codec: Codec, event: tuple[str, dict[str, Any]]) -> None:
    _, body = event
    raw = json.dumps(body).encode()
    record = build_family_record(raw, webhook_id=None, pinwheel_version=None, sent_at=SENT_AT, received_at=RECEIVED_AT)
    _assert_same_bytes(codec, record.topic, record.value)


def test_dead_letters(codec: Codec) -> None:
    datum = build_dead_letter(stage="gateway", reason="invalid_json", error="x", raw=b"{\xff", failed_at=SENT_AT)
    _assert_same_bytes(codec, "pinwheel.deadletter.v1", datum)


def test_records_of_every_size_one_after_the_other() -> None:
    """An encoder writes into a buffer as large as its largest record so far (schemas/codec.py): small records
    after large ones, and records larger than any buffer it starts with, are written whole and exactly."""
    codec = Codec()  # a fresh one: its encoders have written nothing yet
    for size in (0, 10, 100, 5_000, 3, 300_000, 60, 4_095, 4_097, 1):
        raw = bytes(range(256)) * (size // 256) + bytes(size % 256)
        datum = build_dead_letter(stage="gateway", reason="invalid_json", error="x", raw=raw, failed_at=SENT_AT)
        _assert_same_bytes(codec, "pinwheel.deadletter.v1", datum)


@pytest.mark.parametrize(
    ("field", "value"),
    [("sent_at", 2**80), ("event_id", 12), ("raw_body", None), ("event_type", b"bytes")],
)
def test_a_value_its_schema_cannot_carry_is_refused_by_both(codec: Codec, field: str, value: Any) -> None:
    record = build_family_record(
        ALL_DELIVERIES[0].body, webhook_id="w", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    datum = {**record.value, field: value}
    with pytest.raises((ValueError, TypeError, OverflowError)):
        _fastavro(record.topic, datum)
    with pytest.raises(InvalidValue, match="Invalid value"):  # a ValueError: the gateway and the processors catch it
        codec.encode(record.topic, datum)


@settings(max_examples=100, deadline=None)
@given(modelled_body())
def test_both_encoders_write_the_same_bytes(event: tuple[str, dict[str, Any]]) -> None:
    if CAVRO not in encoders():
        pytest.skip("cavro is not installed here: nothing to compare the fastavro writer with")
    _, body = event
    record = build_family_record(
        json.dumps(body).encode(), webhook_id="w", pinwheel_version=None, sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    assert Codec(encoder=CAVRO).encode(record.topic, record.value) == reference.encode(record.topic, record.value)


def test_the_default_encoder_is_the_fastest_installed_and_an_absent_one_is_refused() -> None:
    assert Codec().encoder_kind == encoders()[0]
    assert encoders()[-1] == FASTAVRO  # always there: fastavro is a dependency
    assert encoders()[0] == (CAVRO if CAVRO in encoders() else FASTAVRO)
    with pytest.raises(ValueError, match="not installed here"):
        Codec(encoder="avro-java")


@pytest.mark.parametrize("field", ["webhook_id", "event_id", "raw_body"])
def test_a_refusal_quotes_no_value(codec: Codec, field: str) -> None:
    """The callers log what the encoder raises: fastavro's own message quotes a value no union branch takes
    (payroll data, in a family record's fields); ours never does."""
    record = build_family_record(
        ALL_DELIVERIES[0].body, webhook_id="w", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    secret = 123456789
    with pytest.raises(InvalidValue) as refused:
        codec.encode(record.topic, {**record.value, field: secret})
    assert str(secret) not in str(refused.value)
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None  # a traceback of it prints no writer message either


_UPDATE_TOPIC = "pinwheel.account_updates.v1"
_ACCOUNT_ID = "87bbfdce-7cc1-4aba-80ca-847e6d5c65f4"
_PLAIN_UPDATE: dict[str, Any] = {  # as processors/wire.py makes it: uuids as text, times as epoch µs
    "update_id": "4a11a915-7cf2-4e6d-823e-af0fbd8077c8",
    "account_id": _ACCOUNT_ID,
    "change": "job_succeeded",
    "trigger": {
        "event_id": "4a11a915-7cf2-4e6d-823e-af0fbd8077c8",
        "event_type": "identity.added",
        "family": "income_employment",
        "sent_at": 1796626758982334,
        "received_at": -1,
    },
    "outcome": (
        "pinwheel.JobOutcome",
        {
            "job": "identity",
            "job_id": "307e4150-0f91-4fad-99f5-9da127e795bd",
            "outcome": "success",
            "error_code": None,
            "error_type": "x",
            "pending_since": None,
            "resolved_at": 1796626758945425,
            "time_to_resolve_ms": 12,
            "deliveries_seen": 1,
            "as_of": 1796626758945425,
        },
    ),
    "account": {
        "account_id": _ACCOUNT_ID,
        "end_user_id": "not a uuid: uuid text is written unchecked",
        "link_token_id": None,
        "platform_id": None,
        "platform_name": "Acme",
        "connected": True,
        "monitoring_status": "active",
        "account_created_at": 0,
        "paystubs_synced": None,
        "shifts_synced": "fully",
        "events_applied": 1,
        "updated_at": 1796626758982334,
    },
}


def test_encode_plain_writes_the_bytes_of_encode(codec: Codec) -> None:
    """The processors' datums carry uuids as text and times as ints: written without the logical types'
    conversions, the bytes are those of `encode` and of fastavro."""
    written = codec.encode_plain(_UPDATE_TOPIC, _PLAIN_UPDATE)
    assert written == codec.encode(_UPDATE_TOPIC, _PLAIN_UPDATE)
    assert written[10:] == _fastavro(_UPDATE_TOPIC, _PLAIN_UPDATE)


@pytest.mark.parametrize(
    ("field", "value"),
    [("account_id", UUID(_ACCOUNT_ID)), ("trigger", {**_PLAIN_UPDATE["trigger"], "sent_at": SENT_AT})],
    ids=["uuid", "datetime"],
)
def test_encode_plain_refuses_a_logical_value(codec: Codec, field: str, value: Any) -> None:
    """A UUID or a datetime where `encode_plain` takes text and ints is refused, never written differently."""
    datum = {**_PLAIN_UPDATE, field: value}
    codec.encode(_UPDATE_TOPIC, datum)  # `encode` converts it
    with pytest.raises(InvalidValue):
        codec.encode_plain(_UPDATE_TOPIC, datum)


def test_decode_plain_reads_back_the_datum_encode_plain_wrote(codec: Codec) -> None:
    """Its uuids as text and its times as ints, where `decode` gives UUIDs and datetimes (each encoder's reader);
    a union of one record reads as the record, as `decode` reads it."""
    written = codec.encode_plain(_UPDATE_TOPIC, _PLAIN_UPDATE)
    outcome = _PLAIN_UPDATE["outcome"][1]
    assert codec.decode_plain(_UPDATE_TOPIC, written) == {**_PLAIN_UPDATE, "outcome": outcome}  # text as written
    account = {**_PLAIN_UPDATE["account"], "end_user_id": _ACCOUNT_ID}  # `decode` reads only uuid text as a UUID
    written = codec.encode_plain(_UPDATE_TOPIC, {**_PLAIN_UPDATE, "account": account})
    assert codec.decode_plain(_UPDATE_TOPIC, written) == {**_PLAIN_UPDATE, "account": account, "outcome": outcome}
    decoded = codec.decode(_UPDATE_TOPIC, written)
    assert decoded["account_id"] == UUID(_ACCOUNT_ID)
    assert decoded["outcome"]["resolved_at"].timestamp() * 10**6 == outcome["resolved_at"]


def test_decode_plain_refuses_what_it_cannot_read(codec: Codec) -> None:
    """Bytes that are not a record of the topic raise DecodeError, as `decode`; a schema with a union of several
    records (a family record's payload), which `decode` reads as `(name, record)`, is refused."""
    written = codec.encode_plain(_UPDATE_TOPIC, _PLAIN_UPDATE)
    with pytest.raises(DecodeError):
        codec.decode_plain(_UPDATE_TOPIC, written[:14])
    with pytest.raises(DecodeError):
        codec.decode_plain(_UPDATE_TOPIC, b"\x07" + written[1:])
    record = build_family_record(
        ALL_DELIVERIES[0].body, webhook_id="w", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
    )
    with pytest.raises(ValueError, match="union of several records"):
        codec.decode_plain(record.topic, codec.encode(record.topic, record.value))


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, -65, 8191, 2**31, -(2**63), 2**63 - 1])
def test_avro_long_writes_fastavros_bytes(value: int) -> None:
    out = io.BytesIO()
    schemaless_writer(out, "long", value)
    assert avro_long(value) == out.getvalue()
    out = io.BytesIO()
    schemaless_writer(out, "string", f"é{value}")
    assert avro_string(f"é{value}") == out.getvalue()


def test_a_record_written_in_parts_is_the_record_written_whole(codec: Codec) -> None:
    """Runs of fields and a named type's value, one after the other, make the body `encode_plain` writes."""
    fields = [field["name"] for field in codec.reader_schema(_UPDATE_TOPIC)["fields"]]
    assert fields[4] == "outcome"
    body = b"".join(codec.plain_fields_encoder(_UPDATE_TOPIC, run)(_PLAIN_UPDATE) for run in (fields[:1], fields[1:4]))
    body += b"\x02" + codec.plain_type_encoder(_UPDATE_TOPIC, "pinwheel.JobOutcome")(_PLAIN_UPDATE["outcome"][1])
    body += codec.plain_fields_encoder(_UPDATE_TOPIC, fields[5:])(_PLAIN_UPDATE)
    assert codec.framed(_UPDATE_TOPIC, body) == codec.encode_plain(_UPDATE_TOPIC, _PLAIN_UPDATE)
    with pytest.raises(ValueError, match="consecutive"):
        codec.plain_fields_encoder(_UPDATE_TOPIC, [fields[0], fields[2]])
    with pytest.raises(KeyError):
        codec.plain_type_encoder(_UPDATE_TOPIC, "pinwheel.NoSuchType")


def test_a_nested_record_written_in_parts_is_the_record_written_whole(codec: Codec) -> None:
    """Runs of a nested record's fields make its body: the update's body with its ``account`` so written."""
    fields = [field["name"] for field in codec.reader_schema(_UPDATE_TOPIC)["fields"]]
    assert fields[-1] == "account"
    context = "pinwheel.AccountContext"
    names = [field["name"] for field in codec.reader_schema(_UPDATE_TOPIC)["fields"][-1]["type"]["fields"]]
    body = codec.plain_fields_encoder(_UPDATE_TOPIC, fields[:-1])(_PLAIN_UPDATE)
    runs = (names[:3], names[3:8], names[8:])
    body += b"".join(codec.plain_fields_encoder(_UPDATE_TOPIC, run, context)(_PLAIN_UPDATE["account"]) for run in runs)
    assert codec.framed(_UPDATE_TOPIC, body) == codec.encode_plain(_UPDATE_TOPIC, _PLAIN_UPDATE)
    with pytest.raises(ValueError, match="consecutive"):
        codec.plain_fields_encoder(_UPDATE_TOPIC, [names[0], names[2]], context)
    with pytest.raises(KeyError):
        codec.plain_fields_encoder(_UPDATE_TOPIC, names[:1], "pinwheel.NoSuchType")
    with pytest.raises(KeyError):  # a named type, not a record
        codec.plain_fields_encoder(_UPDATE_TOPIC, names[:1], "pinwheel.AccountChange")
