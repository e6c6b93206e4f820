"""Classification while the schema registry has not given our ids: every record, dead letters included, is
kept in the single-object format and marked as waiting for its schema id; once the ids resolve it becomes
the Confluent record `plan_record` would have written. The dead-letter reason stays the event's own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from gateway.records import PlannedRecord, Route, plan_record
from schemas.catalog import DEADLETTER_TOPIC
from schemas.codec import build_codec
from schemas.settings import SchemaSettings
from tests.gateway.gateway_helpers import event_body
from tests.schema_registry import Registry

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_records_made_before_the_ids_resolve_reframe_to_what_plan_writes_after(
    schema_registry: Registry,
) -> None:
    codec = build_codec(SchemaSettings(registry_url=schema_registry.url))
    account = str(uuid.uuid4())
    bodies = [event_body("income.added", account), event_body("account.added", account), b"not json"]
    try:

        def planned() -> list[PlannedRecord]:
            return [
                plan_record(body, request_headers={}, webhook_id="wh", pinwheel_version="v", sent_at=NOW,
                     received_at=NOW, codec=codec)
                for body in bodies
            ]  # fmt: skip

        before = planned()  # the registry not asked yet: encode cannot take a schema id
        assert [p.route for p in before] == [Route.FAMILY, Route.DEAD_LETTER, Route.DEAD_LETTER]
        assert [p.reason for p in before] == [None, "invalid_payload", "invalid_json"]
        assert all(p.record.schema_id_pending and p.record.value[:2] == b"\xc3\x01" for p in before)
        await codec.prepare()
        after = planned()
        for kept, written in zip(before, after, strict=True):
            record, direct = kept.record, written.record
            assert not direct.schema_id_pending
            assert codec.reframe(record.topic, record.value) == direct.value  # what the drain sends
            assert (record.topic, record.key, record.headers) == (direct.topic, direct.key, direct.headers)
        assert codec.decode(DEADLETTER_TOPIC, after[1].record.value)["reason"] == "invalid_payload"
    finally:
        await codec.close()
