"""Avro codec shared by the gateway and the processors.

Two wire formats, told apart by the first byte so either one always decodes:
- `avro-single-object` (default): 0xC3 0x01, the 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema, then the Avro binary body; the fingerprint is resolved against every version shipped
  in `schemas/avro/`.
- `confluent-avro` (with a registry): 0x00, the 4-byte big-endian registry schema id, then the body;
  schemas are registered under `<topic>-value`.
Schemas are parsed once; reads resolve the writer schema against the topic's current schema.

With a registry, encode and decode never do I/O: ids are resolved ahead, asynchronously, by `prepare`
(our writer schemas, at start) and `resolve` (the writer ids of records about to be decoded); a record
whose id is not resolved yet raises `SchemaNotResolved`. `recheck` re-registers our subjects when the
registry lost them (a registry restarted on empty storage).

The encoder is cavro when it is installed (the `speed` extra: a Cython writer, about 2x fastavro's on our
records), fastavro's writer otherwise: cavro has no wheel for every Python we support. Both write the same
bytes and refuse the same values (tests/schemas/test_encoder.py runs its tests with each).
`decode_fields` (the processors' read of a family record's envelope) and `decode_plain` (`decode` with the values
`encode_plain` takes, for records of the current schema) use a reader of the same kind, compiled once per
schema; `decode` is fastavro's. The parts of records written in parts (`plain_fields_encoder`,
`plain_type_encoder`) and the envelope `decode_fields` reads go first through `schemas/plain_avro.py`, compiled,
which writes and reads records of simple fields itself and hands anything else to that encoder or reader.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast
from uuid import UUID

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import expand_schema

from schemas.cavro_glue import REFUSALS, Encoder, InvalidValue, Reader, cavro_factory, refused_value
from schemas.confluent import RegistryClient, RegistryError, RegistryUnavailable, SchemaNotResolved
from schemas.plain_avro import avro_long, avro_string, plain_reader, plain_writer
from schemas.settings import SchemaSettings
from schemas.store import TOPIC_RECORDS, SchemaStore, crc64_fingerprint, load_store, parse

__all__ = [
    "CONFLUENT",
    "SINGLE_OBJECT",
    "Codec",
    "DecodeError",
    "InvalidValue",
    "RegistryError",
    "SchemaNotResolved",
    "SchemaSettings",
    "avro_long",
    "avro_string",
    "build_codec",
    "encoders",
]

log = logging.getLogger(__name__)

SINGLE_OBJECT = "avro-single-object"
CONFLUENT = "confluent-avro"
_SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_CONFLUENT_MAGIC = 0


class DecodeError(ValueError):
    """Bytes that are not a record of ours (unknown format, unknown schema, wrong topic, truncated)."""


CAVRO: Final = "cavro"
FASTAVRO: Final = "fastavro"


def _fastavro_encoder(text: str, parsed: dict[str, Any]) -> Encoder:
    """fastavro's writer, refusing as cavro's does (`refused_value`)."""
    name = parsed.get("name", "record")

    def encode(datum: Mapping[str, Any]) -> bytes:
        out = io.BytesIO()
        try:
            schemaless_writer(out, parsed, datum)
            return out.getvalue()
        except REFUSALS as exc:
            refused = type(exc).__name__
        raise refused_value(name, refused)  # outside the handler: the writer's exception is not its context

    return encode


def _fastavro_reader(text: str) -> Reader:
    parsed = parse(json.loads(text))

    def read(body: bytes) -> Any:
        return schemaless_reader(io.BytesIO(body), parsed, None)

    return read


_FACTORIES: Final[dict[str, Callable[[str, dict[str, Any]], Encoder]]] = {FASTAVRO: _fastavro_encoder}
_READERS: Final[dict[str, Callable[[str], Reader]]] = {FASTAVRO: _fastavro_reader}
if (_cavro := cavro_factory()) is not None:
    _FACTORIES[CAVRO], _READERS[CAVRO] = _cavro


def encoders() -> tuple[str, ...]:
    """The encoders installed here, the default (the fastest) first: ("cavro", "fastavro") or ("fastavro",)."""
    return tuple(sorted(_FACTORIES, key=lambda kind: kind != CAVRO))


_BUILT: dict[tuple[str, str], Encoder] = {}

# The logical types whose Avro value a datum can carry as it is: a uuid as its text, a timestamp-micros as its
# int. Without them the encoder calls no logical-type code (cavro calls back into Python for each uuid).
_PLAIN_LOGICAL_TYPES: Final = frozenset({"uuid", "timestamp-micros"})


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


def _plain_value(value: Any) -> Any:
    """A top-level value as the plain readers give it: a UUID as its text, an aware datetime (what fastavro reads
    a timestamp-micros as) as its epoch microseconds; any other value as it is."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // _ONE_US
    if isinstance(value, UUID):
        return str(value)
    return value


