"""The account state survives ``pinwheel.account_state.v1``: AccountState -> datum -> Avro -> datum -> AccountState.

What the state topic must carry for it to be the accounts store's changelog (docs/processing.md): every field the
logic reads back, for the states the logic makes from what the gateway accepts (account, user and platform ids
are canonical UUIDs, pay dates ISO dates, statuses the schema's symbols), with each encoder installed.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.logic.account_table import AccountState, Readiness, Recommendation, SyncProgress
from processors.logic.events import EventEnvelope
from processors.logic.join import JobOutcome
from processors.logic.outputs import AccountUpdate, Change
from processors.wire import WireEncoder, account_state_of, state_datum, update_datum
from schemas.catalog import ACCOUNT_STATE_TOPIC, ACCOUNT_UPDATES_TOPIC
from schemas.codec import FASTAVRO, Codec, encoders
from schemas.store import load_store
from tests.processors.state_strategies import account_states, job_outcomes, text, us, uuids

STATE = load_store().current("pinwheel.AccountState")


def _symbols(*path: str) -> list[str]:
    """The enum symbols of a field of the current AccountState schema (``path``: field names, nested records')."""
    fields = STATE.raw["fields"]
    node: Any = None
    for name in path:
        node = next(f for f in fields if f["name"] == name)["type"]
        while True:  # through unions, maps and arrays to the named type
            if isinstance(node, list):
                node = next(t for t in node if t != "null")
            elif isinstance(node, dict) and node.get("type") in ("map", "array"):
                node = node["values" if node["type"] == "map" else "items"]
            else:
                break
        fields = node.get("fields", []) if isinstance(node, dict) else []
    assert isinstance(node, dict), path
    assert node["type"] == "enum", path
    return [s for s in node["symbols"] if s != "unknown"]


accounts = account_states(_symbols)
outcomes = job_outcomes(_symbols)

CODECS = {kind: Codec(encoder=kind) for kind in encoders()}


@pytest.mark.parametrize("encoder", list(CODECS))
@settings(max_examples=150)
@given(state=accounts)
def test_account_state_survives_its_topic(encoder: str, state: AccountState) -> None:
    codec = CODECS[encoder]
    decoded = account_state_of(codec.decode(ACCOUNT_STATE_TOPIC, codec.encode(ACCOUNT_STATE_TOPIC, state_datum(state))))
    assert decoded == state
    assert all(type(v) is JobOutcome for v in decoded.jobs.values())
    assert all(type(r) is Recommendation for r in decoded.additional_platforms)


@pytest.mark.parametrize("encoder", list(CODECS))
@settings(max_examples=150, deadline=None)
@given(state=accounts)
def test_the_plain_decode_reads_the_state_the_full_decode_reads(encoder: str, state: AccountState) -> None:
    """``decode_plain`` (the restore's read: uuids as text, times as ints, by the encoder's own reader) gives the
    state ``decode`` gives (fastavro's logical types), for records of the current schema."""
    codec = CODECS[encoder]
    data = codec.encode(ACCOUNT_STATE_TOPIC, state_datum(state))
    plain = codec.decode_plain(ACCOUNT_STATE_TOPIC, data)
    assert type(plain["account_id"]) is str
    assert type(plain["events_applied"]) is int
    assert all(type(outcome["as_of"]) is int for outcome in plain["jobs"].values())
    decoded = account_state_of(plain)
    assert decoded == account_state_of(codec.decode(ACCOUNT_STATE_TOPIC, data))
    assert decoded == state


WIRE_ENCODERS = {kind: WireEncoder(codec, max_cached=3) for kind, codec in CODECS.items()}
REFERENCE = Codec(encoder=FASTAVRO)


@pytest.mark.parametrize("encoder", list(CODECS))
@settings(max_examples=100, deadline=None)
@given(states=st.lists(accounts, min_size=1, max_size=3))
def test_the_wire_encoder_writes_the_state_record_of_the_whole_datum(encoder: str, states: list[AccountState]) -> None:
    """Written in parts, outcomes and sync progress from its caches (small here: dropped when full), a state's
    record is the one its whole datum makes, byte for byte, and fastavro's."""
    codec, wire = CODECS[encoder], WIRE_ENCODERS[encoder]
    assert wire.writes_in_parts
    for state in [*states, *states]:  # the second time, from the cached parts
        written = wire.state(state)
        assert written == codec.encode_plain(ACCOUNT_STATE_TOPIC, state_datum(state))
        assert written == REFERENCE.encode(ACCOUNT_STATE_TOPIC, state_datum(state))


envelopes = st.builds(EventEnvelope, uuids, text, st.sampled_from(["account", "paystubs", "other"]), us, us)
updates = st.builds(
    AccountUpdate, text, uuids, st.sampled_from(list(Change)), envelopes, st.none() | outcomes, accounts
)


@pytest.mark.parametrize("encoder", list(CODECS))
@settings(max_examples=100, deadline=None)
@given(batch=st.lists(updates, min_size=1, max_size=3))
def test_the_wire_encoder_writes_the_update_record_of_the_whole_datum(encoder: str, batch: list[AccountUpdate]) -> None:
    """An update's outcome comes from the cache its account's state shares: the record is the whole datum's."""
    codec, wire = CODECS[encoder], WIRE_ENCODERS[encoder]
    for update in batch:
        wire.state(update.account._replace(jobs={"j": update.outcome} if update.outcome else {}))  # cached first
    for update in [*batch, *batch]:
        written = wire.update(update)
        assert written == codec.encode_plain(ACCOUNT_UPDATES_TOPIC, update_datum(update))
        assert written == REFERENCE.encode(ACCOUNT_UPDATES_TOPIC, update_datum(update))


def test_a_record_written_before_v2_reads_with_the_defaults_of_what_v2_added() -> None:
    # A snapshot that an earlier release published: written with AccountState.v1, read through the current schema.
    v1 = next(v for v in load_store().versions("pinwheel.AccountState") if v.file_name == "AccountState.v1.avsc")
    state = AccountState(
        "0b6f0ab2-6a64-4c36-9b0b-0c7f4b1f1a11",
        jobs={"paystubs": JobOutcome("paystubs", None, "success", None, None, 5, 9, 2, 11)},
        paystubs=SyncProgress(sync_status="completed", sync_status_at_us=7, batches=1),
        version=3,
        last_event_id="e",
        last_event_type="paystubs.added",
        last_event_sent_at_us=4,
        updated_at_us=12,
        readiness=Readiness("account_ready", met={"paystubs.added": 8}, first_seen_us=1, decided_at_us=12),
    )
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, state_datum(state))  # the writer ignores the fields v1 does not have
    single_object = b"\xc3\x01" + v1.fingerprint
    decoded = account_state_of(Codec().decode(ACCOUNT_STATE_TOPIC, single_object + body.getvalue()))
    for codec in CODECS.values():  # resolved by `decode` (its values are the logical types'), read the same
        assert account_state_of(codec.decode_plain(ACCOUNT_STATE_TOPIC, single_object + body.getvalue())) == decoded
    assert decoded.readiness is None
    assert decoded.paystubs == state.paystubs._replace(sync_status_at_us=None)  # type: ignore[union-attr]
    assert decoded.jobs["paystubs"].as_of_us == 9  # the latest time of the record: resolved_at
    assert decoded._replace(readiness=state.readiness, paystubs=state.paystubs, jobs=state.jobs) == state
