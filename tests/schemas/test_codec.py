"""The codec: both wire formats, byte layout, fingerprints, registry, errors."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, date, datetime, timedelta

import pytest
from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import ACCOUNT_STATE_TOPIC, ACCOUNT_UPDATES_TOPIC, DEADLETTER_TOPIC, FAMILY_TOPICS
from schemas.codec import SINGLE_OBJECT, Codec, DecodeError, SchemaSettings, encoders
from schemas.confluent import RegistryClient
from schemas.deadletter import build_dead_letter
from schemas.envelope import build_family_record
from schemas.store import TOPIC_RECORDS, crc64_fingerprint, load_store, parse
from tests.schema_registry import Registry
from tests.schemas.schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT

RECORDS = [
    build_family_record(d.body, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT)
    for d in ALL_DELIVERIES
]
NOW = datetime(2025, 6, 24, 22, 5, tzinfo=UTC)
RECEIVED_AT_US = int(RECEIVED_AT.timestamp()) * 10**6 + RECEIVED_AT.microsecond


def account_state() -> dict[str, object]:
    return {
        "account_id": "934f6406-c332-4c05-a3e8-6a90765c842d",
        "end_user_id": None,
        "link_token_id": None,
        "platform_id": None,
        "platform_name": "Workday",
        "connected": True,
        "monitoring_status": "active",
        "monitoring_status_updated_at": None,
        "account_created_at": NOW,
        "additional_platforms": [],
        "jobs": {
            "paystubs": {
                "job": "paystubs",
                "job_id": None,
                "outcome": "timed_out",
                "error_code": None,
                "error_type": None,
                "pending_since": NOW,
                "resolved_at": NOW,
                "time_to_resolve_ms": 0,
                "deliveries_seen": 2,
                "as_of": NOW,  # v2 of AccountState and AccountUpdate
            }
        },
        "paystubs_synced": "fully",
        "shifts_synced": None,
        "paystubs": {
            "seven_days_synced_at": NOW,
            "thirty_days_synced_at": None,
            "ninety_days_synced_at": None,
            "fully_synced_at": NOW,
            "sync_status": "complete",
            "sync_status_at": NOW,
            "batches": 4,
            "reported_count": 27,
            "added_count": 27,
            "deleted_count": 0,
            "pay_date_from": date(2024, 3, 19),
            "pay_date_to": date(2025, 6, 24),
            "added_ids": ["c80ed2d6-a0fe-4b63-8c92-92414cea9b37"],
            "deleted_ids": [],
            "ids_truncated": True,
            "last_job_id": "2f76dfac-128d-491c-9f20-4ba4afbfdd6d",
        },
        "shifts": None,
        "additional_platforms_updated_at": None,
        "last_change": "sync_progressed",
        "last_event_id": "e1",
        "last_event_type": "paystubs.added",
        "last_event_sent_at": NOW,
        "events_applied": 3,
        "updated_at": NOW,
        "readiness": {
            "status": "account_ready",
            "reason": None,
            "blocked_by": None,
            "met": {"paystubs.added": NOW},
            "first_seen": NOW,
            "decided_at": NOW,
        },
    }


CONTEXT_FIELDS = (
    "account_id",
    "end_user_id",
    "link_token_id",
    "platform_id",
    "platform_name",
    "connected",
    "monitoring_status",
    "account_created_at",
    "paystubs_synced",
    "shifts_synced",
    "events_applied",
    "updated_at",
)


def account_context() -> dict[str, object]:
    state = account_state()
    return {name: state[name] for name in CONTEXT_FIELDS}


def test_fingerprint_is_crc64_avro_of_the_canonical_form() -> None:
    # Test vector of the Avro specification (share/test/data/schema-tests.txt): "null" → 7195948357588979594.
    assert struct.unpack("<q", crc64_fingerprint(parse("null")))[0] == 7195948357588979594


def test_single_object_layout(codec: Codec) -> None:
    record = RECORDS[0]
    data = codec.encode(record.topic, record.value)
    current = load_store().current(TOPIC_RECORDS[record.topic])
    assert codec.content_format == SINGLE_OBJECT
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == current.fingerprint
    # The rest is the plain Avro binary body.
    assert schemaless_reader(io.BytesIO(data[10:]), current.parsed) is not None


@pytest.mark.parametrize(
    ("topic", "datum"),
    [
        (
            DEADLETTER_TOPIC,
            build_dead_letter(stage="gateway", reason="invalid_json", error="e", raw=b"{", failed_at=NOW),
        ),
        (ACCOUNT_STATE_TOPIC, account_state()),
        (
            ACCOUNT_UPDATES_TOPIC,
            {
                "update_id": "e1:timed_out",
                "account_id": "934f6406-c332-4c05-a3e8-6a90765c842d",
                "change": "job_timed_out",
                "trigger": {
                    "event_id": "e1",
                    "event_type": "paystubs.added",
                    "family": "paystubs",
                    "sent_at": NOW,
                    "received_at": NOW,
                },
                "outcome": account_state()["jobs"]["paystubs"],  # type: ignore[index]
                "account": account_context(),
            },
        ),
    ],
    ids=["deadletter", "account_state", "account_update"],
)
def test_output_topics_round_trip(codec: Codec, topic: str, datum: dict[str, object]) -> None:
    decoded = codec.decode(topic, codec.encode(topic, datum))
    # uuid logical type: strings in, UUID objects out.
    assert json.loads(json.dumps(decoded, default=str)) == json.loads(json.dumps(datum, default=str))


def test_every_topic_has_a_schema(codec: Codec) -> None:
    for topic in [*FAMILY_TOPICS.values(), ACCOUNT_UPDATES_TOPIC, ACCOUNT_STATE_TOPIC, DEADLETTER_TOPIC]:
        assert codec.reader_schema(topic)["name"] == TOPIC_RECORDS[topic]
    with pytest.raises(KeyError):
        codec.encode("pinwheel.nope.v1", {})


def test_extra_topics_map_to_existing_records() -> None:
    codec = Codec(topics={"app-state-changelog": "pinwheel.AccountState"})
    data = codec.encode("app-state-changelog", account_state())
    assert codec.decode(ACCOUNT_STATE_TOPIC, data)["platform_name"] == "Workday"


@pytest.mark.parametrize(
    "fields",
    [
        frozenset({"event_id", "event_type", "sent_at", "received_at", "raw_body"}),  # leading: read as a prefix
        frozenset({"event_id", "payload"}),  # cut after payload: still a prefix, the union included
        frozenset({"raw_body", "envelope_extra_json"}),  # up to the last field: a projection
    ],
    ids=["envelope", "through_payload", "last_field"],
)
@pytest.mark.parametrize("kind", encoders())
async def test_decode_fields_reads_what_a_full_decode_reads(
    kind: str, fields: frozenset[str], schema_registry: Registry
) -> None:
    # The leading fields are read by a reader of the codec's own kind (cavro's, or fastavro's).
    codec = Codec(encoder=kind)
    confluent = Codec(registry=RegistryClient(SchemaSettings(registry_url=schema_registry.url)), encoder=kind)
    reader = Codec(registry=RegistryClient(SchemaSettings(registry_url=schema_registry.url)), encoder=kind)
    await confluent.prepare({r.topic for r in RECORDS})
    for record in RECORDS:
        for writer, each in ((codec, codec), (confluent, confluent), (confluent, reader)):
            data = writer.encode(record.topic, record.value)
            await each.resolve([data])
            full = each.decode(record.topic, data)
            some = each.decode_fields(record.topic, data, fields)
            for name in fields:
                # decode() names union branches (return_record_name); the value inside is the same.
                expected = full[name][1] if isinstance(full[name], tuple) else full[name]
                assert some[name] == expected, (record.event_type, name)
    data = codec.encode(RECORDS[0].topic, RECORDS[0].value)
    with pytest.raises(DecodeError, match="cannot decode"):  # truncated inside the fields read
        codec.decode_fields(RECORDS[0].topic, data[:14], fields)


def test_decode_rejects_foreign_bytes(codec: Codec) -> None:
    record = RECORDS[0]
    data = codec.encode(record.topic, record.value)
    with pytest.raises(DecodeError, match="wire format"):
        codec.decode(record.topic, b"{}" + data)
    with pytest.raises(DecodeError, match="fingerprint"):
        codec.decode(record.topic, data[:2] + bytes(8) + data[10:])
    with pytest.raises(DecodeError, match="cannot decode"):
        codec.decode(record.topic, data[:40])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(record.topic, data + b"\x00")
    with pytest.raises(DecodeError, match="no registry"):
        codec.decode(record.topic, b"\x00\x00\x00\x00\x01" + data[10:])
    # A record of another topic's schema does not resolve against this topic's schema.
    with pytest.raises(DecodeError, match="cannot decode"):
        codec.decode(DEADLETTER_TOPIC, data)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SchemaSettings().registry_url is None
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://registry:8081")
    assert SchemaSettings().registry_url == "http://registry:8081"
    assert all(field.description for field in SchemaSettings.model_fields.values())


def _older_writer_record(codec: Codec, topic: str, datum: dict[str, object]) -> bytes:
    """`datum` written with the oldest shipped version of `topic`'s record (the single-object format)."""
    store = load_store()
    oldest = store.versions(codec.record_name(topic))[0]
    out = io.BytesIO()
    schemaless_writer(out, oldest.parsed, datum)
    return b"\xc3\x01" + oldest.fingerprint + out.getvalue()


