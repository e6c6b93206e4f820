"""The record format of an expiring store's changelog (``StoreSpec.expiring``): one record per transaction
holding every entry the transaction put, in a log kept by time retention.

A record's value is ``FORMAT`` (one byte), then each entry as its key's length (4 bytes, big-endian), the key,
its value's length and the value. The record has no key (the log is never compacted) and no header. An entry
of a later record wins over one of an earlier record; a transaction writes each key once. A transaction whose
entries exceed ``MAX_RECORD_BYTES`` writes them in several records, all in the same transaction.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

#: The format of the records written here; a record of another format stops the restore.
FORMAT: Final = b"\x01"
#: A record holds entries up to about this many bytes (the broker's default limit is 1 MiB a batch).
MAX_RECORD_BYTES: Final = 512 * 1024

_LENGTH = struct.Struct(">I")


class EntryLogError(ValueError):
    """A record of an entry log that is not in ``FORMAT``, or is cut short."""


def encode_entries(entries: Iterable[tuple[bytes, bytes]], max_bytes: int = MAX_RECORD_BYTES) -> list[bytes]:
    """The record values holding `entries`, in order: one unless they exceed `max_bytes`; none for none."""
    values: list[bytes] = []
    parts: list[bytes] = [FORMAT]
    size = 1
    pack = _LENGTH.pack
    for key, value in entries:
        entry = len(key) + len(value) + 8
        if size > 1 and size + entry > max_bytes:
            values.append(b"".join(parts))
            parts, size = [FORMAT], 1
        parts += (pack(len(key)), key, pack(len(value)), value)
        size += entry
    if size > 1:
        values.append(b"".join(parts))
    return values


def decode_entries(value: bytes) -> list[tuple[bytes, bytes]]:
    """The entries of one record value, in order; EntryLogError if it is not a record of ``FORMAT``."""
    if value[:1] != FORMAT:
        raise EntryLogError(f"not an entry log record of format {FORMAT.hex()}: it starts with {value[:1].hex()!r}")
    entries = []
    unpack = _LENGTH.unpack_from
    view = memoryview(value)
    end = len(value)
    at = 1
    try:
        while at < end:
            (length,) = unpack(view, at)
            at += 4
            key = value[at : at + length]
            at += length
            (length,) = unpack(view, at)
            at += 4
            entry = value[at : at + length]
            at += length
            if at > end:
                raise EntryLogError("an entry runs past the end of the record")
            entries.append((key, entry))
    except struct.error as exc:
        raise EntryLogError("the record ends inside an entry's length") from exc
    return entries
