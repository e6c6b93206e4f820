"""AccountProcessor scenarios: one rule of docs/processing.md per test."""

from __future__ import annotations

from datetime import timedelta

import pytest

from processors.logic import (
    AccountProcessor,
    AccountStateSnapshot,
    AccountUpdate,
    Change,
    LogicConfig,
    Output,
    RejectedEvent,
    in_memory_stores,
)
from processors.logic.account_table import Recommendation
from processors.logic.keys import CLOCK_KEY
from processors.logic.timeutil import to_us
from processors.wire import outcome_datum
from tests.processors.logic.logic_helpers import account_event, at, job_event

DAY = 24 * 60


@pytest.fixture
def proc() -> AccountProcessor:
    return AccountProcessor(LogicConfig(), in_memory_stores(serialized=True))


def updates(outputs: list[Output]) -> list[AccountUpdate]:
    return [o for o in outputs if isinstance(o, AccountUpdate)]


def only_update(outputs: list[Output]) -> AccountUpdate:
    [update] = updates(outputs)
    snapshots = [o for o in outputs if isinstance(o, AccountStateSnapshot)]
    assert [s.account for s in snapshots] == [update.account]  # every update implies its snapshot
    return update


def test_pending_then_success_emits_pending_then_one_joined_outcome(proc: AccountProcessor) -> None:
    pending = only_update(proc.process(job_event("e1", "pending", occurred=0, received=1)))
    assert pending.change is Change.JOB_PENDING
    assert pending.outcome is not None
    assert (pending.outcome.outcome, pending.outcome.deliveries_seen) == ("pending", 1)
    assert pending.account.jobs["direct_deposit_switch"].outcome == "pending"

    final = only_update(proc.process(job_event("e2", "success", occurred=90, received=91)))
    assert final.update_id == "e2"
    assert final.change is Change.JOB_SUCCEEDED
    outcome = final.outcome
    assert outcome is not None
    assert outcome_datum(outcome) == {
        "job": "direct_deposit_switch",
        "job_id": "00000000-0000-4000-8000-00000000000a",
        "outcome": "success",
        "error_code": None,
        "error_type": None,
        "pending_since": to_us(at(0)),
        "resolved_at": to_us(at(90)),
        "time_to_resolve_ms": 90 * 60_000,
        "deliveries_seen": 2,
        "as_of": to_us(at(90)),  # the payload time of the latest delivery (v2 of AccountUpdate and AccountState)
    }
    assert final.account.jobs["direct_deposit_switch"] == outcome
    assert proc.on_time(at(10 * DAY)) == []  # the closed job never times out


def test_error_final_and_final_without_pending(proc: AccountProcessor) -> None:
    update = only_update(proc.process(job_event("e1", "error", occurred=5)))
    assert update.change is Change.JOB_FAILED
    assert update.outcome is not None
    assert update.outcome.pending_since_us is None
    assert (update.outcome.error_code, update.outcome.error_type, update.outcome.deliveries_seen) == (
        "E1",
        "T1",
        1,
    )


def test_second_pending_counts_as_a_delivery(proc: AccountProcessor) -> None:
    proc.process(job_event("e1", "pending", occurred=10))
    again = only_update(proc.process(job_event("e2", "pending", occurred=5, received=20)))
    assert again.change is Change.JOB_PENDING
    assert again.outcome is not None
    # Reordered pendings: pending_since is the earliest payload time.
    assert (again.outcome.deliveries_seen, again.outcome.pending_since_us) == (2, to_us(at(5)))
    final = only_update(proc.process(job_event("e3", "success", occurred=30)))
    assert final.outcome is not None
    assert final.outcome.deliveries_seen == 3
    assert final.outcome.time_to_resolve_ms == 25 * 60_000  # since the earliest pending


def test_stale_pending_after_its_final_does_not_reopen(proc: AccountProcessor) -> None:
    proc.process(job_event("final", "success", occurred=10, received=11))
    stale = only_update(proc.process(job_event("late-pending", "pending", occurred=5, received=12)))
    assert stale.change is Change.JOB_STALE
    assert stale.outcome is None
    assert stale.account.jobs["direct_deposit_switch"].outcome == "success"
    assert proc.on_time(at(10 * DAY)) == []
    assert proc.counters["stale_pending"] == 1
    # A pending with the same timestamp as the final is stale too; a later one opens a new job.
    assert only_update(proc.process(job_event("p2", "pending", occurred=10, received=13))).change is Change.JOB_STALE
    assert only_update(proc.process(job_event("p3", "pending", occurred=11, received=14))).change is Change.JOB_PENDING


