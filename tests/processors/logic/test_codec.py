"""Store values survive their changelog encoding; unknown versions are refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.logic import (
    ACCOUNT_JOBS_SERDE,
    ACCOUNT_STATE_SERDE,
    INT_SERDE,
    Serde,
    StateCodecError,
)
from processors.logic.account_table import AccountState
from processors.logic.events import EventEnvelope
from processors.logic.join import JobOutcome, JobState, OpenJob
from processors.wire import state_datum
from tests.processors.state_strategies import account_states, opt_text, opt_us, text, us

envelopes = st.builds(EventEnvelope, text, text, text, opt_us, us)
open_jobs = st.builds(OpenJob, opt_text, us, us, st.integers(1, 10**6), us, envelopes, text)
job_states = st.builds(JobState, st.none() | open_jobs, opt_us, st.none() | open_jobs)
account_jobs = st.dictionaries(text, job_states, max_size=5)
accounts = account_states()


@given(st.integers(-(2**63), 2**63 - 1))
def test_int_round_trip(value: int) -> None:
    assert INT_SERDE.from_bytes(INT_SERDE.to_bytes(value)) == value


@given(account_jobs)
def test_account_jobs_round_trip(jobs: dict[str, JobState]) -> None:
    assert ACCOUNT_JOBS_SERDE.from_bytes(ACCOUNT_JOBS_SERDE.to_bytes(jobs)) == jobs


@given(accounts)
def test_account_state_round_trip(state: AccountState) -> None:
    decoded = ACCOUNT_STATE_SERDE.from_bytes(ACCOUNT_STATE_SERDE.to_bytes(state))
    assert decoded == state
    assert state_datum(decoded) == state_datum(state)  # what is published too
    assert all(type(v) is JobOutcome for v in decoded.jobs.values())


@pytest.mark.parametrize(
    ("serde", "value"),
    [(INT_SERDE, 1), (ACCOUNT_JOBS_SERDE, {"income.added": JobState()}), (ACCOUNT_STATE_SERDE, AccountState("a"))],
)
def test_unknown_version_is_refused(serde: Serde[Any], value: object) -> None:
    encoded = serde.to_bytes(value)
    assert encoded[0] == 1
    with pytest.raises(StateCodecError):
        serde.from_bytes(b"\x02" + encoded[1:])
    with pytest.raises(StateCodecError):
        serde.from_bytes(b"")


def test_older_account_state_without_trailing_fields_still_decodes() -> None:
    # The evolution rule: fields are appended with defaults, so a shorter array is an older writer's value.
    older = b"\x01" + b'["a",null,null,null,null,null,null,null,null,[],null,{},null,null,3]'
    state = ACCOUNT_STATE_SERDE.from_bytes(older)
    assert (state.account_id, state.version, state.last_event_id, state.updated_at_us) == ("a", 3, None, None)


def test_encoding_is_stable() -> None:
    # Golden bytes: a change here means a new version byte and a decoder for the old one.
    jobs = {"income.added": JobState(None, 5, None)}
    assert ACCOUNT_JOBS_SERDE.to_bytes(jobs) == b'\x01{"income.added":[null,5,null]}'
    assert INT_SERDE.to_bytes(1) == b"\x01" + (1).to_bytes(8, "big")
