"""The account pipeline without a broker: every output kind, through `PipelineDriver`.

Inputs are encoded by the gateway's own code, outputs decoded by fastavro from the .avsc files; stream time
moves only through records and `advance_to`. The Kafka tests (test_pipeline_kafka.py) cover the same pipeline
end to end with transactions; these pin down what it emits for each kind of input, fast and exactly.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from processors.logic.account_table import AccountState
from processors.logic.codec import ACCOUNT_STATE_SERDE
from processors.logic.stores import ACCOUNTS, JOBS, STORE_NAMES, Stores
from schemas import catalog
from tests.processors.pipeline_driver import Output, PipelineDriver, on, utc
from tests.sample_data import doc_samples_as_json

T0 = utc(2025, 6, 24, 12, 0)
ACCOUNT = "7d8fa0e2-8f4c-4a57-9e2b-2a3c0f7d6a11"
UPDATES, STATE, DEAD = catalog.ACCOUNT_UPDATES_TOPIC, catalog.ACCOUNT_STATE_TOPIC, catalog.DEADLETTER_TOPIC


def job(event_type: str, outcome: str, at: datetime, *, job_id: str | None = None, **payload: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event": event_type,
        "payload": {
            "id": job_id or str(uuid.uuid4()),
            "account_id": ACCOUNT,
            "name": event_type.split(".")[0],
            "timestamp": at.isoformat(),
            "outcome": outcome,
            "params": {},
            **payload,
        },
    }


def only(outputs: list[Output], topic: str) -> Output:
    found = on(outputs, topic)
    assert len(found) == 1, [(o.topic, o.value.get("reason")) for o in outputs]
    return found[0]


EXPECTED_CHANGE = {
    "account.added": "account_connected",
    "account.additional_connections_recommended": "additional_connections_recommended",
    "account.monitoring_status.updated": "monitoring_status_changed",
    **dict.fromkeys(catalog.SYNC_MILESTONE_EVENTS, "sync_progressed"),
}


@pytest.mark.parametrize("body", doc_samples_as_json(), ids=lambda b: json.loads(b)["event"])
def test_each_documented_event_gives_one_update_and_one_state_snapshot(driver: PipelineDriver, body: str) -> None:
    sent = json.loads(body)
    outputs = driver.pipe(body.encode(), T0)
    assert [o.topic for o in outputs] == [UPDATES, STATE]
    update, state = outputs
    account = sent["payload"]["account_id"]
    family = catalog.family_of(sent["event"]).value
    assert update.key == state.key == account
    assert update.value["update_id"] == sent["event_id"]
    assert update.value["change"] == EXPECTED_CHANGE.get(sent["event"], "job_succeeded")
    assert update.value["trigger"]["event_type"] == sent["event"]
    assert update.value["trigger"]["family"] == family
    assert update.value["account"]["events_applied"] == 1
    assert (update.value["outcome"] is None) is (sent["event"] in catalog.ACCOUNT_EVENT_TYPES)
    for out in outputs:
        assert out.headers["event_id"] == sent["event_id"]
        assert out.headers["event_type"] == sent["event"]
        assert out.headers["webhook_id"] == "00000000-0000-4000-8000-0000000000ff"
        assert out.headers["content_format"] == "avro-single-object"
    assert state.value["events_applied"] == 1
    assert state.value["last_event_id"] == sent["event_id"]


def test_an_event_of_the_other_family_is_recorded_on_its_account(driver: PipelineDriver) -> None:
    body = {"event_id": "o-1", "event": "tax_forms.added", "payload": {"account_id": ACCOUNT.upper()}}
    update = only(driver.pipe(body, T0), UPDATES)
    assert (update.key, update.value["change"]) == (ACCOUNT, "event_recorded")
    assert update.value["trigger"]["family"] == "other"


def test_a_final_joins_its_pending(driver: PipelineDriver) -> None:
    job_id = str(uuid.uuid4())
    pending = job("income.added", "pending", T0, job_id=job_id)
    assert only(driver.pipe(pending, T0), UPDATES).value["change"] == "job_pending"
    final = job("income.added", "success", T0 + timedelta(minutes=3), job_id=job_id)
    update = only(driver.pipe(final, T0 + timedelta(minutes=3)), UPDATES).value
    assert update["change"] == "job_succeeded"
    assert update["outcome"]["outcome"] == "success"
    assert update["outcome"]["pending_since"] == T0
    assert update["outcome"]["time_to_resolve_ms"] == 180_000
    assert update["outcome"]["deliveries_seen"] == 2


def test_a_lonely_pending_times_out_when_stream_time_passes_its_deadline_then_a_late_final_joins_it(
    driver: PipelineDriver,
) -> None:
    pending = job("employment.added", "pending", T0)
    driver.pipe(pending, T0)
    deadline = T0 + driver.config.pending_timeout + driver.config.timeout_grace
    assert driver.advance_to(deadline) == []  # due at the deadline: fires only once stream time is past it
    outputs = driver.advance_to(deadline + timedelta(milliseconds=1))
    timed_out = only(outputs, UPDATES)
    assert timed_out.value["update_id"] == f"{pending['event_id']}:timed_out"
    assert timed_out.value["change"] == "job_timed_out"
    assert timed_out.value["outcome"]["outcome"] == "timed_out"
    assert timed_out.headers["event_id"] == pending["event_id"]
    assert "webhook_id" not in timed_out.headers  # the delivery being processed is not the pending's
    assert only(outputs, STATE).value["last_change"] == "job_timed_out"
    assert driver.advance_to(deadline + timedelta(hours=1)) == []  # fired once

    late = job("employment.added", "success", T0 + timedelta(hours=24, minutes=30))
    update = only(driver.pipe(late, deadline + timedelta(minutes=5)), UPDATES).value
    assert (update["change"], update["outcome"]["outcome"]) == ("job_succeeded", "success")
    assert update["outcome"]["pending_since"] == T0
    assert driver.counters.logic["late_joined"] == 1


def test_a_redelivered_event_is_dropped(driver: PipelineDriver) -> None:
    body = job("identity.added", "success", T0)
    assert len(driver.pipe(body, T0)) == 2
    assert driver.pipe(body, T0 + timedelta(minutes=1), webhook_id="another-attempt") == []
    assert driver.counters.logic["duplicate"] == 1


def test_the_state_snapshot_is_coalesced_per_account_and_carries_the_whole_state(driver: PipelineDriver) -> None:
    driver.pipe(job("paystubs.added", "success", T0, added=[{"id": str(uuid.uuid4())}]), T0)
    outputs = driver.pipe(job("paystubs.fully_synced", "success", T0 + timedelta(minutes=1)), T0)
    state = only(outputs, STATE).value
    assert state["events_applied"] == 2
    assert state["paystubs_synced"] == "fully"
    assert state["paystubs"]["batches"] == 1
    assert state["paystubs"]["added_count"] == 1
    assert set(state["jobs"]) == {"paystubs"}


def test_reported_counts_that_overflow_a_long_saturate_instead_of_breaking_the_snapshot(driver: PipelineDriver) -> None:
    # Each count is a valid Avro long; their sum is not. The snapshot must still encode (a crash at the end of
    # the batch would fail the task again on every restart).
    huge = 2**62 + 5
    driver.pipe(job("paystubs.added", "success", T0, params={"count": huge}), T0)
    outputs = driver.pipe(job("paystubs.added", "success", T0, params={"count": huge}), T0)
    assert len(on(outputs, UPDATES)) == 1
    assert only(outputs, STATE).value["paystubs"]["reported_count"] == 2**63 - 1


# -- dead letters --------------------------------------------------------------------------------------


def _dead(outputs: list[Output], reason: str) -> dict[str, Any]:
    letter = only(outputs, DEAD)
    assert letter.value["reason"] == reason
    assert letter.value["stage"] == "processor"
    assert letter.headers["error_reason"] == reason
    assert on(outputs, UPDATES) == []
    return letter.value


def _with_raw_body(driver: PipelineDriver, body: dict[str, Any], raw_body: bytes) -> list[Output]:
    """The gateway's record for `body`, with another `raw_body` (a record our gateway would not write)."""
    topic, key, value, headers = driver.gateway_record(body, T0)
    datum = driver.codec.decode(topic, value)
    datum["raw_body"] = raw_body
    return driver.pipe_record(topic, key, driver.codec.encode(topic, datum), headers, logged_at=T0)