def _without_logical_types(node: Any) -> Any:
    """A schema (JSON value) whose uuid and timestamp-micros types are their underlying string and long: it
    writes the same bytes for a datum that carries these values as text and ints (and refuses other values)."""
    if isinstance(node, dict):
        return {
            key: _without_logical_types(value)
            for key, value in node.items()
            if not (key == "logicalType" and value in _PLAIN_LOGICAL_TYPES)
        }
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    return node


_NAMED: Final = ("record", "enum", "fixed", "error")  # a tuple: `in` compares a dict type without hashing it


def _defined_once(node: Any, defined: set[str]) -> Any:
    """An expanded schema (every named type written out, under its full name) with each named type defined
    where it first occurs and referred to by name after: what a parser takes."""
    if isinstance(node, dict):
        if node.get("type") in _NAMED and isinstance(node.get("name"), str):
            if node["name"] in defined:
                return node["name"]
            defined.add(node["name"])
        return {key: _defined_once(value, defined) for key, value in node.items()}
    if isinstance(node, list):
        return [_defined_once(item, defined) for item in node]
    return node


def _named_type(node: Any, full_name: str) -> dict[str, Any] | None:
    """The first definition of `full_name` in an expanded schema."""
    if isinstance(node, dict):
        if node.get("type") in _NAMED and node.get("name") == full_name:
            return node
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            found = _named_type(item, full_name)
            if found is not None:
                return found
    return None


def _has_union_of_records(node: Any) -> bool:
    """Whether an expanded schema has a union of more than one record."""
    if isinstance(node, list):
        records = [t for t in node if isinstance(t, dict) and t.get("type") in ("record", "error")]
        return len(records) > 1 or any(_has_union_of_records(t) for t in node)
    if isinstance(node, dict):
        return any(_has_union_of_records(v) for v in node.values())
    return False


def _encoder(kind: str, schema_text: str, parsed: dict[str, Any]) -> Encoder:
    """One encoder per schema and kind, however many codecs write it (built once: cavro compiles the schema)."""
    built = _BUILT.get((kind, schema_text))
    if built is None:
        built = _BUILT[(kind, schema_text)] = _FACTORIES[kind](schema_text, parsed)
    return built


@dataclass(frozen=True, slots=True)
class _Writer:
    schema: dict[str, Any]
    prefix: bytes
    encoder: Encoder


