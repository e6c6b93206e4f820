"""The timers have no changelog: every restore derives them from the dedupe and jobs stores (processors/logic/
timers.py). Broker-free, through `PipelineDriver` (the real Engine, AccountPipeline and RocksDB state over the
in-memory broker), with several drivers one after the other on one broker: a restart on the same machine (its
local checkpoint, then the changelogs' tail), another machine (from scratch), an aborted commit (the overlay
dropped). The wall clock is the drivers' (`advance_to`); nothing sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors.logic.config import LogicConfig
from processors.logic.stores import DEDUPE, JOBS, TIMERS
from schemas import catalog
from schemas.catalog import changelog_topic, entry_log_topic
from tests.processors.pipeline_driver import APP_ID, Machines, Output, on, utc
from tests.sample_data import account_added

T0 = utc(2025, 6, 24, 12, 0)
ACCOUNT = "0f4b7f0e-3c1d-4d7a-9a43-5b8f1e2d3c4a"
UPDATES = catalog.ACCOUNT_UPDATES_TOPIC
# A pending times out 25 h after it (24 h + 1 h grace); a dedupe entry is kept 2 h (rounded up to the minute).
CONFIG = LogicConfig(dedupe_retention=timedelta(hours=2))
WINDOW = CONFIG.pending_timeout + CONFIG.timeout_grace
MS = timedelta(milliseconds=1)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    m = Machines(tmp_path, CONFIG)
    yield m
    m.stop()


def pending(event_type: str, at: datetime) -> dict[str, Any]:
    return job(event_type, "pending", at, str(uuid.uuid4()))


def job(event_type: str, outcome: str, at: datetime, job_id: str) -> dict[str, Any]:
    payload = {"id": job_id, "account_id": ACCOUNT, "name": event_type.split(".")[0], "outcome": outcome}
    return {"event_id": str(uuid.uuid4()), "event": event_type, "payload": payload | {"timestamp": at.isoformat()}}


def final(of: dict[str, Any], at: datetime) -> dict[str, Any]:
    return job(of["event"], "success", at, of["payload"]["id"])


def timed_out(outputs: list[Output]) -> list[str]:
    """The event ids of the pendings that timed out in `outputs`."""
    return [o.headers["event_id"] for o in on(outputs, UPDATES) if o.value["change"] == "job_timed_out"]


def test_the_timers_have_no_changelog_and_dedupe_logs_each_distinct_event_once(machines: Machines) -> None:
    driver = machines.start("a")
    first, second = account_added(ACCOUNT, T0), account_added(ACCOUNT, T0 + MS)
    driver.pipe(first, T0)
    driver.pipe(first, T0 + timedelta(seconds=1))  # a redelivery in a later transaction
    # A redelivery in the same transaction: both records on the broker before the engine commits either.
    for received_at in (T0 + timedelta(seconds=2), T0 + timedelta(seconds=3)):
        topic, key, value, headers = driver.gateway_record(second, received_at)
        driver.broker.produce(topic, 0, key, value, int(received_at.timestamp() * 1000), headers=headers)
    third = pending("income.added", T0)
    assert len(on(driver.pipe(third, T0 + timedelta(seconds=4)), UPDATES)) == 2  # the second's and the third's
    assert driver.counters.logic["duplicate"] == 2
    ids = [first["event_id"], second["event_id"], third["event_id"]]
    assert [key for key, _ in machines.changelog(DEDUPE)] == ids  # one entry per distinct event, none for a duplicate
    logged = machines.changelog_records(DEDUPE)
    assert logged <= 3  # one record per transaction that saw a new event
    assert changelog_topic(APP_ID, TIMERS) not in machines.broker.topic_names()
    assert {topic for topic in machines.broker.topic_names() if topic.startswith(APP_ID)} == {
        entry_log_topic(APP_ID, DEDUPE)
    }  # the accounts' and the jobs' changelog is the state topic
    # Expiry (2 h, the minute rounded up) deletes the entries locally and writes nothing: the log is kept by time.
    driver.advance_to(T0 + timedelta(hours=2, minutes=2))
    assert driver.counters.logic["dedupe_expired"] == 3
    driver.pipe(account_added(ACCOUNT, T0 + timedelta(hours=3)), T0 + timedelta(hours=3))  # a commit after it
    assert machines.changelog_records(DEDUPE) == logged + 1  # the new event's entry alone
    assert [key for key, _ in machines.changelog(DEDUPE)][:3] == ids


def test_a_new_machine_restores_expired_entries_and_expires_them_again(machines: Machines) -> None:
    a = machines.start("a")
    event = account_added(ACCOUNT, T0)
    a.pipe(event, T0)
    a.advance_to(T0 + timedelta(hours=2, minutes=2))  # expired on a: deleted locally, still in the log
    assert a.counters.logic["dedupe_expired"] == 1
    b = machines.start("b")  # from scratch: the log brings the entry back, with its timer, already due
    assert len(on(b.pipe(event, T0 + timedelta(hours=2, minutes=3)), UPDATES)) == 1  # new again, not a duplicate
    assert b.counters.logic["dedupe_expired"] == 1


def test_a_new_machine_derives_every_timer_from_the_changelogs(machines: Machines) -> None:
    a = machines.start("a")
    early, late = pending("income.added", T0), pending("employment.added", T0 + timedelta(hours=2))
    event = account_added(ACCOUNT, T0)
    a.pipe(early, T0)
    a.pipe(late, T0 + timedelta(hours=2))
    a.pipe(event, T0 + timedelta(hours=2))
    # The first deadline passes while no machine runs the partition: due before the restore, fired after it.
    b = machines.start("b")  # an empty state directory: restored from scratch
    assert b.pipe(event, T0 + timedelta(hours=2, minutes=1)) == []  # dedupe restored: still a duplicate
    assert timed_out(b.advance_to(T0 + WINDOW + MS)) == [early["event_id"]]
    assert timed_out(b.advance_to(T0 + timedelta(hours=2) + WINDOW)) == []  # due at, fires strictly after
    assert timed_out(b.advance_to(T0 + timedelta(hours=2) + WINDOW + MS)) == [late["event_id"]]
    assert timed_out(b.advance_to(T0 + timedelta(days=3))) == []  # each once
    # The dedupe entry's expiry was derived too: past the retention, the same event is new again.
    assert len(on(b.pipe(event, T0 + timedelta(days=3, minutes=1)), UPDATES)) == 1


def test_a_restart_derives_the_timers_of_the_changelog_tail_and_drops_the_obsolete_ones(machines: Machines) -> None:
    a = machines.start("a")
    closed, still_open = pending("income.added", T0), pending("employment.added", T0)
    expired = account_added(ACCOUNT, T0)
    for body in (closed, still_open, expired):
        a.pipe(body, T0)
    # Machine b takes over (from scratch): it closes a job, opens another, expires the event and sees it again.
    b = machines.start("b")
    b.pipe(final(closed, T0 + timedelta(hours=1)), T0 + timedelta(hours=1))
    opened = pending("identity.added", T0 + timedelta(hours=3))
    b.advance_to(T0 + timedelta(hours=2, minutes=2))  # the event's dedupe entry expires (locally)
    b.pipe(opened, T0 + timedelta(hours=3))
    assert len(on(b.pipe(expired, T0 + timedelta(hours=3)), UPDATES)) == 1  # new again: a new entry
    tail = sum(len(machines.changelog(store)) for store in (DEDUPE, JOBS))  # the jobs': the state topic
    # Back on machine a: its checkpoint (the closed job's timer, the event's first expiry), then b's records.
    a = machines.start("a")
    assert 0 < a.engine.stats.restored_records < tail  # from its checkpoint: the tail only
    # The three entries of a's checkpoint expired on b (due at T0 + 2 h), locally: b's log says nothing of it, so
    # a's timers, fired with the next record, expire two of them again. The event's entry is b's new one: its old
    # timer is obsolete, the entry stays, the event is still a duplicate. The final's entry, from the tail (due at
    # T0 + 3 h), expires.
    assert a.pipe(expired, T0 + timedelta(hours=3, minutes=10)) == []
    assert a.counters.logic["timer_obsolete"] == 1
    assert a.counters.logic["dedupe_expired"] == 3
    assert timed_out(a.advance_to(T0 + WINDOW + MS)) == [still_open["event_id"]]  # not the closed one
    assert a.counters.logic["timer_obsolete"] == 2  # the closed job's
    assert timed_out(a.advance_to(T0 + timedelta(hours=3) + WINDOW + MS)) == [opened["event_id"]]  # from the tail


def test_a_longer_retention_after_a_restart_still_expires_the_entries_of_the_old_one(machines: Machines) -> None:
    a = machines.start("a")
    event = account_added(ACCOUNT, T0)
    a.pipe(event, T0)  # its timer, in a's checkpoint: due at T0 + 2 h
    a = machines.start("a", LogicConfig(dedupe_retention=timedelta(hours=4)))
    assert a.pipe(event, T0 + timedelta(hours=3)) == []  # the old timer fired: the entry is kept, 4 h now
    assert a.counters.logic["timer_obsolete"] == 1
    # ... and expires by the new retention: its timer was armed again when the old one fired.
    assert len(on(a.pipe(event, T0 + timedelta(hours=4, minutes=2)), UPDATES)) == 1
    assert a.counters.logic["dedupe_expired"] == 1


def test_an_aborted_commit_loses_no_timer_and_fires_none_twice(machines: Machines) -> None:
    driver = machines.start("a")
    first, second = pending("income.added", T0), pending("employment.added", T0 + timedelta(hours=1))
    driver.pipe(first, T0)
    driver.broker.fail_commits(1)  # the pending's commit fails: its timer, in the overlay, is dropped with it
    driver.pipe(second, T0 + timedelta(hours=1))
    assert driver.engine.stats.task_restarts == 1
    driver.broker.fail_commits(1)  # the timeout's commit fails: the task is rebuilt and fires it again
    outputs = driver.advance_to(T0 + WINDOW + MS)
    driver.until(lambda: driver.engine.stats.task_restarts == 2)
    outputs += driver.advance_to(T0 + WINDOW + MS)  # the rebuilt task's punctuation
    assert timed_out(outputs) == [first["event_id"]]
    assert timed_out(driver.advance_to(T0 + timedelta(hours=1) + WINDOW + MS)) == [second["event_id"]]
    assert timed_out(driver.advance_to(T0 + timedelta(days=3))) == []


def test_a_restored_stream_time_is_never_ahead_of_the_lost_one(machines: Machines) -> None:
    """A record stamped far ahead of its append time moves stream time only to append time + max_clock_skew.
    The dedupe entry keeps its `received_at`, so stream time is not derived from the entries: a restore that
    did so would move it a day ahead and time the pending out early."""
    a = machines.start("a")
    job_pending = pending("income.added", T0)
    a.pipe(job_pending, T0)
    topic, key, value, headers = a.gateway_record(account_added(ACCOUNT, T0), T0 + timedelta(days=2))  # clock jumped
    a.pipe_record(topic, key, value, headers, logged_at=T0 + timedelta(minutes=1))
    assert a.counters.logic["clock_ahead"] == 1
    b = machines.start("b")  # from scratch
    assert timed_out(b.pipe(account_added(ACCOUNT, T0), T0 + timedelta(minutes=2))) == []
    assert timed_out(b.advance_to(T0 + timedelta(hours=2))) == []
    assert timed_out(b.advance_to(T0 + WINDOW + MS)) == [job_pending["event_id"]]