def test_a_record_that_is_not_avro_is_a_decode_error(driver: PipelineDriver) -> None:
    topic, key, _value, headers = driver.gateway_record(job("income.added", "success", T0), T0)
    letter = _dead(driver.pipe_record(topic, key, b"\x00garbage", headers, logged_at=T0), "decode_error")
    assert letter["raw"] == b"\x00garbage"
    assert letter["source_topic"] == topic


def test_an_outcome_outside_the_catalog_is_dead_lettered(driver: PipelineDriver) -> None:
    body = job("income.added", "exploded", T0)  # the gateway's open enum keeps it as "unknown"
    letter = _dead(driver.pipe(body, T0), "invalid_outcome")
    assert letter["event_id"] == body["event_id"]


def test_a_job_id_that_is_not_a_uuid_is_dead_lettered(driver: PipelineDriver) -> None:
    body = {"event_id": "o-2", "event": "tax_forms.added", "payload": {"account_id": ACCOUNT, "outcome": "success"}}
    body["payload"]["id"] = "not-a-uuid"
    _dead(driver.pipe(body, T0), "invalid_job_id")


def test_a_job_without_outcome_is_dead_lettered_and_not_remembered(driver: PipelineDriver) -> None:
    body = job("income.added", "success", T0)
    raw = dict(body, payload={k: v for k, v in body["payload"].items() if k != "outcome"})
    _dead(_with_raw_body(driver, body, json.dumps(raw).encode()), "missing_outcome")
    assert len(driver.pipe(body, T0)) == 2  # a fixed replay is processed as new


