"""A Kafka record exactly as the producer sends it, and its byte form in the spool (pure).

Byte form, all integers big-endian:

    u64 timestamp_ms | u16 topic length, topic | u32 key length (0xFFFFFFFF: no key), key
    | u32 value length, value | u16 header count, then per header: u16 name length, name, u32 length, value
    [| u8 1: the value waits for its schema id]

Nothing but the producer's arguments (and that flag): draining the spool needs no re-parsing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class KafkaRecord:
    """One record for the producer: the gateway's output for a verified delivery (or a replayed dead letter)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    schema_id_pending: bool = False
    """`value` is in the single-object format because the schema registry was unreachable: it is re-framed
    with the registry's schema id (`RecordEncoder.reframe`) before it is sent, so it waits in the spool until then."""


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_NO_KEY = 0xFFFFFFFF
_PENDING = b"\x01"


def encode_record(record: KafkaRecord) -> bytes:
    topic = record.topic.encode()
    parts = [_U64.pack(record.timestamp_ms), _U16.pack(len(topic)), topic]
    if record.key is None:
        parts.append(_U32.pack(_NO_KEY))
    else:
        parts += [_U32.pack(len(record.key)), record.key]
    parts += [_U32.pack(len(record.value)), record.value, _U16.pack(len(record.headers))]
    for name, value in record.headers:
        raw = name.encode()
        parts += [_U16.pack(len(raw)), raw, _U32.pack(len(value)), value]
    if record.schema_id_pending:
        parts.append(_PENDING)
    return b"".join(parts)


def timestamp_ms_at(data: bytes, offset: int) -> int | None:
    """timestamp_ms of the encoded record at `offset` (its first field); None for a shorter payload."""
    if len(data) < offset + _U64.size:
        return None
    return int(_U64.unpack_from(data, offset)[0])


def decode_record(data: bytes) -> KafkaRecord:
    """The record `encode_record` made; ValueError (or UnicodeDecodeError) for any other bytes."""
    view = memoryview(data)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise ValueError("truncated spool record")
        chunk = bytes(view[pos : pos + n])
        pos += n
        return chunk

    timestamp_ms = _U64.unpack(take(8))[0]
    topic = take(_U16.unpack(take(2))[0]).decode()
    key_len = _U32.unpack(take(4))[0]
    key = None if key_len == _NO_KEY else take(key_len)
    value = take(_U32.unpack(take(4))[0])
    headers = []
    for _ in range(_U16.unpack(take(2))[0]):
        name = take(_U16.unpack(take(2))[0]).decode()
        headers.append((name, take(_U32.unpack(take(4))[0])))
    pending = pos == len(view) - 1 and take(1) == _PENDING
    if pos != len(view):
        raise ValueError("trailing bytes in spool record")
    return KafkaRecord(topic, key, value, tuple(headers), timestamp_ms, pending)
