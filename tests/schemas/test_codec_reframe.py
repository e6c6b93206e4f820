"""Records kept while the registry is unreachable: `encode_portable` needs no registry, and `reframe` later
gives them the registry's schema id; the result is byte for byte what `encode` writes once ids resolved."""

from __future__ import annotations

import uuid

import pytest

from schemas.codec import Codec, SchemaNotResolved, SchemaSettings, build_codec
from schemas.envelope import build_family_record
from schemas.store import TOPIC_RECORDS
from tests.schema_registry import Registry
from tests.schemas.schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT


async def test_portable_records_reframe_to_what_encode_writes(schema_registry: Registry) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"  # subjects of this test alone
    topics = {f"{prefix}-{topic}": record for topic, record in TOPIC_RECORDS.items()}
    codec = build_codec(SchemaSettings(registry_url=schema_registry.url), topics=topics)
    single_object = Codec()
    records = []
    for delivery in ALL_DELIVERIES:
        family = build_family_record(
            delivery.body, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT
        )
        records.append((f"{prefix}-{family.topic}", family.topic, family.value))
    try:
        kept = [codec.encode_portable(topic, value) for topic, _, value in records]  # the registry never asked
        for (_, plain_topic, value), data in zip(records, kept, strict=True):
            assert data == single_object.encode(plain_topic, value)  # the self-describing format
        with pytest.raises(SchemaNotResolved):
            codec.reframe(records[0][0], kept[0])
        await codec.prepare(sorted({topic for topic, _, _ in records}))
        for (topic, _, value), data in zip(records, kept, strict=True):
            assert codec.reframe(topic, data) == codec.encode(topic, value)
    finally:
        await codec.close()