def test_timeout_fires_strictly_after_timeout_plus_grace_once(proc: AccountProcessor) -> None:
    proc.process(job_event("p1", "pending", occurred=0, received=2))
    deadline = at(25 * 60)  # 24 h + 1 h grace after the pending's payload time
    assert proc.on_time(deadline) == []
    fired = proc.on_time(deadline + timedelta(microseconds=1))
    update = only_update(fired)
    assert (update.update_id, update.change) == ("p1:timed_out", Change.JOB_TIMED_OUT)
    assert update.trigger.event_id == "p1"
    assert update.outcome is not None
    assert update.outcome.outcome == "timed_out"
    assert update.outcome.resolved_at_us is None
    assert update.account.jobs["direct_deposit_switch"].outcome == "timed_out"
    assert update.account.updated_at_us == update.outcome.pending_since_us + 25 * 3600 * 10**6
    assert proc.on_time(deadline + timedelta(hours=1)) == []  # idempotent
    # The next event does not fire it again either.
    assert (
        updates(proc.process(job_event("x", "success", occurred=0, event_type="income.added", received=26 * 60))) != []
    )


def test_timeout_is_fired_by_the_next_event_too(proc: AccountProcessor) -> None:
    proc.process(job_event("p1", "pending", occurred=0))
    out = proc.process(job_event("i1", "success", occurred=26 * 60, event_type="income.added"))
    assert [u.update_id for u in updates(out)] == ["p1:timed_out", "i1"]
    assert [u.account.version for u in updates(out)] == [2, 3]


def test_grace_is_configurable() -> None:
    proc = AccountProcessor(LogicConfig(timeout_grace=timedelta(0)), in_memory_stores())
    proc.process(job_event("p1", "pending", occurred=0))
    assert updates(proc.on_time(at(24 * 60) + timedelta(microseconds=1)))[0].change is Change.JOB_TIMED_OUT


def test_late_final_after_timeout_joins_the_timed_out_job(proc: AccountProcessor) -> None:
    proc.process(job_event("p1", "pending", occurred=0))
    proc.on_time(at(26 * 60))
    late = only_update(proc.process(job_event("f1", "success", occurred=23 * 60, received=27 * 60)))
    assert late.outcome is not None
    assert (late.outcome.pending_since_us is not None, late.outcome.deliveries_seen) == (True, 2)
    assert late.outcome.time_to_resolve_ms == 23 * 3600 * 1000
    assert late.account.jobs["direct_deposit_switch"].outcome == "success"
    assert proc.counters["late_joined"] == 1
    # A final outside the timed-out job's window is a new job's final, emitted directly.
    newer = only_update(proc.process(job_event("f2", "success", occurred=3 * DAY)))
    assert newer.outcome is not None
    assert newer.outcome.pending_since_us is None


def test_final_older_than_the_open_pending_does_not_close_it(proc: AccountProcessor) -> None:
    proc.process(job_event("p2", "pending", occurred=100))
    old = only_update(proc.process(job_event("f1", "success", occurred=50, received=101)))
    assert old.outcome is not None
    assert old.outcome.pending_since_us is None  # not joined
    assert old.account.jobs["direct_deposit_switch"].outcome == "pending"  # the newer fact stays
    assert updates(proc.on_time(at(100 + 25 * 60 + 1)))[0].update_id == "p2:timed_out"


def test_duplicates_emit_nothing_until_retention_expires() -> None:
    config = LogicConfig(dedupe_retention=timedelta(days=7))
    proc = AccountProcessor(config, in_memory_stores(serialized=True))
    first = proc.process(job_event("e1", "success", occurred=0))
    assert proc.process(job_event("e1", "success", occurred=0, received=15)) == []
    assert proc.process(job_event("e1", "success", occurred=0, received=7 * DAY)) == []
    # Expired (retention rounded up to the next minute, strictly passed): processed again, same update_id.
    again = proc.process(job_event("e1", "success", occurred=0, received=7 * DAY + 1.01))
    assert [u.update_id for u in updates(again)] == [u.update_id for u in updates(first)] == ["e1"]
    assert proc.counters["duplicate"] == 2
    assert proc.counters["dedupe_expired"] >= 1


def test_job_event_without_outcome_is_dead_lettered_and_not_remembered(proc: AccountProcessor) -> None:
    event = job_event("bad", None, occurred=0)
    [dead] = proc.process(event)
    assert isinstance(dead, RejectedEvent)
    assert (dead.reason, dead.key) == ("missing_outcome", "bad")
    # Its id is not in dedupe: once a fix makes it valid, replaying it (deadletter replay) is processed.
    [again] = proc.process(event)
    assert isinstance(again, RejectedEvent)
    fixed = job_event("bad", "success", occurred=0)
    assert [type(o).__name__ for o in proc.process(fixed)] == ["AccountUpdate", "AccountStateSnapshot"]


