"""Every kind of output the logic emits is encodable with the published Avro schemas, and decodes back.

The logic's dataclasses and the .avsc files are written separately; this is where they must agree
(an enum value or a field missing from the schema would otherwise fail at runtime, or be dropped).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processors.logic.config import LogicConfig
from processors.logic.events import event_from_webhook
from processors.logic.outputs import AccountStateSnapshot, AccountUpdate, Change, Output
from processors.logic.processor import AccountProcessor
from processors.logic.stores import in_memory_stores
from processors.logic.timeutil import to_us
from processors.wire import state_datum, update_datum
from schemas import catalog
from schemas.codec import build_codec
from schemas.settings import SchemaSettings

T0 = datetime(2025, 6, 24, 22, 0, tzinfo=UTC)


def _job(event_type: str, account: str, outcome: str, at: datetime, **payload: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event": event_type,
        "payload": {
            "id": str(uuid.uuid4()),
            "account_id": account,
            "name": event_type.split(".")[0],
            "timestamp": at.isoformat(),
            "outcome": outcome,
            **payload,
        },
    }


def _scenario(capture: list[dict[str, Any]]) -> list[tuple[dict[str, Any], datetime]]:
    """The real capture, then synthetic events that reach every kind of change."""
    bodies = [(json.loads(d["body"]), T0 + timedelta(seconds=i)) for i, d in enumerate(capture)]
    account = json.loads(capture[0]["body"])["payload"]["account_id"]
    t = T0 + timedelta(minutes=5)
    late_pending = _job("income.added", account, "pending", T0 - timedelta(hours=1))
    bodies += [
        (
            {
                "event_id": str(uuid.uuid4()),
                "event": "account.monitoring_status.updated",
                "payload": {
                    "account_id": account,
                    "current_monitoring_status": "degraded",
                    "updated_at": t.isoformat(),
                },
            },
            t,
        ),
        (
            {
                "event_id": str(uuid.uuid4()),
                "event": "account.additional_connections_recommended",
                "payload": {
                    "account_id": account,
                    "additional_platforms": [
                        {"platform_type": "time_and_attendance", "action": "login", "platform_id": str(uuid.uuid4())}
                    ],
                },
            },
            t,
        ),
        (_job("direct_deposit_switch.added", account, "pending", t, params={"amount": None}), t),
        (_job("direct_deposit_switch.added", account, "error", t + timedelta(minutes=1), error_code="x"), t),
        (late_pending, t),  # the capture's income job succeeded after this pending: stale
        (_job("shifts.fully_synced", account, "success", t, params={"count": 20}), t),
        (_job("employment.added", account, "pending", t), t),  # never resolved: times out
        ({"event_id": str(uuid.uuid4()), "event": "bill.added", "payload": {"account_id": account}}, t),
    ]
    return bodies


def test_every_output_kind_round_trips_through_the_schemas(capture: list[dict[str, Any]]) -> None:
    codec = build_codec(SchemaSettings())
    config = LogicConfig(pending_timeout=timedelta(hours=24), timeout_grace=timedelta(hours=1))
    logic = AccountProcessor(config, in_memory_stores(serialized=True))
    outputs: list[Output] = []
    for body, received in _scenario(capture):
        outputs += logic.process(event_from_webhook(body, received, sent_at=received))
    outputs += logic.on_time(T0 + timedelta(days=2))

    changes = {o.change for o in outputs if isinstance(o, AccountUpdate)}
    assert changes == set(Change), f"scenario misses {set(Change) - changes}"
    snapshots = [o for o in outputs if isinstance(o, AccountStateSnapshot)]
    assert any(s.account.paystubs is not None and s.account.paystubs.fully_synced_at_us for s in snapshots)

    for output in outputs:
        if isinstance(output, AccountUpdate):
            topic = catalog.ACCOUNT_UPDATES_TOPIC
        elif isinstance(output, AccountStateSnapshot):
            topic = catalog.ACCOUNT_STATE_TOPIC
        else:
            continue
        datum = update_datum(output) if isinstance(output, AccountUpdate) else state_datum(output.account)
        decoded = codec.decode(topic, codec.encode(topic, datum))
        # Nothing the logic emits may be silently dropped by the schema (fastavro ignores unknown keys).
        _assert_covered(datum, decoded, topic)


def _assert_covered(datum: Any, decoded: Any, path: str) -> None:
    if isinstance(datum, tuple):  # a union branch named up front: (record name, record)
        datum = datum[1]
    if isinstance(decoded, datetime):  # timestamp-micros is written from epoch µs
        decoded = to_us(decoded)
    if isinstance(datum, dict):
        for key, value in datum.items():
            if key == "version":  # the same number is published as events_applied
                continue
            assert key in decoded, f"{path}.{key} is not in the schema"
            _assert_covered(value, decoded[key], f"{path}.{key}")
    elif isinstance(datum, list):
        assert len(datum) == len(decoded)
        for i, (a, b) in enumerate(zip(datum, decoded, strict=True)):
            _assert_covered(a, b, f"{path}[{i}]")
    else:
        assert str(datum) == str(decoded), f"{path}: {datum!r} != {decoded!r}"


@pytest.mark.parametrize("change", list(Change))
def test_change_values_are_schema_symbols(change: Change) -> None:
    codec = build_codec(SchemaSettings())
    symbols = next(
        f["type"]["symbols"]
        for f in codec.reader_schema(catalog.ACCOUNT_UPDATES_TOPIC)["fields"]
        if f["name"] == "change"
    )
    assert change.value in symbols