@pytest.mark.parametrize(
    "fields",
    [
        frozenset({"event_id", "event_type", "webhook_id", "pinwheel_version", "sent_at", "received_at", "raw_body"}),
        # Up to the oldest version's last field: its records are read by projection, the current ones by a prefix.
        frozenset({"raw_body", "envelope_extra_json", "received_at"}),
    ],
    ids=["envelope", "oldest_by_projection"],
)
@pytest.mark.parametrize("kind", encoders())
def test_decode_fields_plain_reads_the_full_read_as_text_and_ints(kind: str, fields: frozenset[str]) -> None:
    """The plain read of every family record (the fixture deliveries, written with the current schema and with
    the oldest shipped one) is the full read with its times as epoch µs: the same values, no datetime made."""
    codec = Codec(encoder=kind)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for record in RECORDS:
        for data in (codec.encode(record.topic, record.value), _older_writer_record(codec, record.topic, record.value)):
            full = codec.decode_fields(record.topic, data, fields)
            plain = codec.decode_fields(record.topic, data, fields, plain=True)
            for name in fields:
                value = full[name]
                expected = (value - epoch) // timedelta(microseconds=1) if isinstance(value, datetime) else value
                assert type(plain[name]) is type(expected), (record.event_type, name)
                assert plain[name] == expected, (record.event_type, name)
            assert plain["received_at"] == RECEIVED_AT_US
    data = codec.encode(RECORDS[0].topic, RECORDS[0].value)
    with pytest.raises(DecodeError, match="cannot decode"):  # truncated inside the fields read
        codec.decode_fields(RECORDS[0].topic, data[:14], fields, plain=True)
