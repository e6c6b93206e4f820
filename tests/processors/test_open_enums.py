"""A value Pinwheel adds tomorrow to one of its enums is written as `unknown` by the processors too.

docs/wire-format.md ("Enums are open"): every output enum has an `unknown` symbol; the real value stays in the
trigger's `raw_body`. The account's state keeps the real value; only the wire writes `unknown`, so the account's
later events are not affected. Outputs are read by the driver's `IndependentReader` (fastavro and the .avsc
files only).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from schemas import catalog
from tests.processors.pipeline_driver import Output, PipelineDriver, on, utc

T0 = utc(2025, 6, 24, 12, 0)
ACCOUNT = "3f1c9a52-6b0e-4d8e-9c1a-7a2b4c5d6e70"
UPDATES, STATE, DEAD = catalog.ACCOUNT_UPDATES_TOPIC, catalog.ACCOUNT_STATE_TOPIC, catalog.DEADLETTER_TOPIC


def monitoring_status(status: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event": "account.monitoring_status.updated",
        "payload": {"account_id": ACCOUNT, "current_monitoring_status": status, "updated_at": at.isoformat()},
    }


def recommended(*platforms: tuple[str, str]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event": "account.additional_connections_recommended",
        "payload": {
            "account_id": ACCOUNT,
            "additional_platforms": [
                {"platform_type": kind, "action": action, "platform_id": str(uuid.uuid4())}
                for kind, action in platforms
            ],
        },
    }


def update_and_state(outputs: list[Output]) -> tuple[dict[str, Any], dict[str, Any]]:
    assert on(outputs, DEAD) == [], [o.value.get("reason") for o in on(outputs, DEAD)]
    (update,), (state,) = on(outputs, UPDATES), on(outputs, STATE)
    return update.value, state.value


def test_a_new_monitoring_status_is_written_as_unknown_and_the_accounts_next_events_still_flow(
    driver: PipelineDriver,
) -> None:
    update, state = update_and_state(driver.pipe(monitoring_status("paused", T0), T0))
    assert update["change"] == "monitoring_status_changed"
    assert update["account"]["monitoring_status"] == state["monitoring_status"] == "unknown"

    # A later event of the same account, of another kind: its outputs still carry the (new) status as unknown.
    later = T0 + timedelta(minutes=1)
    update, state = update_and_state(driver.pipe(recommended(("payroll", "login")), later))
    assert update["change"] == "additional_connections_recommended"
    assert update["account"]["monitoring_status"] == state["monitoring_status"] == "unknown"
    assert update["account"]["events_applied"] == state["events_applied"] == 2

    # And a known status replaces it.
    update, state = update_and_state(driver.pipe(monitoring_status("active", later), later))
    assert update["account"]["monitoring_status"] == state["monitoring_status"] == "active"
    assert state["events_applied"] == 3


def test_a_recommendation_of_a_new_platform_type_or_action_is_written_as_unknown(driver: PipelineDriver) -> None:
    body = recommended(("gig_economy", "login"), ("payroll", "connect_later"), ("time_and_attendance", "ask"))
    update, state = update_and_state(driver.pipe(body, T0))
    assert update["change"] == "additional_connections_recommended"
    written = [(p["platform_type"], p["action"]) for p in state["additional_platforms"]]
    assert written == [("unknown", "login"), ("payroll", "unknown"), ("time_and_attendance", "ask")]
    assert [str(p["platform_id"]) for p in state["additional_platforms"]] == [
        p["platform_id"] for p in body["payload"]["additional_platforms"]
    ]

    later = T0 + timedelta(minutes=1)
    update, state = update_and_state(driver.pipe(monitoring_status("degraded", later), later))
    assert update["account"]["monitoring_status"] == "degraded"
    assert [(p["platform_type"], p["action"]) for p in state["additional_platforms"]] == written


def test_an_end_user_id_of_the_customers_own_gives_updates_readable_downstream(driver: PipelineDriver) -> None:
    # Pinwheel's end_user_id is the customer's own user id (any text); the outputs type it `uuid`, so a value that
    # is not one is null there (exact in the trigger's raw_body) and never overwrites a known one.
    body = recommended(("payroll", "login"))
    body["payload"]["end_user_id"] = "customer-user-42"
    update, state = update_and_state(driver.pipe(body, T0))
    assert update["account"]["end_user_id"] is None
    assert state["end_user_id"] is None
    known = str(uuid.uuid4())
    later = T0 + timedelta(minutes=1)
    body = monitoring_status("active", later)
    body["payload"]["end_user_id"] = known
    _, state = update_and_state(driver.pipe(body, later))
    assert str(state["end_user_id"]) == known
    body = monitoring_status("degraded", later)
    body["payload"]["end_user_id"] = "customer-user-42"
    _, state = update_and_state(driver.pipe(body, later))
    assert str(state["end_user_id"]) == known
