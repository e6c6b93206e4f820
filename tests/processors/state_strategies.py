"""Hypothesis strategies for account states, shared by the two tests that round-trip them: the local store's serde
(``tests/processors/logic/test_codec.py``: any value it is given) and the state topic
(``tests/processors/test_state_datum.py``: the states the logic makes from what the gateway accepts)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from processors.logic.account_table import AccountState, Readiness, Recommendation, SyncProgress
from processors.logic.join import JobOutcome

us = st.integers(0, 10**16 - 1)  # up to the year 2286, as timestamp-micros
opt_us = st.none() | us
text = st.text(max_size=12)
opt_text = st.none() | text
_ids = st.lists(text, max_size=5, unique=True).map(tuple)
_counts = st.integers(0, 10**6)
uuids = st.uuids().map(str)  # canonical lowercase, as the gateway keys and the logic keeps them
_readiness = st.builds(Readiness, opt_text, opt_text, opt_text, st.dictionaries(text, us, max_size=3), opt_us, opt_us)


def job_outcomes(symbols: Callable[..., list[str]] | None = None) -> st.SearchStrategy[JobOutcome]:
    """Any job outcome (``symbols`` None), or one as the logic makes it (see `account_states`)."""
    if symbols is None:
        job_id, outcome = opt_text, st.sampled_from(["success", "error", "pending", "timed_out"])
    else:
        job_id, outcome = st.none() | uuids, st.sampled_from(symbols("jobs", "outcome"))
    return st.builds(JobOutcome, text, job_id, outcome, opt_text, opt_text, opt_us, opt_us, st.integers(1, 1000), us)


def account_states(symbols: Callable[..., list[str]] | None = None) -> st.SearchStrategy[AccountState]:
    """Any account state (``symbols`` None: free text, or none, in every field), or, given the schema's enum
    symbols by field path (``symbols("jobs", "outcome")``), a state as the logic makes it: ids canonical UUIDs,
    pay dates ISO dates, statuses the schema's symbols, the last event of the state always set."""
    if symbols is None:
        uuid, opt_uuid, opt_date, last_text, last_us = text, opt_text, opt_text, opt_text, opt_us

        def enum(*_: str) -> st.SearchStrategy[str | None]:
            return opt_text

    else:
        uuid = uuids
        opt_uuid = st.none() | uuid
        opt_date = st.none() | st.dates().map(lambda d: d.isoformat())
        last_text, last_us = text, us

        def enum(*path: str) -> st.SearchStrategy[str | None]:
            return st.sampled_from(symbols(*path))

    outcomes = job_outcomes(symbols)
    syncs = st.builds(
        SyncProgress,
        *(opt_us, opt_us, opt_us, opt_us, opt_text, opt_us),
        *(_counts, _counts, _counts, _counts),
        *(opt_date, opt_date, _ids, _ids, st.booleans(), opt_text),
    )
    recommendations = st.builds(
        Recommendation, enum("additional_platforms", "platform_type"), enum("additional_platforms", "action"), opt_uuid
    )
    return st.builds(
        AccountState,
        uuid,
        opt_uuid,
        opt_uuid,
        opt_text,
        opt_uuid,
        st.none() | st.booleans(),
        opt_us,
        st.none() | enum("monitoring_status"),
        opt_us,
        st.lists(recommendations, max_size=3).map(tuple),
        opt_us,
        st.dictionaries(text, outcomes, max_size=4),
        st.none() | syncs,
        st.none() | syncs,
        st.integers(0, 10**9),
        last_text,
        last_text,
        last_us,
        opt_text,
        last_us,
        st.none() | _readiness,
    )
