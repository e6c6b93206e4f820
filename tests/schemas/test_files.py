"""The .avsc files: layout, docs, shared named types, and agreement with the pydantic models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from schemas import enums, models
from schemas.datum import RECORD_MODELS
from schemas.store import TOPIC_RECORDS, load_store

STORE = load_store()


def named_types(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, list):
        for branch in schema:
            yield from named_types(branch)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            yield schema
            for field in schema.get("fields", []):
                yield from named_types(field["type"])
        elif kind == "array":
            yield from named_types(schema["items"])
        elif kind == "map":
            yield from named_types(schema["values"])
        else:
            yield from named_types(kind)


def all_named() -> Iterator[tuple[str, dict[str, Any]]]:
    for version in STORE.all_versions():
        for named in named_types(version.raw):
            yield version.file_name, named


def test_layout() -> None:
    assert set(TOPIC_RECORDS.values()) == set(STORE.names)
    for version in STORE.all_versions():
        assert version.raw["namespace"] == "pinwheel"
        assert version.file_name == f"{version.fullname.split('.')[-1]}.v{version.version}.avsc"
    assert len({v.fingerprint for v in STORE.all_versions()}) == len(STORE.all_versions())


def test_every_record_and_field_is_documented() -> None:
    for file_name, named in all_named():
        assert named.get("doc"), f"{file_name}: {named['name']} has no doc"
        for field in named.get("fields", []):
            assert field.get("doc"), f"{file_name}: {named['name']}.{field['name']} has no doc"


def expand(schema: Any, table: dict[str, Any]) -> Any:
    """The schema with every by-name reference replaced by its definition (within one file)."""
    if isinstance(schema, str):
        return expand(table[schema], table) if schema in table else schema
    if isinstance(schema, list):
        return [expand(branch, table) for branch in schema]
    out = {key: value for key, value in schema.items() if key != "namespace"}  # all are "pinwheel"
    if "fields" in out:
        out["fields"] = [dict(field, type=expand(field["type"], table)) for field in out["fields"]]
    for key in ("items", "values"):
        if key in out:
            out[key] = expand(out[key], table)
    if isinstance(out["type"], dict | list):
        out["type"] = expand(out["type"], table)
    return out


def test_shared_named_types_are_identical_across_current_files() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for name in STORE.names:
        version = STORE.current(name)
        table = {named["name"]: named for named in named_types(version.raw)}
        for type_name, definition in table.items():
            text = json.dumps(expand(definition, table), sort_keys=True)
            first_file, first_text = seen.setdefault(type_name, (version.file_name, text))
            assert text == first_text, f"{type_name} differs between {first_file} and {version.file_name}"


def test_enums_match_the_open_enums() -> None:
    by_name = {named["name"]: named for _, named in all_named() if named["type"] == "enum"}
    for cls in (
        enums.Outcome,
        enums.MonitoringStatus,
        enums.SyncStatus,
        enums.PlatformType,
        enums.PlatformAction,
    ):
        avro = by_name[cls.__name__]
        assert avro["symbols"] == [member.value for member in cls]
        assert avro["default"] == "unknown"


def _field_names(named: dict[str, Any]) -> set[str]:
    return {field["name"] for field in named["fields"]}


@pytest.mark.parametrize("fullname", sorted(RECORD_MODELS))
def test_payload_records_match_models(fullname: str) -> None:
    records = {f"pinwheel.{n['name']}": n for _, n in all_named() if n["type"] == "record"}
    model = RECORD_MODELS[fullname]
    assert _field_names(records[fullname]) == set(model.model_fields)
    for name, field in model.model_fields.items():
        avro_field = next(f for f in records[fullname]["fields"] if f["name"] == name)
        assert ("default" in avro_field) == (not field.is_required()), f"{fullname}.{name}"
        if field.default is None and not field.is_required():
            assert avro_field["type"][0] == "null", f"{fullname}.{name}"


@pytest.mark.parametrize(
    "model",
    [
        models.AdditionalPlatform,
        models.ItemRef,
        models.JobParams,
        models.DirectDepositSwitchParams,
        models.PaystubsParams,
        models.ShiftsParams,
    ],
)
def test_nested_records_match_models(model: type[models.PinwheelModel]) -> None:
    records = {n["name"]: n for _, n in all_named() if n["type"] == "record"}
    assert _field_names(records[model.__name__]) == set(model.model_fields) | {"extra_json"}
