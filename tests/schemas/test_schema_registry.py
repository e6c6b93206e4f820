"""The Confluent wire format against a real registry (Apicurio, or SCHEMA_REGISTRY_URL)."""

from __future__ import annotations

import httpx
from schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT
from schema_registry import Registry

from schemas.codec import CONFLUENT, Codec, SchemaSettings, build_codec
from schemas.envelope import build_family_record
from schemas.store import TOPIC_RECORDS

RECORDS = [
    build_family_record(d.body, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT)
    for d in ALL_DELIVERIES
]


def _versions(url: str, subject: str) -> list[int]:
    response = httpx.get(f"{url}/subjects/{subject}/versions")
    return list(response.json()) if response.status_code == 200 else []


def _subject_id(url: str, subject: str) -> int:
    return int(httpx.get(f"{url}/subjects/{subject}/versions/latest").json()["id"])


def test_confluent_format_against_a_registry(schema_registry: Registry) -> None:
    url = schema_registry.url
    codec = build_codec(SchemaSettings(registry_url=url))
    assert codec.content_format == CONFLUENT
    for record in RECORDS:
        data = codec.encode(record.topic, record.value)
        assert data[0] == 0
        assert int.from_bytes(data[1:5], "big") == _subject_id(url, f"{record.topic}-value")
        assert codec.decode(record.topic, data) == record.value
    for topic in {r.topic for r in RECORDS}:
        assert len(_versions(url, f"{topic}-value")) == 1  # registered once, re-registration is idempotent

    # A fresh consumer (empty caches) fetches the writer schema by id.
    consumer = build_codec(SchemaSettings(registry_url=url))
    data = codec.encode(RECORDS[0].topic, RECORDS[0].value)
    assert consumer.decode(RECORDS[0].topic, data) == RECORDS[0].value
    # Either format decodes whatever the codec's own format is.
    single = Codec().encode(RECORDS[0].topic, RECORDS[0].value)
    assert consumer.decode(RECORDS[0].topic, single) == RECORDS[0].value
    codec.close()
    consumer.close()


def test_prepare_registers_every_topic(schema_registry: Registry) -> None:
    codec = build_codec(SchemaSettings(registry_url=schema_registry.url))
    codec.prepare()
    subjects = set(httpx.get(f"{schema_registry.url}/subjects").json())
    assert {f"{topic}-value" for topic in TOPIC_RECORDS} <= subjects
    codec.close()
