"""`pinwheel-connector deadletter list|show|replay` against the real broker, gateway and processors.

The gateway runs with a validation bug (a payload model that refuses every employment.added), so real
signed deliveries are dead-lettered over HTTPS; the "fix" is deployed (the bug removed) and the dead
letters are replayed by the CLI. The processors (real, in-process) must then emit exactly one update per
event, also after a second replay. Outputs are read back with plain consumers.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import schemas.envelope
from schemas import catalog
from schemas.codec import build_codec
from schemas.settings import SchemaSettings
from tests.gateway.gateway_helpers import VERSION, WEBHOOK_ID, event_body, signed_headers
from tests.operate.ops_helpers import App, caught_up, header, read_topic
from tests.processors.faulty import event_id_of, inject_bug

FAMILY = catalog.FAMILY_TOPICS[catalog.Family.INCOME_EMPLOYMENT]


class NeverValid(BaseModel):
    """The bug: a model that requires a field Pinwheel never sends."""

    field_pinwheel_never_sends: str


async def test_replay_after_a_fix_then_again_changes_nothing(
    app: App, start_gateway: Any, tls_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    gateway = start_gateway()
    accounts = [str(uuid.uuid4()) for _ in range(5)]
    bodies = [event_body("employment.added", account) for account in accounts]
    event_ids = {json.loads(body)["event_id"] for body in bodies}
    broken = b'{"event_id": "' + str(uuid.uuid4()).encode() + b'", "event": "employment.added", "payload": '

    monkeypatch.setattr(
        schemas.envelope, "PAYLOAD_MODELS", {**schemas.envelope.PAYLOAD_MODELS, "employment.added": NeverValid}
    )
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls_pair[0]), timeout=30) as http:
        for body in [*bodies, broken]:
            response = await http.post(gateway.webhook_url, content=body, headers=signed_headers(body))
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "published"
    monkeypatch.undo()  # the fix is deployed
    gateway.stop()

    listed = [
        json.loads(line) for line in (await app.cli("deadletter", "list", "--since", since, "--json")).splitlines()
    ]
    assert Counter(row["reason"] for row in listed) == {"invalid_payload": 5, "invalid_json": 1}
    assert {row["event_id"] for row in listed if row["reason"] == "invalid_payload"} == event_ids
    assert all(row["stage"] == "gateway" for row in listed)

    shown = await app.cli("deadletter", "show", next(r["ref"] for r in listed if r["reason"] == "invalid_json"))
    assert "reason           invalid_json" in shown
    assert broken.decode() in shown  # printable raw bytes shown as text
    assert "x-pinwheel-webhook-id: " + WEBHOOK_ID in shown

    async with app.running():
        dry = await app.cli("deadletter", "replay", "--since", since, "--dry-run", "--no-progress")
        assert "would replay 5, still invalid 1, skipped 0" in dry
        assert not await read_topic(app.bootstrap, FAMILY, lambda r: header(r, "replayed") is not None
                                    and header(r, "event_id").decode() in event_ids)  # fmt: skip

        first = await app.cli("deadletter", "replay", "--since", since, "--no-progress")
        assert "replayed 5, still invalid 1, skipped 0" in first
        await caught_up(app.bootstrap, app.app_id, [FAMILY])
        second = await app.cli("deadletter", "replay", "--since", since, "--no-progress")
        assert "replayed 5, still invalid 1, skipped 0" in second
        await caught_up(app.bootstrap, app.app_id, [FAMILY])

    codec = build_codec(SchemaSettings())
    replayed = await read_topic(app.bootstrap, FAMILY, lambda r: (header(r, "event_id") or b"").decode() in event_ids)
    assert Counter(header(r, "event_id") for r in replayed) == {e.encode(): 2 for e in event_ids}  # two replays
    letters = {row["event_id"]: row for row in listed}
    for record in replayed:
        datum = codec.decode(FAMILY, record.value)
        assert datum["received_at"] == datetime.fromisoformat(letters[datum["event_id"]]["failed_at"])
        assert (datum["webhook_id"], datum["pinwheel_version"]) == (WEBHOOK_ID, VERSION)
        assert header(
            record,
            "replayed",
        ).startswith(b"pinwheel.deadletter.v1:")
        # The family topics take the broker's append time as record time; the envelope keeps the original.
        assert record.timestamp_type == 1
        assert record.timestamp >= int(datum["received_at"].timestamp() * 1000)
    updates = await read_topic(app.bootstrap, catalog.ACCOUNT_UPDATES_TOPIC, lambda r: r.key.decode() in accounts)
    update_ids = Counter(codec.decode(catalog.ACCOUNT_UPDATES_TOPIC, r.value)["update_id"] for r in updates)
    assert update_ids == dict.fromkeys(event_ids, 1)  # the second replay was dropped by the dedupe


async def test_processor_dead_letters_are_reinjected_from_their_source_record(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A processor bug dead-letters valid records; after the fix, replay re-injects them unchanged."""
    import orjson
    from aiokafka import AIOKafkaProducer

    from schemas.envelope import build_family_record

    codec = build_codec(SchemaSettings())
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    accounts = [str(uuid.uuid4()) for _ in range(3)]
    bodies = [json.loads(event_body("income.added", account)) for account in accounts]
    event_ids = {body["event_id"] for body in bodies}

    producer = AIOKafkaProducer(bootstrap_servers=app.bootstrap, acks="all")
    await producer.start()
    try:
        now = datetime.now(UTC)
        for body in bodies:
            record = build_family_record(
                orjson.dumps(body), webhook_id="wh", pinwheel_version=VERSION, sent_at=now, received_at=now
            )
            headers = record.kafka_headers(codec.content_format)
            await producer.send_and_wait(
                record.topic, codec.encode(record.topic, record.value), key=record.key, headers=headers
            )
        # and a record no schema can decode: still invalid after any fix
        await producer.send_and_wait(FAMILY, b"\x00garbage", key=accounts[0].encode(), headers=[("event_id", b"x")])
    finally:
        await producer.stop()

    inject_bug(monkeypatch, lambda record: "invalid_timestamp" if event_id_of(record) in event_ids else None)
    async with app.running():
        await caught_up(app.bootstrap, app.app_id, [FAMILY])
    monkeypatch.undo()

    listed = [
        json.loads(line)
        for line in (
            await app.cli("deadletter", "list", "--stage", "processor", "--since", since, "--json")
        ).splitlines()
    ]
    mine = [row for row in listed if row["event_id"] in event_ids]
    assert Counter(row["reason"] for row in mine) == {"invalid_timestamp": 3}
    async with app.running():
        out = await app.cli("deadletter", "replay", "--stage", "processor", "--since", since, "--no-progress")
        assert "replayed 3, still invalid 1, skipped 0" in out
        assert "decode_error" in out
        await caught_up(app.bootstrap, app.app_id, [FAMILY])
    updates = await read_topic(app.bootstrap, catalog.ACCOUNT_UPDATES_TOPIC, lambda r: r.key.decode() in accounts)
    assert Counter(codec.decode(catalog.ACCOUNT_UPDATES_TOPIC, r.value)["update_id"] for r in updates) == dict.fromkeys(
        event_ids, 1
    )
    reinjected = await read_topic(
        app.bootstrap,
        FAMILY,
        lambda r: header(r, "replayed") is not None and (header(r, "event_id") or b"").decode() in event_ids,
    )
    originals = await read_topic(
        app.bootstrap,
        FAMILY,
        lambda r: header(r, "replayed") is None and (header(r, "event_id") or b"").decode() in event_ids,
    )
    # Byte for byte the source records (the record time is the broker's append time on family topics).
    assert sorted((r.key, r.value) for r in reinjected) == sorted((r.key, r.value) for r in originals)
