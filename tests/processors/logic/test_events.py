"""Normalizing webhook bodies into Events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from processors.logic import InvalidEvent, event_from_payload, event_from_webhook
from processors.logic.timeutil import to_us
from schemas.catalog import partition_key

RECEIVED = datetime(2025, 6, 24, 22, 5, tzinfo=UTC)


def test_capture_events_are_normalized(capture: list[dict[str, Any]]) -> None:
    events = [event_from_webhook(row["body"], RECEIVED) for row in capture]
    account = "934f6406-c332-4c05-a3e8-6a90765c842d"
    assert {e.account_key for e in events} == {account}
    added, identity = events[0], events[1]
    assert (added.event_type, added.family, added.is_job, added.outcome) == ("account.added", "account", False, None)
    assert added.occurred_at == datetime(2025, 6, 24, 22, 4, 33, 547314, tzinfo=UTC)  # created_at
    assert (identity.family, identity.is_job, identity.outcome) == ("income_employment", True, "success")
    assert (identity.job_id, identity.job_name, identity.error_code) == (
        "5fd6446d-1739-4686-a454-f60a6ad65864",
        "identity",
        None,
    )
    assert identity.occurred_at == datetime(2025, 6, 24, 22, 4, 34, 383896, tzinfo=UTC)  # timestamp
    fully = next(e for e in events if e.event_type == "paystubs.fully_synced")
    assert (fully.family, fully.job_id) == ("paystubs", "2f76dfac-128d-491c-9f20-4ba4afbfdd6d")


def _body(event: str, payload: dict[str, Any], event_id: str = "e1") -> bytes:
    return orjson.dumps({"event_id": event_id, "event": event, "payload": payload})


def test_monitoring_status_time_is_updated_at_and_offsets_become_utc() -> None:
    payload = {"account_id": "a", "current_monitoring_status": "degraded", "updated_at": "2025-01-01T02:00:00+02:00"}
    event = event_from_webhook(_body("account.monitoring_status.updated", payload), RECEIVED)
    assert event.occurred_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"account_id": "a", "end_user_id": "u"}, "a"),
        ({"end_user_id": "u", "company_connection_id": "c"}, "u"),
        ({"company_connection_id": "c"}, "c"),
        ({"account_id": ""}, "e1"),
    ],
)
def test_account_key_fallbacks(payload: dict[str, Any], key: str) -> None:
    event = event_from_webhook(_body("bill.added", payload), RECEIVED)
    assert (event.account_key, event.family, event.is_job) == (key, "other", False)


def test_unknown_type_with_outcome_is_a_job_and_bad_timestamp_is_none() -> None:
    job = "0B2C5A9E-1A7E-4F3C-9D7B-2E8F6A1C3D5B"
    payload = {"account_id": "a", "outcome": "pending", "timestamp": "yesterday", "id": job}
    event = event_from_webhook(_body("tax_forms.added", payload), RECEIVED)
    assert (event.is_job, event.job_id, event.occurred_at) == (True, job.lower(), None)


@pytest.mark.parametrize("job_id", ["j", "", 42, ["x"]])
def test_a_job_id_that_is_not_a_uuid_is_refused(job_id: object) -> None:
    # The outputs type job_id as a UUID: a record that reached a family topic without the gateway's
    # validation must not put another string there (uuid-aware readers fail on it).
    payload = {"account_id": "a", "outcome": "pending", "id": job_id}
    with pytest.raises(InvalidEvent) as info:
        event_from_webhook(_body("income.added", payload), RECEIVED)
    assert info.value.reason == "invalid_job_id"


def test_account_key_and_id_are_canonical_like_the_gateways() -> None:
    upper = "7C9E6679-7425-40DE-944B-E07FC1F90AE7"
    event = event_from_webhook(_body("account.added", {"account_id": upper}), RECEIVED)
    assert event.account_key == event.account_id == upper.lower()
    assert event.account_key == partition_key("account.added", "e", {"account_id": upper})


def test_known_job_type_without_outcome_is_still_a_job() -> None:
    event = event_from_webhook(_body("income.added", {"account_id": "a"}), RECEIVED)
    assert (event.is_job, event.outcome) == (True, None)  # the processor dead-letters it


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "invalid_json"),
        (b"[]", "not_an_object"),  # the gateway's reason: one set of rules
        (b'{"event_id": "e", "event": "x", "payload": []}', "invalid_payload"),
        (b'{"event": "x", "payload": {}}', "missing_event_id"),
        (b'{"event_id": "e", "payload": {}}', "missing_event_type"),
        (b'{"event_id": "e", "event": "income.added", "payload": {"outcome": "done"}}', "invalid_outcome"),
    ],
)
def test_invalid_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        event_from_webhook(body, RECEIVED)
    assert info.value.reason == reason


def test_naive_receive_time_is_refused_and_aware_is_normalized() -> None:
    body = b'{"event": "x", "event_id": "e", "payload": {}}'
    with pytest.raises(InvalidEvent):
        event_from_webhook(body, datetime(2025, 1, 1))
    with pytest.raises(InvalidEvent):
        event_from_webhook(body, RECEIVED, sent_at=datetime(2025, 1, 1))
    local = datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    event = event_from_webhook(body, local, sent_at=local)
    assert event.received_at_us == event.sent_at_us == to_us(datetime(2025, 1, 1, tzinfo=UTC)) == 1_735_689_600_000_000


def test_the_delivery_times_are_taken_in_epoch_us_as_records_carry_them() -> None:
    event = event_from_payload(event_id="e", event_type="x", payload={}, received_at_us=7, sent_at_us=5, logged_at_us=6)
    assert (event.received_at_us, event.sent_at_us, event.logged_at_us) == (7, 5, 6)
