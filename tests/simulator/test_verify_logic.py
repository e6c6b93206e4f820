"""verify's comparison: a pure function over a ledger and decoded account updates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from simulator.ledger import parse_lines
from simulator.verify import UpdateView, compare, complete, expectations

T = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def ev(
    event_id: str, event_type: str, account: str | None = "acct-1", outcome: str | None = None, job: str | None = None
) -> dict[str, Any]:
    return {
        "kind": "event",
        "event_id": event_id,
        "event_type": event_type,
        "account_id": account,
        "job_id": job,
        "outcome": outcome,
        "occurred_at": T.isoformat(),
        "source": "generated",
        "deliveries": 1,
    }


def att(
    event_id: str, status: int | None, attempt: int = 1, reason: str | None = "family", delivery: int = 1
) -> dict[str, Any]:
    return {
        "kind": "attempt",
        "event_id": event_id,
        "event_type": "x",
        "account_id": "acct-1",
        "delivery": delivery,
        "attempt": attempt,
        "sent_at": T.isoformat(),
        "status": status,
        "error": None if status else "timeout",
        "latency_ms": 3.0,
        "result": "accepted" if status == 200 else "retry",
        "reason": reason,
    }


def up(
    update_id: str, change: str = "job_succeeded", outcome: str | None = None, pending_since: datetime | None = None
) -> UpdateView:
    return UpdateView(update_id, "acct-1", change, "x", T, "job", outcome, pending_since)


def ledger_of(*records: dict[str, Any]) -> Any:
    import orjson

    return parse_lines(
        [
            orjson.dumps({"kind": "run", "run_id": "r1", "started_at": T.isoformat()}),
            *(orjson.dumps(r) for r in records),
        ]
    )


LEDGER = ledger_of(
    ev("a", "account.added"),
    ev("p1", "income.added", outcome="pending", job="j1"),
    ev("f1", "income.added", outcome="success", job="j1"),
    ev("p2", "identity.added", outcome="pending", job="j2"),  # never resolved: must time out
    ev("n", "company_connect.status.updated", account=None),  # no account: no update
    ev("dl", "employment.added", outcome=None, job="j3"),  # job without outcome: dead-lettered downstream
    ev("x", "paystubs.added", outcome="success", job="j4"),  # never accepted (all attempts failed)
    ev("g", "paystubs.added", outcome="success", job="j5"),  # the gateway dead-lettered it (reason)
    att("a", 200),
    att("a", 200, delivery=2),
    att("p1", 503),
    att("p1", 200, attempt=2),
    att("f1", 200),
    att("p2", 200),
    att("n", 200, reason="other"),
    att("dl", 200),
    att("x", None),
    att("x", 500, attempt=2),
    att("g", 200, reason="invalid_payload"),
)


def test_expectations_follow_the_processing_rules() -> None:
    exp = expectations(LEDGER)
    assert exp.updates == {"a", "p1", "f1", "p2"}
    assert exp.timeouts == (frozenset({"p2:timed_out"}),)
    assert exp.optional_timeouts == {"p1:timed_out"}
    assert exp.accepted == {"a", "p1", "f1", "p2", "n", "dl", "g"}


def test_a_perfect_run() -> None:
    updates = [
        up("a", "account_connected"),
        up("p1", "job_pending", "pending"),
        up("f1", "job_succeeded", "success", T),
        up("p2", "job_pending", "pending"),
        up("p2:timed_out", "job_timed_out", "timed_out", T),
        up("other-run-id"),
    ]
    report = compare(LEDGER, updates)
    assert report.ok
    assert report.found == 5
    assert (len(report.lost), len(report.duplicated), report.joined, report.timed_out) == (0, 0, 1, 1)
    assert complete(LEDGER, updates, expectations(LEDGER))


def test_lost_duplicated_and_missing_timeout_are_reported() -> None:
    updates = [up("a"), up("a"), up("p1"), up("p2")]
    report = compare(LEDGER, updates)
    assert not report.ok
    assert report.lost == ("f1", "p2:timed_out")
    assert report.duplicated == ("a",)
    assert not complete(LEDGER, updates, expectations(LEDGER))


def test_late_timeout_unacknowledged_and_unexpected_are_not_failures_but_counted() -> None:
    updates = [
        up("a"),
        up("p1"),
        up("f1", outcome="success", pending_since=T),
        up("p2"),
        up("p2:timed_out"),
        up("p1:timed_out"),  # the final came after the deadline: allowed
        up("x"),  # processed although the gateway's answer never arrived
        up("n"),
    ]  # an event without account must not give an update
    report = compare(LEDGER, updates)
    assert report.ok
    assert (report.late_timeouts, report.unacknowledged, report.unexpected) == (1, 1, ("n",))
    assert report.timed_out == 2


def test_a_job_timing_out_twice_is_a_duplicate() -> None:
    ledger = ledger_of(
        ev("q1", "income.added", outcome="pending", job="j"),
        ev("q2", "income.added", outcome="pending", job="j"),
        att("q1", 200),
        att("q2", 200),
    )
    updates = [up("q1"), up("q2"), up("q1:timed_out")]
    assert compare(ledger, updates).ok  # either pending's id may carry the timeout
    report = compare(ledger, [*updates, up("q2:timed_out")])
    assert report.duplicated == ("q1:timed_out", "q2:timed_out")


def test_update_view_from_a_decoded_record() -> None:
    datum = {
        "update_id": "e:timed_out",
        "account_id": "acct",
        "change": "job_timed_out",
        "trigger": {"event_id": "e", "event_type": "income.added", "received_at": T},
        "outcome": {"job": "income", "outcome": "timed_out", "pending_since": T, "time_to_resolve_ms": None},
    }
    view = UpdateView.from_datum(datum)
    assert (view.event_id, view.job, view.outcome, view.received_at) == ("e", "income", "timed_out", T)


def test_a_timeout_is_premature_when_the_final_was_answered_before_the_deadline() -> None:
    # Three jobs pending at T: one resolved 10 s later, one 40 s later, one never. With a 30 s window only
    # the first job's timeout is premature: its final was in Kafka before the deadline.
    def sent(event_id: str, seconds: float) -> dict[str, Any]:
        return {**att(event_id, 200), "sent_at": (T + timedelta(seconds=seconds)).isoformat()}

    ledger = ledger_of(
        ev("p1", "employment.added", outcome="pending", job="j1"),
        ev("f1", "employment.added", outcome="success", job="j1"),
        ev("p2", "income.added", outcome="pending", job="j2"),
        ev("f2", "income.added", outcome="success", job="j2"),
        ev("p3", "identity.added", outcome="pending", job="j3"),
        sent("p1", 0),
        sent("f1", 10),
        sent("p2", 0),
        sent("f2", 40),
        sent("p3", 0),
    )
    updates = [up(f"{p}:timed_out", "job_timed_out", "timed_out") for p in ("p1", "p2", "p3")]
    report = compare(ledger, updates, pending_window=timedelta(seconds=30))
    assert report.premature_timeouts == ("p1:timed_out",)
    assert report.late_timeouts == 2  # p1 and p2: their jobs resolved (a timeout is allowed, not required)
    assert compare(ledger, updates).premature_timeouts == ()  # without the window: not classified
