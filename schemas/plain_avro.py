"""Avro bodies of records of simple fields, written and read by compiled code (setup.py) before any general codec.

A record is "simple" when every field is a string, bytes, an int or long, a boolean, null, an enum, a date (an
int annotated `date`), a record, array or map of those, or a union of null and one of them, in a plain schema
(no other logical type). cavro spends about 1,400 instructions on a string it writes and more on a union's
branch: the processors' pipeline runs about a fifth fewer instructions per event with these (docs/benchmarks.md).

- `plain_writer`: `Codec` writes the processors' records in parts (`plain_fields_encoder`, `plain_type_encoder`):
  runs of a few such fields. It writes a value only when its Python type is exactly one it handles (`str` for a
  string, a map's key or an enum, `bytes`, `int` within range, `bool`, `None`, `date`, a `list` or `tuple` for an
  array, a `dict` for a map, and for a record with every field). Any other value (a float for a long, a missing
  field, an int out of range, text that cannot be encoded as UTF-8, a datetime for a date, a mapping that is not
  a dict) hands the whole datum to the general writer (cavro's or fastavro's), whose bytes or refusal stand.
- `plain_reader`: `Codec.decode_fields` reads the envelope of a family record, a prefix of such fields. Bytes
  that do not read cleanly (cut short, an overlong varint, a union branch or enum index out of range, text that
  is not UTF-8, a boolean byte other than 0 or 1, a block carrying its size, a date beyond year 9999) are handed
  whole to the general reader, whose datum or error stands.

The bytes and the datums are the same either way: an Avro body is each field's bytes in order, an array or a
map one block (its count, its items, then 0) as both general writers write it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Final

from schemas.cavro_glue import Encoder, Reader

_MISSING: Final = object()


def avro_long(value: int) -> bytes:
    """An Avro `long` (zig-zag varint) of a value within its range: block counts, lengths, longs and ints."""
    n = (value << 1) ^ (value >> 63)
    if n <= 0x7F:
        return _ONE_BYTE[n]
    # The varint's bytes gathered in one int, least significant first: a third of the time of bytearray appends.
    varint = 0
    shift = 0
    while n > 0x7F:
        varint |= ((n & 0x7F) | 0x80) << shift
        n >>= 7
        shift += 8
    varint |= n << shift
    return varint.to_bytes((shift >> 3) + 1, "little")


_ONE_BYTE: Final = [bytes([n]) for n in range(0x80)]


def avro_string(value: str) -> bytes:
    """An Avro `string`: its UTF-8 length, then its UTF-8 bytes (raises UnicodeEncodeError for a lone surrogate)."""
    data = value.encode()
    return avro_long(len(data)) + data


class _Irregular(Exception):
    """Bytes the fast path does not read: the general reader reads them, or says why it cannot."""


class _Cursor:
    """A body being read, and how far."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]  # IndexError when cut short
        self.pos += 1
        return value

    def long(self) -> int:
        data, pos = self.data, self.pos
        b = data[pos]
        pos += 1
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            if shift > 63:
                raise _Irregular("a varint longer than a long")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
        if n >> 64:
            raise _Irregular("a varint beyond a long")
        self.pos = pos
        return (n >> 1) ^ -(n & 1)

    def blob(self) -> bytes:
        size = self.long()
        start = self.pos
        end = start + size
        if size < 0 or end > len(self.data):
            raise _Irregular("a length beyond the body")
        self.pos = end
        return self.data[start:end]


class _Field:
    """One type's value: `write` writes it into `out` (False, having written nothing that counts, for a value it
    does not write: the general writer then takes the whole datum); `read` reads it (raises for bytes it does not
    read: the general reader then takes the whole body)."""

    def write(self, value: object, out: list[bytes]) -> bool:
        raise NotImplementedError

    def read(self, cursor: _Cursor) -> object:
        raise NotImplementedError


class _Null(_Field):
    def write(self, value: object, out: list[bytes]) -> bool:
        return value is None

    def read(self, cursor: _Cursor) -> object:
        return None


class _Boolean(_Field):
    def write(self, value: object, out: list[bytes]) -> bool:
        if value is True:
            out.append(b"\x01")
        elif value is False:
            out.append(b"\x00")
        else:
            return False
        return True

    def read(self, cursor: _Cursor) -> object:
        value = cursor.byte()
        if value > 1:
            raise _Irregular("a boolean byte other than 0 or 1")
        return value == 1


