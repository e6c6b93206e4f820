"""Schema evolution guard: every current schema reads data written with every kept older version.

Data-driven, with fastavro doing the resolution exactly as a consumer would: random datums are generated
from the *writer* (older) schema, written with it, and read with the current schema as reader. The
synthetic cases below show the check fails on the changes that break downstream consumers.
"""

from __future__ import annotations

import copy
import io
import random
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.utils import generate_many

from schemas.store import SchemaVersion, load_store, parse

SAMPLES = 200


def assert_backward_compatible(writer_raw: dict[str, Any], reader_raw: dict[str, Any], seed: int = 0) -> None:
    """Raises if data written with writer_raw cannot be read with reader_raw."""
    writer, reader = parse(writer_raw), parse(reader_raw)
    random.seed(seed)  # fastavro.utils draws from the global generator; keep CI reproducible
    for datum in generate_many(writer, SAMPLES):
        buffer = io.BytesIO()
        schemaless_writer(buffer, writer, datum)
        buffer.seek(0)
        schemaless_reader(buffer, writer, reader)


def _pairs() -> list[tuple[SchemaVersion, SchemaVersion]]:
    store = load_store()
    return [(old, store.current(name)) for name in store.names for old in store.versions(name)]


@pytest.mark.parametrize(("old", "current"), _pairs(), ids=lambda v: v.file_name)
def test_current_schema_reads_every_kept_version(old: SchemaVersion, current: SchemaVersion) -> None:
    assert_backward_compatible(old.raw, current.raw)


def _evolve(raw: dict[str, Any], change: str) -> dict[str, Any]:
    new = copy.deepcopy(raw)
    fields = new["fields"]
    match change:
        case "add_field_with_default":
            fields.append({"name": "added_later", "type": ["null", "string"], "default": None, "doc": "x"})
        case "add_required_field":
            fields.append({"name": "added_later", "type": "string", "doc": "x"})
        case "change_type":
            next(f for f in fields if f["name"] == "reason")["type"] = "long"
        case "rename_field":
            next(f for f in fields if f["name"] == "error")["name"] = "message"
        case "drop_enum_symbol_without_default":
            stage = next(f for f in fields if f["name"] == "stage")["type"]
            stage["symbols"] = ["gateway", "processor"]
            del stage["default"]
    return new


DEADLETTER = load_store().current("pinwheel.DeadLetter").raw


def test_compatible_change_passes() -> None:
    assert_backward_compatible(DEADLETTER, _evolve(DEADLETTER, "add_field_with_default"))


@pytest.mark.parametrize(
    "change", ["add_required_field", "change_type", "rename_field", "drop_enum_symbol_without_default"]
)
def test_incompatible_change_fails(change: str) -> None:
    with pytest.raises(SchemaResolutionError):
        assert_backward_compatible(DEADLETTER, _evolve(DEADLETTER, change))