def test_a_raw_body_that_is_not_json_is_dead_lettered_with_the_gateways_reason(driver: PipelineDriver) -> None:
    _dead(_with_raw_body(driver, job("income.added", "success", T0), b"{not json"), "invalid_json")
    _dead(_with_raw_body(driver, job("income.added", "success", T0), b"[]"), "not_an_object")


def test_a_record_without_event_id_is_dead_lettered(driver: PipelineDriver) -> None:
    body = job("income.added", "success", T0)
    topic, key, value, headers = driver.gateway_record(body, T0)
    datum = driver.codec.decode(topic, value)
    datum["event_id"] = ""
    outputs = driver.pipe_record(topic, key, driver.codec.encode(topic, datum), headers, logged_at=T0)
    _dead(outputs, "missing_event_id")


def test_a_failure_in_the_logic_keeps_the_record_without_its_effects(driver: PipelineDriver) -> None:
    # The account's jobs in the local store are damaged (what a bad disk leaves): the logic fails reading them,
    # after it has remembered the event as seen; that write must be dropped with the record's other effects.
    body = job("income.added", "success", T0)
    driver.task_state().apply_restored(JOBS, [(ACCOUNT.encode(), b"\x01[damaged")])
    letter = _dead(driver.pipe(body, T0), "processing_error")
    assert letter["error"] == "JSONDecodeError"
    driver.task_state().apply_restored(JOBS, [(ACCOUNT.encode(), None)])  # the store mended
    assert len(driver.pipe(body, T0)) == 2  # not remembered as seen: its replay is processed


def test_a_state_snapshot_that_cannot_be_encoded_keeps_its_record_without_effects(driver: PipelineDriver) -> None:
    # A stored state holding a time beyond what an Avro long holds, in a field the state topic carries and the
    # update does not: the update is written, the snapshot cannot be.
    body = job("income.added", "success", T0)
    at_limit = AccountState(ACCOUNT, monitoring_status_at_us=2**63)
    driver.task_state().apply_restored(ACCOUNTS, [(ACCOUNT.encode(), ACCOUNT_STATE_SERDE.to_bytes(at_limit))])
    letter = _dead(driver.pipe(body, T0), "encode_error")
    assert letter["error"] == "account state: InvalidValue"  # the encoder's error type, never the value
    driver.task_state().apply_restored(ACCOUNTS, [(ACCOUNT.encode(), None)])
    outputs = driver.pipe(body, T0)  # not remembered as seen: its replay is processed
    assert len(on(outputs, UPDATES)) == 1
    assert only(outputs, STATE).value["events_applied"] == 1


def test_a_record_whose_outputs_the_broker_refused_is_kept_whole_without_effects(driver: PipelineDriver) -> None:
    body = job("income.added", "success", T0)
    topic, key, value, _headers = driver.gateway_record(body, T0)
    letter = _dead(driver.refuse(body, T0, "MessageSizeTooLargeError"), "output_refused")
    assert (letter["raw"], letter["source_topic"], letter["source_key"]) == (value, topic, key)
    assert letter["event_id"] == body["event_id"]
    assert len(driver.pipe(body, T0)) == 2  # nothing of it was remembered


def test_the_stores_are_the_catalogs_stores() -> None:
    assert tuple(f.name for f in dataclasses.fields(Stores)) == STORE_NAMES


def test_refresh_job_link_tokens_give_updates_and_keep_the_known_token(driver: PipelineDriver) -> None:
    """Issue 26: a refresh job's "undefined" link token (every shape) is an update, never a dead letter, and never
    overwrites the link token the account's login gave."""
    from tests.refresh_jobs import LINK_TOKEN_SHAPES, refresh_body, samples_with_link_token

    samples = {sample["event"]: sample for sample in samples_with_link_token()}
    login = json.loads(refresh_body(samples["account.added"], "missing", ACCOUNT))
    token = uuid.uuid4()  # fastavro reads the uuid logical type back as a UUID
    login["payload"]["link_token_id"] = str(token)
    first = only(driver.pipe(login, T0), STATE)
    assert first.value["link_token_id"] == token
    at = T0
    for shape in sorted(LINK_TOKEN_SHAPES):
        for event_type in ("account.added", "direct_deposit_allocations.added", "income.added", "paystubs.added"):
            at += timedelta(seconds=1)
            outputs = driver.pipe(refresh_body(samples[event_type], shape, ACCOUNT), at)
            assert not on(outputs, DEAD), (shape, event_type)
            update = only(outputs, UPDATES)
            assert update.value["account"]["link_token_id"] == token, (shape, event_type)
            assert only(outputs, STATE).value["link_token_id"] == token
