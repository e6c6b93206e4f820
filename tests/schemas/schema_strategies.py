"""Hypothesis strategies for webhook bodies: documented fields, nulls, absent optionals, unknown fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas.catalog import PAYSTUBS_SYNC_EVENTS, SHIFTS_SYNC_EVENTS

Draw = st.DrawFn

uuids = st.uuids().map(str)
timestamps = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]),
).map(datetime.isoformat)
dates = st.dates().map(lambda d: d.isoformat())
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# New enum values Pinwheel might add: they must not cost the event.
new_value = st.sampled_from(["brand_new_value", "partial"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # wider than 64 bits too: orjson refuses those, the stdlib fallback keeps them
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def extras(known: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.text(min_size=1, max_size=12).filter(lambda k: k not in known)
    return st.dictionaries(keys, json_values, max_size=3)


@st.composite
def record(
    draw: Draw, required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> dict[str, Any]:
    """A JSON object: required fields, each optional one absent / null / set, plus unknown fields."""
    out = {name: draw(strategy) for name, strategy in required.items()}
    for name, strategy in optional.items():
        choice = draw(st.sampled_from(["absent", "null", "set"]))
        if choice != "absent":
            out[name] = None if choice == "null" else draw(strategy)
    out.update(draw(extras(set(required) | set(optional))))
    return out


def enum(values: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(values) | new_value


OUTCOME = enum(["success", "error", "pending"])
MONITORING = enum(["active", "degraded", "user_action_required", "unavailable", "customer_disabled"])
SYNC = enum(["in_progress", "complete"])
PLATFORM_TYPE = enum(["payroll", "time_and_attendance"])
ACTION = enum(["none", "login", "search", "ask"])

item_ref = record({"id": uuids}, {"document_type": st.text(max_size=10), "year": longs, "pay_date": dates})
items = st.lists(item_ref, max_size=4)
empty_params = record({}, {})
dd_switch_params = record({}, {"amount": longs})
paystubs_params = record({}, {"from_pay_date": dates, "to_pay_date": dates, "count": longs, "sync_status": SYNC})
shifts_params = record({}, {"count": longs, "sync_status": SYNC})
additional_platform = record({"platform_type": PLATFORM_TYPE, "action": ACTION}, {"platform_id": uuids})

BASE_OPTIONAL = {"end_user_id": uuids}
JOB_REQUIRED = {
    "account_id": uuids,
    "name": st.text(max_size=20),
    "timestamp": timestamps,
    "outcome": OUTCOME,
}
JOB_OPTIONAL = {
    **BASE_OPTIONAL,
    "id": uuids,
    "link_token_id": uuids,
    "error_code": st.text(max_size=20),
    "error_type": st.text(max_size=20),
}


def job(params: st.SearchStrategy[Any], **more: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return record(JOB_REQUIRED, {**JOB_OPTIONAL, "params": params, **more})


PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "account.added": record(
        {
            "account_id": uuids,
            "link_token_id": uuids,
            "platform_id": uuids,
            "platform_name": st.text(max_size=20),
            "created_at": timestamps,
            "connected": st.booleans(),
            "monitoring_status": MONITORING,
        },
        {
            **BASE_OPTIONAL,
            "platform_type": PLATFORM_TYPE,
            "reported_platform_name": st.text(max_size=10),
            "reserved_platform_id": uuids,
        },
    ),
    "account.additional_connections_recommended": record(
        {"account_id": uuids, "additional_platforms": st.lists(additional_platform, max_size=3)},
        BASE_OPTIONAL,
    ),
    "account.monitoring_status.updated": record(
        {"account_id": uuids, "updated_at": timestamps, "current_monitoring_status": MONITORING},
        BASE_OPTIONAL,
    ),
    "direct_deposit_allocations.added": job(empty_params),
    "direct_deposit_switch.added": job(dd_switch_params),
    "employment.added": job(empty_params),
    "identity.added": job(empty_params),
    "income.added": job(empty_params),
    "paystubs.added": job(paystubs_params, added=items, deleted=items),
    **{name: job(paystubs_params) for name in sorted(PAYSTUBS_SYNC_EVENTS)},
    "shifts.added": job(shifts_params, added=items, deleted=items),
    **{name: job(shifts_params) for name in sorted(SHIFTS_SYNC_EVENTS)},
}


@st.composite
def modelled_body(draw: Draw) -> tuple[str, dict[str, Any]]:
    event_type = draw(st.sampled_from(sorted(PAYLOADS)))
    return event_type, {"event_id": draw(uuids), "event": event_type, "payload": draw(PAYLOADS[event_type])}
