"""The 12 real sandbox deliveries through the whole logic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from processors.logic import (
    AccountProcessor,
    AccountStateSnapshot,
    AccountUpdate,
    Change,
    Event,
    LogicConfig,
    event_from_webhook,
    in_memory_stores,
)


def _events(capture: list[dict[str, Any]]) -> list[Event]:
    events = []
    for row in capture:
        sent = datetime.fromtimestamp(int(row["headers"]["X-Timestamp"]), UTC)
        events.append(event_from_webhook(row["body"].encode(), sent, sent_at=sent))
    return events


def test_capture_one_update_and_one_snapshot_per_event(capture: list[dict[str, Any]]) -> None:
    processor = AccountProcessor(LogicConfig(), in_memory_stores(serialized=True))
    outputs = [o for event in _events(capture) for o in processor.process(event)]
    updates = [o for o in outputs if isinstance(o, AccountUpdate)]
    snapshots = [o for o in outputs if isinstance(o, AccountStateSnapshot)]
    assert [u.update_id for u in updates] == [orjson.loads(r["body"])["event_id"] for r in capture]
    assert len(snapshots) == 12
    assert [s.account.version for s in snapshots] == list(range(1, 13))
    assert [u.change for u in updates].count(Change.SYNC_PROGRESSED) == 1  # paystubs.fully_synced
    assert updates[0].change is Change.ACCOUNT_CONNECTED

    final = snapshots[-1].account
    assert final.platform_name == "Workday"
    assert final.monitoring_status == "active"
    assert final.end_user_id == "6a927ef1-6c91-43c9-abbe-6728dc8ef877"
    # Keyed by job name: paystubs.added and paystubs.fully_synced are the same "paystubs" job (same job id).
    assert sorted(final.jobs) == ["employment", "identity", "income", "paystubs", "shifts"]
    assert final.jobs["paystubs"].job_id == "2f76dfac-128d-491c-9f20-4ba4afbfdd6d"
    paystubs = final.paystubs
    assert paystubs is not None
    # Four batches of 1, 1, 2 and 27 paystubs; fully_synced repeats the last batch and adds nothing.
    assert (paystubs.batches, paystubs.added_count, paystubs.reported_count) == (4, 31, 31)
    assert (paystubs.pay_date_from, paystubs.pay_date_to) == ("2024-03-19", "2025-06-24")
    assert paystubs.sync_status == "complete"
    assert paystubs.fully_synced_at_us is not None
    assert paystubs.last_job_id == "2f76dfac-128d-491c-9f20-4ba4afbfdd6d"
    shifts = final.shifts
    assert shifts is not None
    assert (shifts.batches, shifts.added_count, len(shifts.added_ids), shifts.ids_truncated) == (3, 90, 50, True)


def test_capture_replayed_twice_emits_nothing_the_second_time(capture: list[dict[str, Any]]) -> None:
    processor = AccountProcessor(LogicConfig(), in_memory_stores())
    events = _events(capture)
    for event in events:
        processor.process(event)
    assert [processor.process(event) for event in events] == [[]] * 12
    assert processor.counters["duplicate"] == 12
