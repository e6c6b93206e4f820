"""Traffic generation is a pure, deterministic function of the seed, shaped like Pinwheel's deliveries."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from schemas.catalog import KNOWN_EVENT_TYPES
from schemas.envelope import build_family_record
from simulator.traffic import (
    PlannedEvent,
    TrafficConfig,
    build_traffic,
    load_capture,
    planned_deliveries,
    unresolved_pendings,
)

BASE = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def traffic(**overrides: object) -> list[PlannedEvent]:
    return build_traffic(TrafficConfig(**{"accounts": 40, "seed": 7, **overrides}), BASE)  # type: ignore[arg-type]


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a, b, c = traffic(), traffic(), traffic(seed=8)
    assert [(e.event_id, e.body, e.due_s) for e in a] == [(e.event_id, e.body, e.due_s) for e in b]
    assert {e.event_id for e in a}.isdisjoint({e.event_id for e in c if e.source == "generated"})


def test_bodies_look_like_pinwheel_and_pass_the_gateway_models() -> None:
    events = traffic()
    for event in events:
        decoded = json.loads(event.body)
        assert list(decoded) == ["event_id", "event", "payload"]
        assert event.body == json.dumps(decoded).encode()  # json.dumps separators, no trailing newline
        assert event.event_type in KNOWN_EVENT_TYPES
        record = build_family_record(event.body, webhook_id="w", pinwheel_version="v", sent_at=BASE, received_at=BASE)
        assert record.topic != "pinwheel.deadletter.v1", event.event_type
    types = Counter(e.event_type for e in events)
    for expected in (
        "account.added",
        "paystubs.added",
        "paystubs.fully_synced",
        "shifts.added",
        "account.monitoring_status.updated",
        "income.added",
        "company_connect.status.updated",
    ):
        assert types[expected] > 0, expected
    assert len({e.event_id for e in events}) == len(events)


def test_pending_jobs_resolve_with_the_same_job_later_or_never() -> None:
    events = traffic(accounts=120, pending_rate=0.5, unresolved_rate=0.3)
    jobs: dict[tuple[str | None, str, str | None], list[PlannedEvent]] = defaultdict(list)
    for e in events:
        if e.outcome is not None:
            jobs[(e.account_id, e.event_type, e.job_id)].append(e)
    pending_jobs = [js for js in jobs.values() if any(e.outcome == "pending" for e in js)]
    assert pending_jobs
    resolved = 0
    for js in pending_jobs:
        pending = next(e for e in js if e.outcome == "pending")
        finals = [e for e in js if e.outcome in ("success", "error")]
        assert len(finals) <= 1
        if finals:
            resolved += 1
            # reordering can never make the final overtake its pending
            assert min(finals[0].due_s) > max(pending.due_s[:1])
            assert finals[0].occurred_at is not None
            assert pending.occurred_at is not None
            assert finals[0].occurred_at > pending.occurred_at
    unresolved = unresolved_pendings(events)
    assert 0 < len(unresolved) < len(pending_jobs)
    assert resolved == len(pending_jobs) - len(unresolved)


def test_fully_synced_shares_the_job_id_of_the_last_batch() -> None:
    events = traffic(accounts=30)
    by_account: dict[str | None, list[PlannedEvent]] = defaultdict(list)
    for e in events:
        by_account[e.account_id].append(e)
    checked = 0
    for account_events in by_account.values():
        batches = [e for e in account_events if e.event_type == "paystubs.added"]
        fully = [e for e in account_events if e.event_type == "paystubs.fully_synced"]
        if batches and fully:
            last = max(batches, key=lambda e: json.loads(e.body)["payload"]["timestamp"])
            assert json.loads(last.body)["payload"]["params"]["sync_status"] == "complete"
            assert fully[0].job_id == last.job_id
            checked += 1
    assert checked > 10


def test_duplicates_and_reordering() -> None:
    events = traffic(accounts=100, duplicate_rate=0.2, reorder_s=1.0)
    dups = [e for e in events if e.deliveries > 1]
    assert len(dups) > 20
    assert all(list(e.due_s) == sorted(e.due_s) and e.due_s[1] > e.due_s[0] for e in dups)
    order = [d.event for d in planned_deliveries(events) if d.number == 1]
    generated = [e for e in events if e.source == "generated"]
    # out of order: within an account, send order differs from generation order somewhere
    position = {e.event_id: i for i, e in enumerate(order)}
    swapped = sum(
        1
        for a, b in itertools.pairwise(generated)
        if a.account_id == b.account_id and position[a.event_id] > position[b.event_id]
    )
    assert swapped > 0
    assert sum(e.deliveries for e in events) == len(planned_deliveries(events))


def test_the_real_capture_is_sent_byte_exact() -> None:
    events = [e for e in traffic() if e.source == "capture"]
    records = load_capture()
    assert [e.body for e in events] == [r["body"].encode() for r in records]
    assert all(dict(e.headers)["Pinwheel-Version"] == "2023-11-22" for e in events)
    assert all("X-Timestamp" not in dict(e.headers) for e in events)  # set per attempt, at send time
    assert [e.due_s[0] for e in events] == sorted(e.due_s[0] for e in events)
    assert not [e for e in traffic(include_capture=False) if e.source == "capture"]


def test_ledger_records_carry_no_payload() -> None:
    for event in traffic(accounts=5):
        record = event.ledger_record()
        assert "body" not in record
        assert "payload" not in record
        assert set(record) == {
            "kind",
            "event_id",
            "event_type",
            "account_id",
            "job_id",
            "outcome",
            "occurred_at",
            "source",
            "deliveries",
        }


@pytest.mark.parametrize(
    "overrides",
    [{"pending_rate": 1.5}, {"resolve_min_s": 0.5, "reorder_s": 1.0}, {"accounts": -1}, {"resolve_max_s": 1.0}],
)
def test_invalid_configs_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        TrafficConfig(**overrides)  # type: ignore[arg-type]


def test_naive_base_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build_traffic(TrafficConfig(accounts=1), datetime(2026, 1, 1))
