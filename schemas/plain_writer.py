"""Avro bodies of records of simple fields, written by compiled code (setup.py) before any general writer.

`Codec` writes the processors' records in parts (`plain_fields_encoder`, `plain_type_encoder`): runs of a few
fields, most of them strings, longs, enums and nullable ones. cavro spends about 1,400 instructions on a string
and more on a union's branch, which is most of a run's cost. `plain_writer` writes a run itself when every field
of the schema is a string, an int or long, a boolean, null, an enum, a record of those, or a union of null and
one of them (a plain schema: no logical types). It writes a value only when its Python type is exactly one of
those it handles: `str` for a string or an enum, `int` for an int or long (within range), `bool`, `None`, and a
`dict` for a record, with every field present.

It hands the whole datum to the general writer (cavro's or fastavro's, `schemas.codec`) when it meets any other
value: a float for a long, a missing field, an int out of range, text that cannot be encoded as UTF-8, a mapping
that is not a dict. The general writer writes that datum or refuses it. The bytes are the same either way: an
Avro body is each field's bytes in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

Encoder = Callable[[Mapping[str, Any]], bytes]

_LONG: Final = (-(2**63), 2**63 - 1)
_INT: Final = (-(2**31), 2**31 - 1)
_MISSING: Final = object()


def avro_long(value: int) -> bytes:
    """An Avro `long` (zig-zag varint) of a value within its range: block counts, lengths, longs and ints."""
    n = (value << 1) ^ (value >> 63)
    if n <= 0x7F:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ONE_BYTE: Final = [bytes([n]) for n in range(0x80)]


def avro_string(value: str) -> bytes:
    """An Avro `string`: its UTF-8 length, then its UTF-8 bytes (raises UnicodeEncodeError for a lone surrogate)."""
    data = value.encode()
    return avro_long(len(data)) + data


class _Field:
    """Writes one value into `out`; returns False, having written nothing that counts, for a value it does not
    write (the general writer then takes the whole datum)."""

    def write(self, value: object, out: list[bytes]) -> bool:
        raise NotImplementedError


class _Null(_Field):
    def write(self, value: object, out: list[bytes]) -> bool:
        return value is None


class _Boolean(_Field):
    def write(self, value: object, out: list[bytes]) -> bool:
        if value is True:
            out.append(b"\x01")
        elif value is False:
            out.append(b"\x00")
        else:
            return False
        return True


class _Integer(_Field):
    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def write(self, value: object, out: list[bytes]) -> bool:
        if type(value) is not int or not self.low <= value <= self.high:
            return False  # a bool, an IntEnum, a float, out of range: the general writer's to judge
        out.append(avro_long(value))
        return True


class _String(_Field):
    def write(self, value: object, out: list[bytes]) -> bool:
        if not isinstance(value, str):
            return False
        try:
            out.append(avro_string(value))
        except UnicodeEncodeError:
            return False
        return True


class _Enum(_Field):
    def __init__(self, symbols: list[str]) -> None:
        self.symbols = {symbol: avro_long(index) for index, symbol in enumerate(symbols)}

    def write(self, value: object, out: list[bytes]) -> bool:
        if not isinstance(value, str):
            return False
        data = self.symbols.get(value)
        if data is None:
            return False
        out.append(data)
        return True


class _Nullable(_Field):
    """A union of null and one other type, in either order."""

    def __init__(self, other: _Field, null_first: bool) -> None:
        self.other = other
        self.null = b"\x00" if null_first else b"\x02"
        self.branch = b"\x02" if null_first else b"\x00"

    def write(self, value: object, out: list[bytes]) -> bool:
        if value is None:
            out.append(self.null)
            return True
        out.append(self.branch)
        return self.other.write(value, out)


class _Record(_Field):
    def __init__(self, names: list[str], fields: list[_Field]) -> None:
        self.names = names
        self.fields = fields

    def write(self, value: object, out: list[bytes]) -> bool:
        if type(value) is not dict:
            return False
        names, fields = self.names, self.fields
        for index in range(len(names)):
            item = value.get(names[index], _MISSING)
            if item is _MISSING or not fields[index].write(item, out):
                return False  # a missing field may have a default: the general writer's to judge
        return True


class PlainWriter:
    """An `Encoder`: a record's body written by the fields above, else by `general`."""

    def __init__(self, record: _Field, general: Encoder) -> None:
        self.record = record
        self.general = general

    def __call__(self, datum: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        if self.record.write(datum, out):
            return b"".join(out)
        return self.general(datum)


_PRIMITIVES: Final[dict[str, _Field]] = {
    "null": _Null(),
    "boolean": _Boolean(),
    "int": _Integer(*_INT),
    "long": _Integer(*_LONG),
    "string": _String(),
}


def plain_writer(schema: Mapping[str, Any], general: Encoder) -> Encoder:
    """The encoder of records of `schema` (a plain record schema, each named type defined before its references):
    a `PlainWriter`, or `general` itself when a field is of a type it does not write."""
    record = _field(schema, {})
    if not isinstance(record, _Record):
        return general
    return PlainWriter(record, general)


def _field(node: object, named: dict[str, _Field], namespace: str = "") -> _Field | None:
    """The writer of a schema node, or None for a type not written here (bytes, float, double, fixed, map, array,
    a union of anything but null and one type, a logical type's annotation). `named`: the named types defined so
    far, by their full names; `namespace`: the enclosing one, in which a short name is looked up first."""
    if isinstance(node, str):
        primitive = _PRIMITIVES.get(node)
        if primitive is not None:
            return primitive
        if namespace and "." not in node:
            return named.get(f"{namespace}.{node}") or named.get(node)
        return named.get(node)
    if isinstance(node, list):
        if len(node) != 2 or "null" not in node or node[0] == node[1]:
            return None
        other = _field(node[1] if node[0] == "null" else node[0], named, namespace)
        return None if other is None or isinstance(other, _Null) else _Nullable(other, node[0] == "null")
    if not isinstance(node, dict) or "logicalType" in node:
        return None
    kind = node.get("type")
    if kind not in ("enum", "record"):
        return _field(kind, named, namespace) if isinstance(kind, str) else None
    name = node.get("name")
    if not isinstance(name, str):
        return None
    own = node.get("namespace")
    space = name.rpartition(".")[0] if "." in name else own if isinstance(own, str) else namespace
    field: _Field
    if kind == "enum":
        field = _Enum(list(node["symbols"]))
    else:
        writers = [_field(item["type"], named, space) for item in node["fields"]]
        fields = [writer for writer in writers if writer is not None]
        if len(fields) != len(writers):
            return None
        field = _Record([item["name"] for item in node["fields"]], fields)
    short = name.rpartition(".")[2]
    named[f"{space}.{short}" if space else short] = field
    return field
