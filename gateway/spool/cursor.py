"""The cursor file of a spool directory: the position up to which its records are published.

It holds two 32-byte slots (sequence, segment, offset, crc32), overwritten in place alternately: a commit
needs no new disk block (a full disk never stops the drain that would free it), and a write torn by a crash
leaves the other slot, one commit older (its records are published again: at-least-once).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

CURSOR_FILE = "cursor"
_CURSOR_SLOT = struct.Struct(">QQQI4x")  # sequence, segment id, offset, crc32 of the first 24 bytes
CURSOR_BYTES = 2 * _CURSOR_SLOT.size

Position = tuple[int, int]  # (segment id, byte offset in it)
NO_CURSOR: tuple[int, Position] = (0, (1, 0))


def cursor_slot(sequence: int, position: Position) -> tuple[int, bytes]:
    """(file offset, bytes) of the cursor write number `sequence`: slots alternate, so a torn write
    leaves the previous one intact."""
    head = _CURSOR_SLOT.pack(sequence, position[0], position[1], 0)[:24]
    return _CURSOR_SLOT.size * (sequence % 2), _CURSOR_SLOT.pack(sequence, position[0], position[1], zlib.crc32(head))


def parse_cursor(data: bytes) -> tuple[int, Position]:
    """(sequence, position) of the newest valid slot; a cursor of the older text form (`"<id> <offset>"`,
    replaced atomically) is read too; `NO_CURSOR` when there is neither."""
    best: tuple[int, Position] | None = None
    for offset in (0, _CURSOR_SLOT.size):
        chunk = data[offset : offset + _CURSOR_SLOT.size]
        if len(chunk) < _CURSOR_SLOT.size:
            continue
        sequence, seg_id, position, crc = _CURSOR_SLOT.unpack(chunk)
        if sequence > 0 and crc == zlib.crc32(chunk[:24]) and (best is None or sequence > best[0]):
            best = (sequence, (seg_id, position))
    if best is not None:
        return best
    try:
        seg_id, position = data.split(b"\n", 1)[0].split()
        return 0, (int(seg_id), int(position))
    except ValueError:
        return NO_CURSOR


def read_cursor(directory: Path) -> Position:
    """The position up to which a spool directory's records are published ((1, 0) when it has none)."""
    try:
        return parse_cursor((directory / CURSOR_FILE).read_bytes())[1]
    except FileNotFoundError:
        return NO_CURSOR[1]
