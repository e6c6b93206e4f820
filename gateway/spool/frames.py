"""The spool's on-disk record format (pure): a segment file is a sequence of frames

    u32 big-endian length | u32 big-endian crc32(payload) | payload

each payload one record in `gateway.kafka_record`'s byte form. A crash can only leave a torn last frame,
which `scan` detects (short header, short payload or wrong checksum) so recovery truncates it rather than
misreading it. A damaged frame with valid frames after it (disk damage, not a crash) is passed over by
resynchronising on the next valid frame (`scan_resyncing`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from gateway.kafka_record import decode_record

FRAME_HEADER = struct.Struct(">II")  # length, crc32 of the payload
FRAME_OVERHEAD = FRAME_HEADER.size
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a longer length field can only be garbage


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _frame_at(data: bytes, pos: int) -> int | None:
    """The end of the valid frame (header, length in bounds, checksum) starting at `pos`, else None."""
    if pos + FRAME_OVERHEAD > len(data):
        return None
    length, crc = FRAME_HEADER.unpack_from(data, pos)
    begin, end = pos + FRAME_OVERHEAD, pos + FRAME_OVERHEAD + int(length)
    if length > MAX_FRAME_BYTES or end > len(data):
        return None
    if zlib.crc32(memoryview(data)[begin:end]) != crc:
        return None
    return end


def scan(data: bytes, start: int = 0) -> tuple[list[tuple[int, int]], int]:
    """Frames in `data` from `start`: ([(payload_offset, payload_length)], end of the last good frame).

    Stops at the first frame that is incomplete or fails its checksum: everything from the returned
    end on is a torn tail (or corruption) and must never be read as records.
    """
    frames: list[tuple[int, int]] = []
    pos = start
    while (end := _frame_at(data, pos)) is not None:
        frames.append((pos + FRAME_OVERHEAD, end - pos - FRAME_OVERHEAD))
        pos = end
    return frames, pos


def resync(data: bytes, bad: int) -> int | None:
    """Where the frames resume after a damaged one at `bad`, or None if none does (a torn tail).

    The first offset after `bad` holding a frame whose checksum matches *and* whose payload decodes as a
    record, so bytes inside the damaged frame that happen to look like a frame are not taken for one. The
    damaged frame's own length field is not trusted: damaged, it could point past intact frames.
    """

    def resumes_at(pos: int) -> bool:
        end = _frame_at(data, pos)
        if end is None:
            return False
        try:
            decode_record(data[pos + FRAME_OVERHEAD : end])
        except (ValueError, UnicodeDecodeError):
            return False
        return True

    return next((pos for pos in range(bad + 1, len(data) - FRAME_OVERHEAD + 1) if resumes_at(pos)), None)


@dataclass(frozen=True)
class Damage:
    """Bytes [start, end) of a segment that hold no valid frame, with valid frames after them."""

    start: int
    end: int


def scan_resyncing(data: bytes, start: int = 0) -> tuple[list[tuple[int, int]], list[Damage], int]:
    """Like `scan`, but past a damaged frame it resumes at the next valid one instead of stopping.

    Returns the frames, the damaged ranges skipped, and the end of the last good frame: what follows
    it has no valid frame at all, a torn tail (crash mid-append) that recovery truncates.
    """
    frames, pos = scan(data, start)
    damaged: list[Damage] = []
    while pos < len(data) and (resume := resync(data, pos)) is not None:
        damaged.append(Damage(pos, resume))
        more, pos = scan(data, resume)
        frames += more
    return frames, damaged, pos