def test_event_without_account_id_has_no_account_output(proc: AccountProcessor) -> None:
    event = account_event("b1", "bill.added", {"end_user_id": "user-1"}, received=0)
    assert event.account_key == "user-1"
    assert proc.process(event) == []
    assert proc.counters["no_account"] == 1


def test_other_event_types_of_an_account_are_recorded(proc: AccountProcessor) -> None:
    update = only_update(proc.process(account_event("t1", "tax_forms.added", {"account_id": "a"}, received=0)))
    assert (update.change, update.account.last_event_type) == (Change.EVENT_RECORDED, "tax_forms.added")


def test_monitoring_status_is_last_writer_wins_on_payload_time(proc: AccountProcessor) -> None:
    def status(event_id: str, value: str, updated: float, received: float) -> str | None:
        payload = {
            "account_id": "a",
            "current_monitoring_status": value,
            "updated_at": at(updated).isoformat(),
        }
        event = account_event(event_id, "account.monitoring_status.updated", payload, received=received)
        return only_update(proc.process(event)).account.monitoring_status

    assert status("m1", "degraded", 10, 11) == "degraded"
    assert status("m0", "active", 5, 12) == "degraded"  # older, delivered later
    added = {
        "account_id": "a",
        "platform_name": "Workday",
        "connected": True,
        "monitoring_status": "active",
        "created_at": at(0).isoformat(),
    }
    state = only_update(proc.process(account_event("a1", "account.added", added, received=13))).account
    assert (state.platform_name, state.connected, state.monitoring_status) == ("Workday", True, "degraded")
    assert status("m2", "user_action_required", 20, 14) == "user_action_required"
    # A status Pinwheel adds later is kept as sent: only the wire writes it as `unknown` (processors/wire.py).
    assert status("m3", "paused", 30, 15) == "paused"


def test_connections_recommended_replace_the_list(proc: AccountProcessor) -> None:
    payload = {
        "account_id": "a",
        "additional_platforms": [{"platform_type": "time_and_attendance", "action": "login", "platform_id": PLATFORM}],
    }
    update = only_update(
        proc.process(account_event("r1", "account.additional_connections_recommended", payload, received=0))
    )
    assert update.change is Change.CONNECTIONS_RECOMMENDED
    assert update.account.additional_platforms == (Recommendation("time_and_attendance", "login", PLATFORM),)


PLATFORM = "6a927ef1-6c91-43c9-abbe-6728dc8ef877"


def test_ids_and_pay_dates_are_kept_in_the_form_the_state_topic_gives_back(proc: AccountProcessor) -> None:
    # The state's uuid fields and dates as pinwheel.account_state.v1 reads them back (canonical): what the
    # gateway accepts as a UUID or a date in another spelling, and None for what it is not.
    login = {
        "account_id": "a",
        "end_user_id": PLATFORM.upper(),
        "platform_id": PLATFORM.replace("-", ""),
        "link_token_id": "undefined",
    }
    added = only_update(proc.process(account_event("l1", "account.added", login, received=0))).account
    assert (added.end_user_id, added.platform_id, added.link_token_id) == (PLATFORM, PLATFORM, None)
    recommended = {"account_id": "a", "end_user_id": "user-1", "additional_platforms": [{"platform_id": "p"}]}
    update = only_update(
        proc.process(account_event("r1", "account.additional_connections_recommended", recommended, received=1))
    )
    assert update.account.end_user_id == PLATFORM  # a non-UUID does not overwrite the known one
    assert update.account.additional_platforms == (Recommendation(None, None, None),)
    params = {"count": 1, "from_pay_date": "20240301", "to_pay_date": "not a date", "sync_status": "complete"}
    batch = job_event("p1", "success", occurred=2, event_type="paystubs.added", account="a", params=params)
    paystubs = only_update(proc.process(batch)).account.paystubs
    assert paystubs is not None
    assert (paystubs.pay_date_from, paystubs.pay_date_to) == ("2024-03-01", None)


