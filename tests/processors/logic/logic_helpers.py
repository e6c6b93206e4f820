"""Builders shared by the logic tests (`from tests.processors.logic.logic_helpers import ...`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from processors.logic import Event, event_from_payload
from processors.logic.timeutil import to_us

T0 = datetime(2025, 6, 24, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def job_event(
    event_id: str,
    outcome: str | None,
    *,
    occurred: float,
    received: float | None = None,
    event_type: str = "direct_deposit_switch.added",
    account: str | None = "acct-1",
    job_id: str | None = "00000000-0000-4000-8000-00000000000a",
    **extra: Any,
) -> Event:
    payload: dict[str, Any] = {
        "id": job_id,
        "name": event_type.split(".")[0],
        "timestamp": at(occurred).isoformat(),
        "error_code": "E1" if outcome == "error" else None,
        "error_type": "T1" if outcome == "error" else None,
        **extra,
    }
    if outcome is not None:
        payload["outcome"] = outcome
    if account is not None:
        payload["account_id"] = account
    return event_from_payload(
        event_id=event_id,
        event_type=event_type,
        payload=payload,
        received_at_us=to_us(at(occurred if received is None else received)),
    )


def account_event(event_id: str, event_type: str, payload: dict[str, Any], *, received: float) -> Event:
    return event_from_payload(
        event_id=event_id, event_type=event_type, payload=payload, received_at_us=to_us(at(received))
    )
