"""Readiness (docs/consuming.md "Readiness"): the rule's parser and the verdicts the processor publishes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from processors.logic import (
    AccountProcessor,
    AccountUpdate,
    LogicConfig,
    Output,
    ReadinessUpdate,
    in_memory_stores,
    parse_rule,
)
from processors.logic.codec import account_state_from_bytes, account_state_to_bytes
from processors.logic.readiness import Requirement
from processors.logic.timeutil import to_us
from schemas import catalog
from tests.processors.logic.logic_helpers import account_event, at, job_event

DEFAULT = parse_rule(catalog.DEFAULT_READINESS_RULE)


def proc(rule: str = catalog.DEFAULT_READINESS_RULE, **config: timedelta) -> AccountProcessor:
    # Serialized stores: the readiness kept in the account state survives the changelog encoding.
    return AccountProcessor(LogicConfig(readiness=parse_rule(rule), **config), in_memory_stores(serialized=True))


def readiness(outputs: list[Output]) -> list[ReadinessUpdate]:
    return [o for o in outputs if isinstance(o, ReadinessUpdate)]


def feed(p: AccountProcessor, *events: object) -> list[ReadinessUpdate]:
    found: list[ReadinessUpdate] = []
    for event in events:
        found += readiness(p.process(event))  # type: ignore[arg-type]
    return found


def added(event_id: str = "a1", *, minutes: float = 0, status: str = "active") -> object:
    payload = {"account_id": "acct-1", "created_at": at(minutes).isoformat(), "monitoring_status": status}
    return account_event(event_id, "account.added", payload, received=minutes)


def synced(event_id: str, level: str, *, occurred: float, outcome: str = "success") -> object:
    return job_event(event_id, outcome, occurred=occurred, event_type=f"paystubs.{level}_synced")


# -- the rule ------------------------------------------------------------------------------------------------


def test_the_default_rule_reads_as_documented() -> None:
    assert DEFAULT.text == "income.added, employment.added, paystubs.thirty_days_synced"
    assert DEFAULT.requirements == (
        Requirement("income.added", "income"),
        Requirement("employment.added", "employment"),
        Requirement("paystubs.thirty_days_synced", "paystubs", catalog.SYNC_LEVELS.index("thirty_days")),
    )
    assert DEFAULT.event_types == {"income.added", "employment.added", "paystubs.thirty_days_synced"}


def test_a_rule_is_normalised_and_duplicates_dropped() -> None:
    rule = parse_rule(" identity.added ,shifts.fully_synced,identity.added,")
    assert rule.text == "identity.added, shifts.fully_synced"


@pytest.mark.parametrize("text", ["", " , ", "account.added", "income", "paystubs.sixty_days_synced", "bill.added"])
def test_a_rule_naming_no_job_or_sync_event_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        parse_rule(text)


# -- verdicts ------------------------------------------------------------------------------------------------


def test_ready_once_every_requirement_is_met_in_any_order_with_time_to_ready() -> None:
    p = proc()
    assert (
        feed(
            p,
            added(minutes=0),
            job_event("p1", "pending", occurred=5, event_type="paystubs.added"),
            synced("s7", "seven_days", occurred=10),
            job_event("i1", "success", occurred=20, event_type="income.added"),
            job_event("e1", "success", occurred=30, event_type="employment.added"),
        )
        == []
    )
    [ready] = feed(p, synced("s30", "thirty_days", occurred=50))
    assert ready.readiness_id == "s30:account_ready"
    assert ready.account_id == "acct-1"
    assert ready.rule == DEFAULT.text
    verdict = ready.verdict
    assert (verdict.status, verdict.reason, verdict.blocked_by, verdict.missing) == ("account_ready", None, None, ())
    assert verdict.met == ("income.added", "employment.added", "paystubs.thirty_days_synced")
    assert verdict.started_at_us == to_us(at(0))  # account.added created_at
    assert verdict.ready_at_us == to_us(at(50))
    assert verdict.time_to_ready_ms == 50 * 60 * 1000
    # Ready is final: a deeper milestone, a refresh that fails, a user action needed: no readiness update.
    assert feed(
        p,
        synced("s90", "ninety_days", occurred=60),
        job_event("i2", "error", occurred=70, event_type="income.added"),
        account_event(
            "m1",
            "account.monitoring_status.updated",
            {"account_id": "acct-1", "current_monitoring_status": "user_action_required",
             "updated_at": at(80).isoformat()},
            received=80,
        ),
    ) == []  # fmt: skip


def test_a_deeper_milestone_meets_a_shallower_requirement() -> None:
    p = proc("paystubs.seven_days_synced")
    [ready] = feed(p, synced("f1", "fully", occurred=3))
    assert ready.verdict.status == "account_ready"
    assert ready.verdict.started_at_us == ready.verdict.ready_at_us == to_us(at(3))  # no account.added: first seen


def test_a_refresh_pending_after_success_does_not_unmeet_a_requirement() -> None:
    p = proc("income.added, employment.added")
    feed(p, job_event("i1", "success", occurred=1, event_type="income.added"))
    feed(p, job_event("i2", "pending", occurred=2, event_type="income.added"))
    [ready] = feed(p, job_event("e1", "success", occurred=3, event_type="employment.added"))
    assert ready.verdict.ready_at_us == to_us(at(3))


def test_blocked_by_an_error_with_its_codes_then_ready_after_a_successful_retry() -> None:
    p = proc()
    feed(p, added())
    [blocked] = feed(p, job_event("i1", "error", occurred=5, event_type="income.added"))
    verdict = blocked.verdict
    assert blocked.readiness_id == "i1:account_blocked"
    assert (verdict.status, verdict.reason, verdict.blocked_by) == ("account_blocked", "error", "income.added")
    assert (verdict.error_code, verdict.error_type) == ("E1", "T1")
    assert verdict.missing == ("income.added", "employment.added", "paystubs.thirty_days_synced")
    assert verdict.ready_at_us is None
    assert verdict.time_to_ready_ms is None
    # Still blocked for the same reason: nothing new to say.
    assert feed(p, job_event("e1", "success", occurred=6, event_type="employment.added")) == []
    # The paystubs sync fails too: still blocked first by income (rule order), nothing new to say.
    assert feed(p, synced("s1", "thirty_days", occurred=7, outcome="error")) == []
    # The user retries income: blocked by paystubs now, which is said.
    [again] = feed(p, job_event("i2", "pending", occurred=8, event_type="income.added"))
    assert (again.verdict.reason, again.verdict.blocked_by) == ("error", "paystubs.thirty_days_synced")
    assert again.verdict.met == ("employment.added",)
    assert feed(p, job_event("i3", "success", occurred=9, event_type="income.added")) == []
    [ready] = feed(p, synced("s2", "thirty_days", occurred=10))
    assert ready.verdict.status == "account_ready"
    assert ready.verdict.time_to_ready_ms == 10 * 60 * 1000


def test_blocked_by_a_timeout_from_the_timer() -> None:
    p = proc(pending_timeout=timedelta(hours=1), timeout_grace=timedelta(0))
    feed(p, added(), job_event("e1", "pending", occurred=1, event_type="employment.added"))
    outputs = p.on_time(at(62))
    [blocked] = readiness(outputs)
    assert blocked.readiness_id == "e1:timed_out:account_blocked"
    assert (blocked.verdict.reason, blocked.verdict.blocked_by) == ("timeout", "employment.added")
    # The readiness update follows the account update and snapshot that decided it.
    assert [type(o).__name__ for o in outputs] == ["AccountUpdate", "AccountStateSnapshot", "ReadinessUpdate"]


def test_blocked_while_the_user_must_log_in_again() -> None:
    p = proc()
    [blocked] = feed(p, added(status="user_action_required"))
    assert (blocked.verdict.reason, blocked.verdict.blocked_by) == (
        "user_action_required",
        "account.monitoring_status.updated",
    )
    assert blocked.readiness_id == "a1:account_blocked"


def test_readiness_changes_no_account_version_and_survives_the_state_codec() -> None:
    p = proc("income.added")
    outputs = p.process(job_event("i1", "success", occurred=1, event_type="income.added"))
    [update] = [o for o in outputs if isinstance(o, AccountUpdate)]
    [ready] = readiness(outputs)
    assert update.account.version == ready.account.version == 1
    state = ready.account
    assert state.readiness is not None
    assert state.readiness.status == "account_ready"
    assert account_state_from_bytes(account_state_to_bytes(state)) == state
    # An account state written before readiness existed (one field fewer) still decodes.
    old = account_state_to_bytes(state._replace(readiness=None))
    assert account_state_from_bytes(old[:-6] + b"]") == state._replace(readiness=None)


def test_no_rule_no_readiness_updates() -> None:
    p = AccountProcessor(LogicConfig(), in_memory_stores())
    assert readiness(p.process(job_event("i1", "success", occurred=1, event_type="income.added"))) == []
