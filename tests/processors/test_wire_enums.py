"""Every enum field of the processors' output schemas, walked from the .avsc files, can take what the logic gives it.

Each field is one of two kinds:
- open: its value comes from Pinwheel's payload, and its Avro enum is one of schemas/enums.py's open enums; the wire
  writes a value Pinwheel adds tomorrow as `unknown` (docs/wire-format.md, "Enums are open");
- closed: the logic writes it from a closed set of its own (a value outside it is refused before it gets there).
A new enum field in an output schema fails `test_every_output_enum_field_is_open_or_closed` until it is put in one
of the two tables. Records are written by the connector's codec and read back by fastavro from the .avsc files.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.logic.account_table import AccountState, Recommendation
from processors.logic.events import EventEnvelope
from processors.logic.outputs import AccountUpdate, Change
from processors.wire import state_datum, update_datum
from schemas import catalog, enums
from schemas.codec import Codec
from schemas.deadletter import build_dead_letter
from tests.processors.pipeline_driver import AVRO_DIR, OUTPUT_TOPICS, IndependentReader

ACCOUNT = "3f1c9a52-6b0e-4d8e-9c1a-7a2b4c5d6e70"
STATE_TOPIC, UPDATES_TOPIC = catalog.ACCOUNT_STATE_TOPIC, catalog.ACCOUNT_UPDATES_TOPIC

Field = tuple[str, str]  # (record, path): `[]` an array's items, `{}` a map's values


def _enum_fields(record: str) -> Iterator[tuple[Field, dict[str, Any]]]:
    """(field, its Avro enum) for every enum in the newest schema file of `record`, named references resolved."""
    schema = json.loads(sorted(AVRO_DIR.glob(f"{record}.v*.avsc"))[-1].read_text())
    named: dict[str, dict[str, Any]] = {}

    def walk(kind: Any, path: str) -> Iterator[tuple[Field, dict[str, Any]]]:
        if isinstance(kind, list):
            for branch in kind:
                yield from walk(branch, path)
        elif isinstance(kind, str):
            if kind in named:
                yield from walk(named[kind], path)
        elif kind["type"] == "enum":
            named[kind["name"]] = kind
            yield (record, path), kind
        elif kind["type"] == "record":
            named[kind["name"]] = kind
            for field in kind["fields"]:
                yield from walk(field["type"], f"{path}.{field['name']}".lstrip("."))
        elif kind["type"] == "array":
            yield from walk(kind["items"], f"{path}[]")
        elif kind["type"] == "map":
            yield from walk(kind["values"], f"{path}{{}}")
        else:
            yield from walk(kind["type"], path)

    yield from walk(schema, "")


OUTPUT_RECORDS = [Codec().record_name(topic).rpartition(".")[2] for topic in OUTPUT_TOPICS]
ENUM_FIELDS = dict(field for record in OUTPUT_RECORDS for field in _enum_fields(record))


#: An account after one event: what the state record needs besides the field under test.
BASE = AccountState(
    ACCOUNT,
    version=1,
    last_event_id="e-1",
    last_event_type="account.monitoring_status.updated",
    last_event_sent_at_us=0,
    last_change=Change.MONITORING_STATUS_CHANGED.value,
    updated_at_us=0,
)


def _update(account: AccountState) -> dict[str, Any]:
    trigger = EventEnvelope("e-1", "account.monitoring_status.updated", catalog.Family.ACCOUNT.value, 0, 0)
    return update_datum(AccountUpdate("e-1", ACCOUNT, Change.MONITORING_STATUS_CHANGED, trigger, None, account))


Write = Callable[[str], tuple[str, dict[str, Any]]]  # a value -> (topic, datum of the wire with it in the field)
Read = Callable[[dict[str, Any]], Any]  # the decoded record -> the field

OPEN: dict[Field, tuple[Write, Read]] = {
    ("AccountState", "monitoring_status"): (
        lambda v: (STATE_TOPIC, state_datum(BASE._replace(monitoring_status=v))),
        lambda d: d["monitoring_status"],
    ),
    ("AccountState", "additional_platforms[].platform_type"): (
        lambda v: (
            STATE_TOPIC,
            state_datum(BASE._replace(additional_platforms=(Recommendation(v, "ask", None),))),
        ),
        lambda d: d["additional_platforms"][0]["platform_type"],
    ),
    ("AccountState", "additional_platforms[].action"): (
        lambda v: (
            STATE_TOPIC,
            state_datum(BASE._replace(additional_platforms=(Recommendation("payroll", v, None),))),
        ),
        lambda d: d["additional_platforms"][0]["action"],
    ),
    ("AccountUpdate", "account.monitoring_status"): (
        lambda v: (UPDATES_TOPIC, _update(BASE._replace(monitoring_status=v))),
        lambda d: d["account"]["monitoring_status"],
    ),
}

_JOB_STATUSES = catalog.JOB_OUTCOMES | {catalog.TIMED_OUT}  # other outcomes are dead-lettered (invalid_outcome)
_FAMILIES = {family.value for family in catalog.Family}
_MILESTONES = set(catalog.SYNC_LEVELS)
_STAGES = set(typing.get_args(typing.get_type_hints(build_dead_letter)["stage"]))

CLOSED: dict[Field, set[str]] = {
    ("AccountUpdate", "change"): {change.value for change in Change},
    ("AccountUpdate", "trigger.family"): _FAMILIES,
    ("AccountUpdate", "outcome.outcome"): _JOB_STATUSES,
    ("AccountUpdate", "account.paystubs_synced"): _MILESTONES,
    ("AccountUpdate", "account.shifts_synced"): _MILESTONES,
    ("AccountState", "jobs{}.outcome"): _JOB_STATUSES,
    ("AccountState", "paystubs_synced"): _MILESTONES,
    ("AccountState", "shifts_synced"): _MILESTONES,
    ("AccountReadiness", "status"): set(catalog.READINESS_STATUSES),
    ("AccountReadiness", "reason"): set(catalog.BLOCKED_REASONS),
    ("AccountReadiness", "trigger.family"): _FAMILIES,
    ("DeadLetter", "stage"): _STAGES,
}


def _open_enum(field: Field) -> type[enums.OpenEnum] | None:
    found = getattr(enums, ENUM_FIELDS[field]["name"], None)
    return found if isinstance(found, type) and issubclass(found, enums.OpenEnum) else None


def test_every_output_enum_field_is_open_or_closed() -> None:
    assert {"AccountUpdate", "AccountState", "AccountReadiness", "DeadLetter"} <= set(OUTPUT_RECORDS)
    assert not OPEN.keys() & CLOSED.keys()
    assert set(ENUM_FIELDS) == OPEN.keys() | CLOSED.keys()


def test_the_open_fields_are_those_typed_with_an_open_enum_of_the_schemas() -> None:
    """A field typed with one of schemas/enums.py's enums takes Pinwheel's values: the wire must coerce it."""
    assert {field for field in ENUM_FIELDS if _open_enum(field) is not None} == OPEN.keys()


@pytest.mark.parametrize("field", sorted(CLOSED), ids="/".join)
def test_what_the_logic_writes_in_a_closed_field_is_a_symbol(field: Field) -> None:
    assert CLOSED[field] <= set(ENUM_FIELDS[field]["symbols"])


_CODEC, _READER = Codec(), IndependentReader()
_SYMBOLS = sorted({symbol for field in OPEN for symbol in ENUM_FIELDS[field]["symbols"]})


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(OPEN)), value=st.one_of(st.sampled_from(_SYMBOLS), st.text(max_size=30)))
def test_an_open_field_writes_a_value_it_does_not_know_as_unknown(field: Field, value: str) -> None:
    write, read = OPEN[field]
    topic, datum = write(value)
    symbols = ENUM_FIELDS[field]["symbols"]
    assert read(_READER.decode(_CODEC.encode(topic, datum))) == (value if value in symbols else "unknown")