class Codec:
    def __init__(
        self,
        store: SchemaStore | None = None,
        *,
        registry: RegistryClient | None = None,
        topics: Mapping[str, str] | None = None,
        encoder: str | None = None,
    ):
        """`topics` adds topic → record full name pairs (e.g. changelogs) to the built-in table; `encoder` is
        one of `encoders()` (default: the first, cavro when installed)."""
        if encoder is not None and encoder not in _FACTORIES:
            raise ValueError(f"encoder {encoder!r} is not installed here (installed: {', '.join(encoders())})")
        self.encoder_kind = encoder or encoders()[0]
        self._store = store or load_store()
        self._registry = registry
        self._topics = {**TOPIC_RECORDS, **(topics or {})}
        self._writers: dict[str, _Writer] = {}
        self._portable: dict[str, _Writer] = {}  # single-object writers, also with a registry (`encode_portable`)
        self._plain: dict[str, tuple[_Writer, _Writer]] = {}  # topic → (its writer, that writer's `encode_plain`)
        self._plain_readers: dict[str, tuple[dict[str, Any], Reader]] = {}  # topic → (its schema, `decode_plain`'s)
        self._parts: dict[
            tuple[str, str, tuple[str, ...]], Encoder
        ] = {}  # `plain_fields_encoder`, `plain_type_encoder`
        self._by_id: dict[int, dict[str, Any]] = {}
        self._projections: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}
        self._prefixes: dict[tuple[str, int, frozenset[str], bool], tuple[dict[str, Any], Reader | None]] = {}
        self._lock = threading.Lock()

    @property
    def content_format(self) -> str:
        return SINGLE_OBJECT if self._registry is None else CONFLUENT

    def record_name(self, topic: str) -> str:
        try:
            return self._topics[topic]
        except KeyError:
            raise KeyError(f"no record schema for topic {topic}") from None

    def reader_schema(self, topic: str) -> dict[str, Any]:
        return self._store.current(self.record_name(topic)).parsed

    def _writer(self, topic: str) -> _Writer:
        writer = self._writers.get(topic)
        if writer is None:
            if self._registry is not None:
                self.record_name(topic)  # an unknown topic is a KeyError, not a registry matter
                raise SchemaNotResolved(f"writer schema of {topic} not registered yet (prepare first)")
            writer = self._writers[topic] = self._single_object_writer(topic)
        return writer

    def _single_object_writer(self, topic: str) -> _Writer:
        writer = self._portable.get(topic)
        if writer is None:
            current = self._store.current(self.record_name(topic))
            prefix = _SINGLE_OBJECT_MAGIC + current.fingerprint
            writer = self._portable[topic] = _Writer(
                current.parsed, prefix, _encoder(self.encoder_kind, current.text, current.parsed)
            )
        return writer

    async def _register(self, topic: str) -> None:
        assert self._registry is not None
        current = self._store.current(self.record_name(topic))
        schema_id = await self._registry.writer_id(f"{topic}-value", current.text)
        with self._lock:
            self._by_id[schema_id] = current.parsed  # our own records decode without a lookup
            prefix = bytes([_CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")
            self._writers[topic] = _Writer(
                current.parsed, prefix, _encoder(self.encoder_kind, current.text, current.parsed)
            )

    async def prepare(self, topics: Iterable[str] | None = None) -> None:
        """Resolve our writer schemas up front (register or look them up), so encode never does I/O.

        Registering, every schema of the catalog is registered, always in catalog order, by every service:
        a registry that assigns ids in creation order (Apicurio, Confluent) then hands out the same ids
        again after losing its storage, whichever service re-registers first, and the records written
        before still decode. Lookup-only, just `topics` are looked up.
        Raises RegistryUnavailable (retry later), SchemaNotRegistered or SchemaRejected (configuration).
        """
        wanted = list(topics) if topics is not None else list(self._topics)
        if self._registry is None:
            for topic in wanted:
                self._writer(topic)
            return
        if self._registry.settings.registry_auto_register:
            wanted = [*TOPIC_RECORDS, *(t for t in wanted if t not in TOPIC_RECORDS)]
        for topic in wanted:
            if topic not in self._writers:
                await self._register(topic)

    async def resolve(self, values: Iterable[bytes | None]) -> None:
        """Fetch the writer schemas of these records that are not cached yet (Confluent format only)."""
        if self._registry is None:
            return
        wanted = {
            int.from_bytes(value[1:5], "big")
            for value in values
            if value is not None and len(value) >= 5 and value[0] == _CONFLUENT_MAGIC
        }
        for schema_id in wanted - self._by_id.keys():
            text = await self._registry.schema_text(schema_id)
            if text is None:
                raise SchemaNotResolved(f"schema id {schema_id} is unknown to the registry (did it lose its storage?)")
            parsed = parse(json.loads(text))
            # Reuse our own parsed object when it is one of ours: the reader then skips resolution.
            known = self._store.by_fingerprint(crc64_fingerprint(parsed))
            with self._lock:
                self._by_id[schema_id] = known.parsed if known is not None else parsed

    async def decode_resolved(self, topic: str, data: bytes) -> dict[str, Any]:
        """`decode`, fetching the writer schema first when needed (readers outside the hot path)."""
        await self.resolve([data])
        return self.decode(topic, data)

    async def recheck(self) -> list[str]:
        """Re-register our subjects the registry no longer has (it lost its storage); returns them.

        Registered again in catalog order (see `prepare`), they get the ids they had, so the records
        written meanwhile still decode; a warning names any id that changed all the same (only a
        registry with durable storage rules that out). Raises RegistryUnavailable while it is down.
        """
        if self._registry is None or not self._writers:
            return []
        present = await self._registry.subjects()
        lost = [topic for topic in self._writers if f"{topic}-value" not in present]
        if lost:
            log.warning("registry lost our subjects; registering them again", extra={"topics": lost})
            before = {topic: writer.prefix for topic, writer in self._writers.items()}
            await self._registry.reset()  # its caches hold the ids of the lost storage
            for topic in before:  # insertion order: the order they were first registered in
                await self._register(topic)
            changed = [topic for topic, prefix in before.items() if self._writers[topic].prefix != prefix]
            if changed:
                log.warning("registry gave new schema ids", extra={"topics": changed})
        return lost

    @property
    def registry(self) -> RegistryClient | None:
        return self._registry

    def encode(self, topic: str, datum: Mapping[str, Any]) -> bytes:
        """`datum` in this codec's format; with a registry, SchemaNotResolved until `prepare` resolved `topic`."""
        return _write(self._writer(topic), datum)

    def encode_plain(self, topic: str, datum: Mapping[str, Any]) -> bytes:
        """`encode` of a datum whose uuids are text and whose timestamp-micros are epoch microseconds (ints): the
        same bytes, written without the logical types' conversions (the processors' datums, processors/wire.py).
        A UUID or a datetime in such a field is refused (InvalidValue), never written differently."""
        return _write(self._plain_writer(topic), datum)

    def _plain_writer(self, topic: str) -> _Writer:
        writer = self._writer(topic)
        plain = self._plain.get(topic)
        if plain is None or plain[0] is not writer:  # built once per writer (a registry's new id makes a new one)
            text = self._plain_text(topic)
            encoder = _encoder(self.encoder_kind, text, parse(json.loads(text)))
            plain = self._plain[topic] = (writer, _Writer(writer.schema, writer.prefix, encoder))
        return plain[1]

    def _plain_text(self, topic: str) -> str:
        """`topic`'s current schema without the logical types the plain datums carry as their Avro values."""
        return json.dumps(_without_logical_types(json.loads(self._store.current(self.record_name(topic)).text)))

    def framed(self, topic: str, body: bytes) -> bytes:
        """The record of `topic` whose Avro body is `body` (written in parts by the encoders below), in this
        codec's format (raises like `encode`)."""
        return self._writer(topic).prefix + body

    def plain_fields_encoder(self, topic: str, names: Sequence[str], record: str | None = None) -> Encoder:
        """The Avro body of consecutive fields `names` of `topic`'s record (its current schema, the one `encode`
        writes), or of the record type `record` (a full name) nested in it, from a datum holding them (others are
        ignored), as `encode_plain` writes them. A record's body is its fields' bodies one after the other: a body
        written in parts is the body written whole."""
        key = (topic, "fields" if record is None else f"fields of {record}", tuple(names))
        encoder = self._parts.get(key)
        if encoder is None:
            schema = self._expanded_plain(topic)
            if record is not None:
                nested = _named_type(schema, record)
                if nested is None or nested.get("type") != "record":
                    raise KeyError(f"{topic} records have no record type {record}")
                schema = nested
            order = [field["name"] for field in schema["fields"]]
            start = order.index(names[0]) if names and names[0] in order else -1
            if start < 0 or order[start : start + len(names)] != list(names):
                raise ValueError(f"{list(names)} are not consecutive fields of {topic} records")
            part = {**schema, "fields": schema["fields"][start : start + len(names)]}
            encoder = self._parts[key] = self._built(_defined_once(part, set()))
        return encoder

    def plain_type_encoder(self, topic: str, full_name: str) -> Encoder:
        """The Avro body of a value of the named type `full_name` of `topic`'s record, as `encode_plain` writes
        it (a part of a body written in parts)."""
        key = (topic, "type", (full_name,))
        encoder = self._parts.get(key)
        if encoder is None:
            schema = self._expanded_plain(topic)
            named = _named_type(schema, full_name)
            if named is None:
                raise KeyError(f"{topic} records have no type {full_name}")
            encoder = self._parts[key] = self._built(_defined_once(named, set()))
        return encoder

    def _expanded_plain(self, topic: str) -> dict[str, Any]:
        """`topic`'s current schema without the logical types `encode_plain` skips, every named type written out."""
        text = self._store.current(self.record_name(topic)).text
        return cast(dict[str, Any], expand_schema(_without_logical_types(json.loads(text))))

    def _built(self, schema: dict[str, Any]) -> Encoder:
        """A part's encoder: `plain_writer`'s, which hands what it does not write to this codec's kind (one per
        schema text and kind, as `_encoder`'s: `processors.wire` compares them)."""
        text = json.dumps(schema)
        key = (f"{self.encoder_kind} parts", text)
        built = _BUILT.get(key)
        if built is None:
            built = _BUILT[key] = plain_writer(schema, _encoder(self.encoder_kind, text, parse(json.loads(text))))
        return built

    def encode_portable(self, topic: str, datum: Mapping[str, Any]) -> bytes:
        """`datum` in the single-object format whatever this codec writes: needs no registry. For a record
        that must be kept while the registry is unreachable; `reframe` turns it into this codec's format."""
        return _write(self._single_object_writer(topic), datum)

    def reframe(self, topic: str, data: bytes) -> bytes:
        """A record of `topic` that `encode_portable` made, in this codec's format (raises like `encode`).

        The Avro body is kept as is when it was written with the schema this codec writes (the prefix alone
        changes); a record written with an older version shipped before is decoded and written again."""
        writer = self._writer(topic)
        if data[:10] == self._single_object_writer(topic).prefix:
            return writer.prefix + data[10:] if data[:10] != writer.prefix else data
        return self.encode(topic, self.decode(topic, data))

    def _schema_by_id(self, schema_id: int) -> dict[str, Any]:
        schema = self._by_id.get(schema_id)
        if schema is None:
            if self._registry is None:
                raise DecodeError(f"confluent-avro record (schema id {schema_id}) but no registry configured")
            raise SchemaNotResolved(f"schema id {schema_id} not resolved yet")
        return schema

    def writer_schema(self, data: bytes) -> tuple[dict[str, Any], int]:
        """The writer schema of an encoded record and the offset of its Avro body."""
        if data[:2] == _SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise DecodeError("truncated single-object header")
            version = self._store.by_fingerprint(bytes(data[2:10]))
            if version is None:
                raise DecodeError(f"unknown schema fingerprint {bytes(data[2:10]).hex()}")
            return version.parsed, 10
        if data[:1] == bytes([_CONFLUENT_MAGIC]):
            if len(data) < 5:
                raise DecodeError("truncated confluent header")
            return self._schema_by_id(int.from_bytes(data[1:5], "big")), 5
        raise DecodeError(f"unknown wire format (first byte {data[:1].hex() or 'none'})")

    def decode(self, topic: str, data: bytes) -> dict[str, Any]:
        """Decode either wire format into the topic's current schema.

        A union of several records decodes as `(record full name, record)`, as encode accepts it.
        """
        reader = self.reader_schema(topic)
        writer, offset = self.writer_schema(data)
        body = io.BytesIO(memoryview(data)[offset:])
        try:
            datum = schemaless_reader(
                body,
                writer,
                None if writer is reader else reader,
                return_record_name=True,
                return_record_name_override=True,
            )
        except Exception as exc:  # fastavro raises many types; callers need one
            raise DecodeError(f"cannot decode {topic} record: {type(exc).__name__}") from exc
        if body.tell() != len(data) - offset:
            raise DecodeError(f"{len(data) - offset - body.tell()} trailing bytes after the {topic} record")
        return cast(dict[str, Any], datum)

    def decode_plain(self, topic: str, data: bytes) -> dict[str, Any]:
        """`decode`, with the values `encode_plain` takes: uuids as text, timestamp-micros as epoch microseconds.

        A record written with the topic's current schema (our own records: the common case) is read by a reader
        of the codec's encoder kind (cavro's when installed, as `decode_fields`) compiled from that schema
        without these logical types: it makes no UUID or datetime only to have them turned back into text and
        ints. Bytes after such a record are left unread (neither reader says where a
        record ends). A record of an older writer schema is resolved by `decode` as ever, and its uuids and
        times are the logical types' values (UUIDs, aware datetimes): readers of both take either (see
        processors/wire.py `account_state_of`). Raises like `decode`; a schema with a union of several
        records (which `decode` reads as `(name, record)`) is refused (ValueError).
        """
        writer, offset = self.writer_schema(data)
        built = self._plain_readers.get(topic)
        if built is None:
            schema = self.reader_schema(topic)
            if _has_union_of_records(expand_schema(json.loads(self._store.current(self.record_name(topic)).text))):
                raise ValueError(f"{topic} records have a union of several records: decode_plain cannot read them")
            built = (schema, _READERS[self.encoder_kind](self._plain_text(topic)))
            with self._lock:
                self._plain_readers[topic] = built
        if writer is not built[0]:
            return self.decode(topic, data)
        try:
            datum = built[1](data[offset:])
        except Exception as exc:  # the readers raise many types; callers need one
            raise DecodeError(f"cannot decode {topic} record: {type(exc).__name__}") from exc
        if not isinstance(datum, dict):
            raise DecodeError(f"cannot decode {topic} record: not a record")
        return datum

    def decode_fields(self, topic: str, data: bytes, fields: frozenset[str], *, plain: bool = False) -> dict[str, Any]:
        """Decode only `fields` of a record (other fields may come along; callers read theirs).

        The processors read the envelope and the raw body of family records this way; decoding the typed
        payload they do not use would cost as much again. When the fields lead the writer's field order
        (our family schemas put them first), only that prefix of the body is read: Avro binary has no
        framing, so the bytes after it are simply left unread. Otherwise a projection reader skips the rest.

        With `plain`, `fields` come as `decode_plain` gives them: a uuid as its text, a timestamp-micros as epoch
        microseconds (int). The prefix reader is then compiled without these logical types (no UUID or datetime
        is made); a record read by projection (an older writer schema) has such values of `fields` turned into
        text and ints (`fields` of these types only, not such values nested in a record).
        """
        writer, offset = self.writer_schema(data)
        prefix = self._prefix(topic, writer, fields, plain)
        try:
            if prefix is not None:
                datum = prefix(data[offset:])
            else:
                body = io.BytesIO(memoryview(data)[offset:])
                datum = schemaless_reader(body, writer, self._projection(topic, fields))
                if plain and isinstance(datum, dict):
                    datum = {name: _plain_value(value) for name, value in datum.items()}
        except Exception as exc:  # the readers raise many types; callers need one
            raise DecodeError(f"cannot decode {topic} record: {type(exc).__name__}") from exc
        if not isinstance(datum, dict):
            raise DecodeError(f"cannot decode {topic} record: not a record")
        return datum

    def _prefix(self, topic: str, writer: dict[str, Any], fields: frozenset[str], plain: bool) -> Reader | None:
        """A reader of the writer schema cut after the last of `fields`, when that is shorter and reads each of
        them exactly as the topic's current schema would (same type); else None. `plain_reader`'s, before a reader
        of the codec's encoder kind (cavro's reads the envelope of a family record in about a third of fastavro's
        time), without the logical types `decode_plain` skips when `plain`."""
        key = (topic, id(writer), fields, plain)
        try:
            return self._prefixes[key][1]
        except KeyError:
            pass
        written = {f["name"]: i for i, f in enumerate(writer["fields"])}
        current = {f["name"]: f["type"] for f in self.reader_schema(topic)["fields"]}
        prefix = None
        if all(name in written and writer["fields"][written[name]]["type"] == current.get(name) for name in fields):
            end = 1 + max(written[name] for name in fields)
            if end < len(written):
                written_schema = {k: v for k, v in writer.items() if not k.startswith("__")}  # no parse markers
                try:
                    cut = {**written_schema, "fields": writer["fields"][:end]}
                    if plain:
                        cut = _without_logical_types(cut)
                    prefix = plain_reader(cut, _READERS[self.encoder_kind](json.dumps(cut)))
                except Exception:  # the prefix uses a type defined further on: read it all
                    prefix = None
        with self._lock:
            self._prefixes[key] = (writer, prefix)  # holding the writer keeps its id from being reused
        return prefix

    def _projection(self, topic: str, fields: frozenset[str]) -> dict[str, Any]:
        key = (topic, fields)
        projected = self._projections.get(key)
        if projected is None:
            current = json.loads(self._store.current(self.record_name(topic)).text)
            missing = fields - {f["name"] for f in current["fields"]}
            if missing:
                raise KeyError(f"{topic} records have no fields {sorted(missing)}")
            current["fields"] = [f for f in current["fields"] if f["name"] in fields]
            projected = self._projections[key] = parse(current)
        return projected

    async def close(self) -> None:
        if self._registry is not None:
            await self._registry.close()


def _write(writer: _Writer, datum: Mapping[str, Any]) -> bytes:
    return writer.prefix + writer.encoder(datum)


def build_codec(settings: SchemaSettings | None = None, *, topics: Mapping[str, str] | None = None) -> Codec:
    settings = settings or SchemaSettings()
    registry = RegistryClient(settings) if settings.registry_url else None
    return Codec(registry=registry, topics=topics)


async def keep_registered(codec: Codec, interval_s: float) -> None:
    """Every `interval_s`, `codec.recheck()` (runs until cancelled; does nothing without a registry).

    While the registry is down the check fails quietly: encode and decode keep using the cached ids.
    """
    if codec.registry is None or interval_s <= 0:
        return
    while True:
        await asyncio.sleep(interval_s)
        try:
            await codec.recheck()
        except RegistryUnavailable as exc:
            log.info("registry check failed", extra={"error": str(exc)})


async def prepare_until_ready(codec: Codec, topics: Iterable[str], *, max_delay_s: float = 15.0) -> None:
    """`codec.prepare(topics)`, retried with jittered back-off while the registry is unavailable.

    Configuration errors (lookup-only and a schema missing, a schema refused) are raised at once.
    """
    topics = list(topics)
    attempt = 0
    while True:
        try:
            await codec.prepare(topics)
            return
        except RegistryUnavailable as exc:
            delay = random.uniform(0, min(max_delay_s, 0.5 * 2**attempt)) + 0.1
            attempt += 1
            log.warning("schema registry unavailable; retrying", extra={"error": str(exc), "retry_in_s": delay})
            await asyncio.sleep(delay)
