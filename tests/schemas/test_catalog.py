"""Catalog: every documented event type → family → topic; the key rule."""

from __future__ import annotations

import json

import pytest

from schemas import catalog
from schemas.catalog import (
    FAMILY_TOPICS,
    KNOWN_EVENT_TYPES,
    MODELLED_EVENT_TYPES,
    NEWER_EVENT_TYPES,
    Family,
    family_of,
    partition_key,
    topic_for,
)
from schemas.models import PAYLOAD_MODELS
from tests.sample_data import doc_samples_as_json


def test_families_and_topics() -> None:
    assert {f.value for f in Family} == {
        "account",
        "direct_deposit",
        "income_employment",
        "paystubs",
        "shifts",
        "other",
    }
    assert dict(FAMILY_TOPICS) == {f: f"pinwheel.{f.value}.v1" for f in Family}
    assert all(topic_for(f) == FAMILY_TOPICS[f] for f in Family)


def test_every_spec_sample_type_is_modelled() -> None:
    sample_types = {json.loads(text)["event"] for text in doc_samples_as_json()}
    assert len(sample_types) == 18
    assert sample_types == MODELLED_EVENT_TYPES == set(PAYLOAD_MODELS)


@pytest.mark.parametrize(
    ("event_type", "family"),
    [
        ("account.added", Family.ACCOUNT),
        ("account.additional_connections_recommended", Family.ACCOUNT),
        ("account.monitoring_status.updated", Family.ACCOUNT),
        ("direct_deposit_allocations.added", Family.DIRECT_DEPOSIT),
        ("direct_deposit_switch.added", Family.DIRECT_DEPOSIT),
        ("employment.added", Family.INCOME_EMPLOYMENT),
        ("identity.added", Family.INCOME_EMPLOYMENT),
        ("income.added", Family.INCOME_EMPLOYMENT),
        ("paystubs.added", Family.PAYSTUBS),
        ("paystubs.seven_days_synced", Family.PAYSTUBS),
        ("paystubs.fully_synced", Family.PAYSTUBS),
        ("shifts.added", Family.SHIFTS),
        ("shifts.ninety_days_synced", Family.SHIFTS),
        # Newer, undocumented-in-spec and unknown types: never lost, routed to `other`.
        ("paystubs.documents.added", Family.OTHER),
        ("bill.added", Family.OTHER),
        ("company_connect.status.updated", Family.OTHER),
        ("account.something_new", Family.OTHER),
        ("", Family.OTHER),
    ],
)
def test_family_of(event_type: str, family: Family) -> None:
    assert family_of(event_type) is family


def test_newer_types_are_known_but_not_modelled() -> None:
    assert len(NEWER_EVENT_TYPES) == 16
    assert not NEWER_EVENT_TYPES & MODELLED_EVENT_TYPES
    assert KNOWN_EVENT_TYPES == NEWER_EVENT_TYPES | MODELLED_EVENT_TYPES
    assert all(family_of(t) is Family.OTHER for t in NEWER_EVENT_TYPES)


ACCOUNT = "934F6406-C332-4C05-A3E8-6A90765C842D"


def test_partition_key_rule() -> None:
    # Canonical lowercase UUID, so the same account gives the same key bytes on every topic.
    assert partition_key("paystubs.added", "e", {"account_id": ACCOUNT}) == ACCOUNT.lower()
    assert partition_key("bill.added", "e", {"account_id": ACCOUNT, "end_user_id": "u"}) == ACCOUNT.lower()
    assert partition_key("bill.added", "e", {"end_user_id": "user-1", "company_connection_id": "c"}) == "user-1"
    assert partition_key("company_connect.status.updated", "e", {"company_connection_id": "c-1"}) == "c-1"
    assert partition_key("bill.added", "e", {"account_id": None, "end_user_id": 5}) == "e"
    assert partition_key("bill.added", "e", ["not", "an", "object"]) == "e"
    assert partition_key("bill.added", "e", None) == "e"
    # Typed families key by account_id only (their models require it).
    assert partition_key("paystubs.added", "e", {"end_user_id": "u"}) == "e"


def test_job_rules() -> None:
    # The fifteen job events of pinwheel-webhooks.md; the account events are not jobs unless they carry an
    # outcome, and neither are other types (newer API versions) unless they do.
    assert len(catalog.JOB_EVENT_TYPES) == 15
    assert all(not t.startswith("account.") for t in catalog.JOB_EVENT_TYPES)
    assert catalog.is_job("paystubs.fully_synced", None)
    assert not catalog.is_job("account.added", None)
    assert catalog.is_job("tax_forms.added", "pending")
    assert {"success", "error", "pending"} == catalog.JOB_OUTCOMES
