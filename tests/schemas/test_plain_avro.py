"""`schemas.plain_avro` writes fastavro's bytes for the values it takes, and hands every other datum to the
general writer, whose bytes or refusal then stand.

fastavro is the reference (as in test_encoder.py). The general writer is cavro's where it is installed (the
codec's default), else fastavro's: either way a datum the fast path declines must come out exactly as the
general writer alone writes it, refusals included.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import _READERS, CAVRO, FASTAVRO, InvalidValue, encoders
from schemas.codec import _encoder as general_encoder
from schemas.plain_avro import PlainReader, PlainWriter, plain_reader, plain_writer

_ENUM = {"type": "enum", "name": "Kind", "symbols": ["first", "second", "third"]}
_NESTED = {
    "type": "record",
    "name": "Nested",
    "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": ["null", "long"]}],
}
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Run",
    "namespace": "test",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {"name": "l", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "b", "type": "boolean"},
        {"name": "z", "type": "null"},
        {"name": "e", "type": _ENUM},
        {"name": "ns", "type": ["null", "string"]},
        {"name": "sn", "type": ["string", "null"]},
        {"name": "nl", "type": ["null", {"type": "long"}]},
        {"name": "ne", "type": ["null", "Kind"]},  # a reference to the enum above
        {"name": "r", "type": _NESTED},
        {"name": "nr", "type": ["null", "test.Nested"]},
        {"name": "a", "type": {"type": "array", "items": "string"}},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "d", "type": ["null", {"type": "int", "logicalType": "date"}]},
        {"name": "ar", "type": {"type": "array", "items": "test.Nested"}},
    ],
}
LONG = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text()  # surrogates included: not UTF-8 encodable
SYMBOLS = st.sampled_from(_ENUM["symbols"])
NESTED = st.fixed_dictionaries({"id": TEXT, "n": st.none() | LONG})


class Symbol(StrEnum):
    SECOND = "second"


class Small(IntEnum):
    ONE = 1


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


VALID = st.fixed_dictionaries(
    {
        "s": TEXT.filter(_encodable),
        "y": st.binary(max_size=20),
        "l": LONG,
        "i": st.integers(-(2**31), 2**31 - 1),
        "b": st.booleans(),
        "z": st.none(),
        "e": SYMBOLS,
        "ns": st.none() | TEXT.filter(_encodable),
        "sn": st.none() | TEXT.filter(_encodable),
        "nl": st.none() | LONG,
        "ne": st.none() | SYMBOLS,
        "r": st.fixed_dictionaries({"id": TEXT.filter(_encodable), "n": st.none() | LONG}),
        "nr": st.none() | st.fixed_dictionaries({"id": TEXT.filter(_encodable), "n": st.none() | LONG}),
        "a": st.lists(TEXT.filter(_encodable), max_size=5),
        "m": st.dictionaries(TEXT.filter(_encodable), st.none() | LONG, max_size=5),
        "d": st.none() | st.dates(),
        "ar": st.lists(st.fixed_dictionaries({"id": TEXT.filter(_encodable), "n": st.none() | LONG}), max_size=3),
    }
)
ANY_VALUE = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | TEXT
    | SYMBOLS
    | st.binary(max_size=4)
    | st.just(Symbol.SECOND)
    | st.just(Small.ONE)
    | NESTED
    | NESTED.map(OrderedDict)
    | st.dates()
    | st.datetimes()
    | st.lists(TEXT | LONG, max_size=3)
    | st.lists(TEXT, max_size=3).map(tuple)
    | st.dictionaries(TEXT, st.none() | LONG | TEXT, max_size=3)
    | st.lists(NESTED, max_size=2)
)
ANY = st.dictionaries(st.sampled_from([field["name"] for field in SCHEMA["fields"]]), ANY_VALUE)


def _fastavro(datum: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(json.loads(json.dumps(SCHEMA))), datum)
    return out.getvalue()


def _declined(datum: Mapping[str, Any]) -> bytes:
    raise AssertionError("the fast path handed a datum of exactly its types to the general writer")


def _unread(data: bytes) -> Any:
    raise AssertionError("the fast path handed a body fastavro wrote to the general reader")


def _general(kind: str) -> Any:
    if kind not in encoders():
        pytest.skip(f"{kind} is not installed here")
    text = json.dumps(SCHEMA)
    return general_encoder(kind, text, json.loads(text))


@settings(max_examples=300)
@given(VALID, st.sampled_from(list(Symbol)))
def test_it_writes_fastavros_bytes_for_the_values_it_takes(datum: dict[str, Any], symbol: Symbol) -> None:
    writer = plain_writer(SCHEMA, _declined)
    assert isinstance(writer, PlainWriter)
    assert writer(datum) == _fastavro(datum)
    with_enum = {**datum, "e": symbol, "s": symbol}  # str subclasses are text
    assert writer(with_enum) == _fastavro(with_enum)


@pytest.mark.parametrize("kind", [CAVRO, FASTAVRO])
@settings(max_examples=400)
@given(datum=ANY)
def test_any_other_datum_comes_out_as_the_general_writer_writes_it(kind: str, datum: dict[str, Any]) -> None:
    """Wrong types, missing fields, ints out of range, unencodable text, other mappings: the same bytes, or the
    same refusal, as the general writer alone."""
    general = _general(kind)
    try:
        expected: bytes | type[Exception] = general(datum)
    except InvalidValue:
        expected = InvalidValue
    try:
        got: bytes | type[Exception] = plain_writer(SCHEMA, general)(datum)
    except InvalidValue:
        got = InvalidValue
    assert got == expected


@pytest.mark.parametrize(
    "field",
    [
        {"name": "f", "type": "double"},
        {"name": "x", "type": {"type": "fixed", "name": "Sixteen", "size": 16}},
        {"name": "u", "type": ["null", "long", "string"]},
        {"name": "au", "type": {"type": "array", "items": ["null", "long", "string"]}},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "w", "type": "test.Unknown"},
    ],
)
def test_a_schema_with_another_type_is_the_general_writers_alone(field: dict[str, Any]) -> None:
    general = _general(FASTAVRO)
    schema = {**SCHEMA, "fields": [*SCHEMA["fields"], field]}
    assert plain_writer(schema, general) is general
    assert plain_reader(schema, _unread) is _unread


@settings(max_examples=300)
@given(VALID, st.binary(max_size=8))
def test_it_reads_back_what_fastavro_wrote_leaving_what_follows_unread(datum: dict[str, Any], after: bytes) -> None:
    reader = plain_reader(SCHEMA, _unread)
    assert isinstance(reader, PlainReader)
    assert reader(_fastavro(datum) + after) == datum


def _outcome(read: Any, data: bytes) -> Any:
    try:
        return ("read", read(data))
    except Exception:  # the codec turns any reader's exception into a DecodeError
        return ("error",)


@pytest.mark.parametrize("kind", [CAVRO, FASTAVRO])
@settings(max_examples=400)
@given(datum=VALID, cut=st.integers(0, 200), flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255))))
def test_any_other_body_comes_out_as_the_general_reader_reads_it(
    kind: str, datum: dict[str, Any], cut: int, flips: list[tuple[int, int]]
) -> None:
    """Bodies cut short or with bytes changed: the same datum, or an error, as the general reader alone."""
    if kind not in encoders():
        pytest.skip(f"{kind} is not installed here")
    data = bytearray(_fastavro(datum)[:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    general = _READERS[kind](json.dumps(SCHEMA))
    assert _outcome(plain_reader(SCHEMA, general), bytes(data)) == _outcome(general, bytes(data))
