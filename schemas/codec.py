"""Avro codec shared by the gateway and the processors.

Two wire formats, told apart by the first byte so either one always decodes:
- `avro-single-object` (default): 0xC3 0x01, the 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema, then the Avro binary body; the fingerprint is resolved against every version shipped
  in `schemas/avro/`.
- `confluent-avro` (with a registry): 0x00, the 4-byte big-endian registry schema id, then the body;
  schemas are registered under `<topic>-value`.
Schemas are parsed once; reads resolve the writer schema against the topic's current schema.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer

from schemas.confluent import RegistryClient
from schemas.settings import SchemaSettings
from schemas.store import TOPIC_RECORDS, SchemaStore, crc64_fingerprint, load_store, parse

__all__ = ["CONFLUENT", "SINGLE_OBJECT", "Codec", "DecodeError", "SchemaSettings", "build_codec"]

SINGLE_OBJECT = "avro-single-object"
CONFLUENT = "confluent-avro"
_SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_CONFLUENT_MAGIC = 0


class DecodeError(ValueError):
    """Bytes that are not a record of ours (unknown format, unknown schema, wrong topic, truncated)."""


@dataclass(frozen=True, slots=True)
class _Writer:
    schema: dict[str, Any]
    prefix: bytes


class Codec:
    def __init__(
        self,
        store: SchemaStore | None = None,
        *,
        registry: RegistryClient | None = None,
        topics: Mapping[str, str] | None = None,
    ):
        """`topics` adds topic → record full name pairs (e.g. changelogs) to the built-in table."""
        self._store = store or load_store()
        self._registry = registry
        self._topics = {**TOPIC_RECORDS, **(topics or {})}
        self._writers: dict[str, _Writer] = {}
        self._by_id: dict[int, dict[str, Any]] = {}
        self._projections: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}
        self._prefixes: dict[tuple[str, int, frozenset[str]], tuple[dict[str, Any], dict[str, Any] | None]] = {}
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
            current = self._store.current(self.record_name(topic))
            if self._registry is None:
                prefix = _SINGLE_OBJECT_MAGIC + current.fingerprint
            else:
                schema_id = self._registry.register(f"{topic}-value", current.text)
                self._by_id[schema_id] = current.parsed  # our own records decode without a lookup
                prefix = bytes([_CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")
            writer = self._writers[topic] = _Writer(current.parsed, prefix)
        return writer

    def prepare(self, topics: list[str] | None = None) -> None:
        """Resolve writers up front (registers schemas), so no request pays for it later."""
        for topic in topics if topics is not None else list(self._topics):
            self._writer(topic)

    def encode(self, topic: str, datum: Mapping[str, Any]) -> bytes:
        writer = self._writer(topic)
        out = io.BytesIO()
        out.write(writer.prefix)
        schemaless_writer(out, writer.schema, datum)
        return out.getvalue()

    def _schema_by_id(self, schema_id: int) -> dict[str, Any]:
        schema = self._by_id.get(schema_id)
        if schema is None:
            if self._registry is None:
                raise DecodeError(f"confluent-avro record (schema id {schema_id}) but no registry configured")
            parsed = parse(json.loads(self._registry.schema_text(schema_id)))
            # Reuse our own parsed object when it is one of ours: the reader then skips resolution.
            known = self._store.by_fingerprint(crc64_fingerprint(parsed))
            schema = known.parsed if known is not None else parsed
            with self._lock:
                self._by_id[schema_id] = schema
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

    def decode_fields(self, topic: str, data: bytes, fields: frozenset[str]) -> dict[str, Any]:
        """Decode only `fields` of a record (other fields may come along; callers read theirs).

        The processors read the envelope and the raw body of family records this way; decoding the typed
        payload they do not use would cost as much again. When the fields lead the writer's field order
        (our family schemas put them first), only that prefix of the body is read: Avro binary has no
        framing, so the bytes after it are simply left unread. Otherwise a projection reader skips the rest.
        """
        writer, offset = self.writer_schema(data)
        body = io.BytesIO(memoryview(data)[offset:])
        prefix = self._prefix(topic, writer, fields)
        try:
            if prefix is not None:
                datum = schemaless_reader(body, prefix, None)
            else:
                datum = schemaless_reader(body, writer, self._projection(topic, fields))
        except Exception as exc:  # fastavro raises many types; callers need one
            raise DecodeError(f"cannot decode {topic} record: {type(exc).__name__}") from exc
        return cast(dict[str, Any], datum)

    def _prefix(self, topic: str, writer: dict[str, Any], fields: frozenset[str]) -> dict[str, Any] | None:
        """The writer schema cut after the last of `fields`, when that is shorter and reads each of them
        exactly as the topic's current schema would (same type); else None."""
        key = (topic, id(writer), fields)
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
                plain = {k: v for k, v in writer.items() if not k.startswith("__")}  # fastavro's parse markers
                try:
                    prefix = parse({**plain, "fields": writer["fields"][:end]})
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

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


def build_codec(settings: SchemaSettings | None = None, *, topics: Mapping[str, str] | None = None) -> Codec:
    settings = settings or SchemaSettings()
    registry = None
    if settings.registry_url:
        auth = None
        if settings.registry_username is not None:
            auth = (settings.registry_username, settings.registry_password or "")
        registry = RegistryClient(settings.registry_url, timeout_s=settings.registry_timeout_s, auth=auth)
    return Codec(registry=registry, topics=topics)