def test_paystubs_batches_and_milestones(proc: AccountProcessor) -> None:
    def batch(event_id: str, job_id: str, ids: list[str], occurred: float, frm: str, to: str, status: str) -> None:
        params = {"count": len(ids), "from_pay_date": frm, "to_pay_date": to, "sync_status": status}
        added = [{"id": i} for i in ids]
        event = job_event(
            event_id,
            "success",
            occurred=occurred,
            event_type="paystubs.added",
            job_id=job_id,
            params=params,
            added=added,
            deleted=[{"id": "old"}],
        )
        proc.process(event)

    batch("b2", "00000000-0000-4000-8000-000000000002", ["c", "d"], 2, "2024-01-01", "2024-06-30", "complete")
    batch(
        "b1", "00000000-0000-4000-8000-000000000001", ["a", "b", "c"], 1, "2024-07-01", "2024-12-31", "in_progress"
    )  # older, later
    milestone = job_event(
        "s1",
        "success",
        occurred=2,
        event_type="paystubs.fully_synced",
        job_id="00000000-0000-4000-8000-000000000002",
        params={"count": 2},
    )
    update = only_update(proc.process(milestone))
    assert update.change is Change.SYNC_PROGRESSED
    progress = update.account.paystubs
    assert progress is not None
    assert (progress.batches, progress.added_count, progress.deleted_count, progress.reported_count) == (
        2,
        5,
        2,
        5,
    )
    assert progress.added_ids == ("d", "a", "b", "c")
    assert progress.deleted_ids == ("old",)
    assert (progress.pay_date_from, progress.pay_date_to) == ("2024-01-01", "2024-12-31")
    assert progress.sync_status == "complete"  # latest by payload time, not by arrival
    assert progress.deepest_milestone == "fully"
    assert update.account.paystubs is not None
    assert update.account.paystubs.deepest_milestone == "fully"


def test_sync_ids_are_capped_to_the_most_recent() -> None:
    proc = AccountProcessor(LogicConfig(max_sync_ids=3), in_memory_stores())
    outputs: list[Output] = []
    for n in range(3):
        added = [{"id": f"s{n}-{i}"} for i in range(2)]
        event = job_event(f"e{n}", "success", occurred=n, event_type="shifts.added", added=added, params={})
        outputs = proc.process(event)
    state = only_update(outputs).account
    assert state.shifts is not None
    assert (state.shifts.added_ids, state.shifts.ids_truncated, state.shifts.added_count) == (
        ("s1-1", "s2-0", "s2-1"),
        True,
        6,
    )


def test_stream_time_never_goes_back_and_survives_a_restart() -> None:
    stores = in_memory_stores(serialized=True)
    proc = AccountProcessor(LogicConfig(), stores)
    proc.process(job_event("p1", "pending", occurred=0, received=100))
    proc.process(job_event("e2", "success", occurred=0, event_type="income.added", received=50))
    assert proc.stream_time == at(100)
    proc.flush()  # the runtime's commit
    restarted = AccountProcessor(LogicConfig(), stores)
    assert restarted.stream_time == at(100)
    assert updates(restarted.on_time(at(25 * 60 + 1)))[0].update_id == "p1:timed_out"


def test_the_watermark_holds_timers_back_whatever_stream_time_says(proc: AccountProcessor) -> None:
    # The runtime's watermark: some input partition has not been read past it. Neither a later event (stream
    # time) nor the clock may fire a timer due at or after it; once it passes, the next call fires them.
    proc.process(job_event("p1", "pending", occurred=0, received=1))
    deadline_us = to_us(at(25 * 60))
    late = job_event("i1", "success", occurred=26 * 60, event_type="income.added", received=26 * 60)
    assert [u.update_id for u in updates(proc.process(late, watermark_us=deadline_us))] == ["i1"]
    assert proc.on_time(at(30 * 60), watermark_us=deadline_us) == []
    fired = proc.on_time(at(30 * 60), watermark_us=deadline_us + 1)
    assert [u.update_id for u in updates(fired)] == ["p1:timed_out"]


def test_stream_time_reaches_the_store_at_flush_its_latest_value_once() -> None:
    stores = in_memory_stores(serialized=True)
    proc = AccountProcessor(LogicConfig(), stores)
    proc.process(job_event("p1", "pending", occurred=0, received=100))
    proc.process(job_event("e2", "success", occurred=0, event_type="income.added", received=200))
    assert stores.timers.get(CLOCK_KEY) is None  # held back: only this instance reads it before the commit
    assert proc.stream_time == at(200)
    proc.flush()
    assert stores.timers.get(CLOCK_KEY) == to_us(at(200))
    proc.process(job_event("e3", "success", occurred=0, event_type="income.added", received=150))  # not later
    proc.on_time(at(300))
    proc.on_time(at(250))  # never back
    proc.flush()
    assert stores.timers.get(CLOCK_KEY) == to_us(at(300))
    stores.timers.delete(CLOCK_KEY)
    proc.flush()  # nothing moved since the last flush: nothing written
    assert stores.timers.get(CLOCK_KEY) is None
