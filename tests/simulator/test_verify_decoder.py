"""verify's reader decodes account updates from the .avsc files with plain fastavro, in both wire formats,
and agrees with what the processors' codec wrote (two implementations of docs/wire-format.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors.logic.config import LogicConfig
from processors.logic.events import event_from_webhook
from processors.logic.outputs import AccountUpdate
from processors.logic.processor import AccountProcessor
from processors.logic.stores import in_memory_stores
from processors.wire import update_datum
from schemas import catalog
from schemas.codec import build_codec
from schemas.settings import SchemaSettings
from schemas.store import load_store
from simulator.verify import AvscDecoder, UpdateView

AVSC = Path(__file__).resolve().parents[2] / "schemas" / "avro"
T0 = datetime(2025, 6, 24, 22, 0, tzinfo=UTC)


def real_updates() -> list[dict[str, Any]]:
    """Account updates as the processors' logic emits them (a connection, a pending job, its timeout)."""
    account = str(uuid.uuid4())
    added = {
        "event_id": str(uuid.uuid4()),
        "event": "account.added",
        "payload": {
            "account_id": account, "link_token_id": str(uuid.uuid4()), "platform_id": str(uuid.uuid4()),
            "platform_name": "Workday", "created_at": T0.isoformat(), "connected": True, "monitoring_status": "active",
        },
    }  # fmt: skip
    pending = {
        "event_id": str(uuid.uuid4()),
        "event": "paystubs.added",
        "payload": {"id": str(uuid.uuid4()), "account_id": account, "name": "paystubs", "timestamp": T0.isoformat(),
                    "outcome": "pending", "params": {}},
    }  # fmt: skip
    logic = AccountProcessor(LogicConfig(), in_memory_stores(serialized=True))
    outputs = [
        *logic.process(event_from_webhook(added, T0, sent_at=T0)),
        *logic.process(event_from_webhook(pending, T0, sent_at=T0)),
    ]
    outputs += logic.on_time(T0 + timedelta(days=2))
    updates = [update_datum(o) for o in outputs if isinstance(o, AccountUpdate)]
    assert len(updates) == 3
    return updates


@pytest.mark.parametrize("datum", real_updates(), ids=["connected", "pending", "timed_out"])
def test_single_object_records_of_the_processors_codec_decode_the_same(datum: dict[str, Any]) -> None:
    codec = build_codec(SchemaSettings())
    value = codec.encode(catalog.ACCOUNT_UPDATES_TOPIC, datum)
    assert value[:2] == b"\xc3\x01"
    ours = AvscDecoder("AccountUpdate", AVSC).decode(value)
    theirs = codec.decode(catalog.ACCOUNT_UPDATES_TOPIC, value)
    assert ours == theirs
    assert UpdateView.from_datum(ours).update_id == datum["update_id"]


def test_confluent_records_fetch_their_schema_once_by_id() -> None:
    codec = build_codec(SchemaSettings())
    fetched: list[int] = []

    def fetch(schema_id: int) -> str:
        fetched.append(schema_id)
        return load_store().current("pinwheel.AccountUpdate").text  # what the codec writes

    decoder = AvscDecoder("AccountUpdate", AVSC, fetch_schema=fetch)
    for datum in real_updates():
        body = codec.encode(catalog.ACCOUNT_UPDATES_TOPIC, datum)[10:]  # the plain Avro body
        value = b"\x00" + (4711).to_bytes(4, "big") + body
        assert decoder.decode(value)["update_id"] == datum["update_id"]
    assert fetched == [4711]


def test_other_bytes_are_refused() -> None:
    decoder = AvscDecoder("AccountUpdate", AVSC)
    with pytest.raises(ValueError, match="neither"):
        decoder.decode(b"{json}")
    with pytest.raises(ValueError, match="SCHEMA_REGISTRY_URL"):
        decoder.decode(b"\x00\x00\x00\x00\x01rest")
    with pytest.raises(KeyError):  # a fingerprint of no .avsc file
        decoder.decode(b"\xc3\x01" + bytes(8) + b"body")