class _Integer(_Field):
    """An int (`bits` 31) or a long (63)."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def write(self, value: object, out: list[bytes]) -> bool:
        if type(value) is not int:
            return False  # a bool, an IntEnum, a float: the general writer's to judge
        top = value >> self.bits
        if top != 0 and top != -1:
            return False  # out of range: refused by the general writer
        out.append(avro_long(value))
        return True

    def read(self, cursor: _Cursor) -> object:
        value = cursor.long()
        top = value >> self.bits
        if top != 0 and top != -1:
            raise _Irregular("an int beyond its range")
        return value


class _String(_Field):
    def write(self, value: object, out: list[bytes]) -> bool:
        if not isinstance(value, str):
            return False
        try:
            out.append(avro_string(value))
        except UnicodeEncodeError:
            return False
        return True

    def read(self, cursor: _Cursor) -> object:
        return cursor.blob().decode()  # UnicodeDecodeError: not UTF-8


class _Bytes(_Field):
    def write(self, value: object, out: list[bytes]) -> bool:
        if type(value) is not bytes:
            return False
        out.append(avro_long(len(value)))
        out.append(value)
        return True

    def read(self, cursor: _Cursor) -> object:
        return cursor.blob()


class _Enum(_Field):
    def __init__(self, symbols: list[str]) -> None:
        self.names = symbols
        self.symbols = {symbol: avro_long(index) for index, symbol in enumerate(symbols)}

    def write(self, value: object, out: list[bytes]) -> bool:
        if not isinstance(value, str):
            return False
        data = self.symbols.get(value)
        if data is None:
            return False
        out.append(data)
        return True

    def read(self, cursor: _Cursor) -> object:
        index = cursor.long()
        if not 0 <= index < len(self.names):
            raise _Irregular("an enum index out of range")
        return self.names[index]


class _Date(_Field):
    """An int annotated `date`: days since 1970-01-01, from and to a `date` (not a datetime)."""

    def write(self, value: object, out: list[bytes]) -> bool:
        if type(value) is not date:
            return False  # a datetime, the days as an int: the general writer's to judge
        out.append(avro_long(value.toordinal() - _EPOCH_ORDINAL))
        return True

    def read(self, cursor: _Cursor) -> object:
        return date.fromordinal(cursor.long() + _EPOCH_ORDINAL)  # ValueError beyond year 1 to 9999


class _Array(_Field):
    """Written in one block (its count, its items, then 0), as both general writers do; read in any blocks."""

    def __init__(self, items: _Field) -> None:
        self.items = items

    def write(self, value: object, out: list[bytes]) -> bool:
        if type(value) is not list and type(value) is not tuple:
            return False
        assert isinstance(value, list | tuple)
        if not value:
            out.append(b"\x00")
            return True
        out.append(avro_long(len(value)))
        items = self.items
        for item in value:
            if not items.write(item, out):
                return False
        out.append(b"\x00")
        return True

    def read(self, cursor: _Cursor) -> object:
        items = self.items
        values: list[object] = []
        count = cursor.long()
        while count:
            if count < 0:
                raise _Irregular("a block with its size")  # the general reader's to read
            for _ in range(count):
                values.append(items.read(cursor))
            count = cursor.long()
        return values


class _Map(_Field):
    """Written as an array of (string key, value) entries is."""

    def __init__(self, values: _Field) -> None:
        self.values = values

    def write(self, value: object, out: list[bytes]) -> bool:
        if type(value) is not dict:
            return False
        assert isinstance(value, dict)
        if not value:
            out.append(b"\x00")
            return True
        out.append(avro_long(len(value)))
        values = self.values
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            try:
                out.append(avro_string(key))
            except UnicodeEncodeError:
                return False
            if not values.write(item, out):
                return False
        out.append(b"\x00")
        return True

    def read(self, cursor: _Cursor) -> object:
        values = self.values
        entries: dict[str, object] = {}
        count = cursor.long()
        while count:
            if count < 0:
                raise _Irregular("a block with its size")
            for _ in range(count):
                key = cursor.blob().decode()
                entries[key] = values.read(cursor)
            count = cursor.long()
        return entries


class _Nullable(_Field):
    """A union of null and one other type, in either order."""

    def __init__(self, other: _Field, null_first: bool) -> None:
        self.other = other
        self.null_first = null_first
        self.null = b"\x00" if null_first else b"\x02"
        self.branch = b"\x02" if null_first else b"\x00"

    def write(self, value: object, out: list[bytes]) -> bool:
        if value is None:
            out.append(self.null)
            return True
        out.append(self.branch)
        return self.other.write(value, out)

    def read(self, cursor: _Cursor) -> object:
        branch = cursor.long()
        if branch == (0 if self.null_first else 1):
            return None
        if branch == (1 if self.null_first else 0):
            return self.other.read(cursor)
        raise _Irregular("a union branch out of range")


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

    def read(self, cursor: _Cursor) -> object:
        names, fields = self.names, self.fields
        datum: dict[str, object] = {}
        for index in range(len(names)):
            datum[names[index]] = fields[index].read(cursor)
        return datum


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
    "int": _Integer(31),
    "long": _Integer(63),
    "string": _String(),
    "bytes": _Bytes(),
}
_DATE: Final = _Date()
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


class PlainReader:
    """A `Reader`: a record read by the fields above (bytes after it left unread), else by `general`."""

    def __init__(self, record: _Field, general: Reader) -> None:
        self.record = record
        self.general = general

    def __call__(self, data: bytes) -> Any:
        try:
            return self.record.read(_Cursor(data))
        except Exception:  # cut short, not UTF-8, out of range...: the general reader's datum or error stands
            return self.general(data)


def plain_reader(schema: Mapping[str, Any], general: Reader) -> Reader:
    """The reader of records of `schema` (as `plain_writer` takes it): a `PlainReader`, or `general` itself."""
    record = _field(schema, {})
    if not isinstance(record, _Record):
        return general
    return PlainReader(record, general)


def plain_writer(schema: Mapping[str, Any], general: Encoder) -> Encoder:
    """The encoder of records of `schema` (a plain record schema, each named type defined before its references):
    a `PlainWriter`, or `general` itself when a field is of a type it does not write."""
    record = _field(schema, {})
    if not isinstance(record, _Record):
        return general
    return PlainWriter(record, general)


def _field(node: object, named: dict[str, _Field], namespace: str = "") -> _Field | None:
    """The writer of a schema node, or None for a type not written here (float, double, fixed, a union of
    anything but null and one type, a logical type other than `date`). `named`: the named types defined so
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
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if "logicalType" in node:
        return _DATE if node["logicalType"] == "date" and kind == "int" else None
    if kind == "array" or kind == "map":
        inner = _field(node["items" if kind == "array" else "values"], named, namespace)
        return None if inner is None else _Array(inner) if kind == "array" else _Map(inner)
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
