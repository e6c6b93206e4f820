"""The segment files of one spool directory (`Spool`): appending, recovery, reading and committing.

A spool directory holds `LOCK` (`gateway.spool.directories`), `cursor` (`gateway.spool.cursor`) and segment files
`<20-digit id>.seg`, each a sequence of frames (`gateway.spool.frames`).

Appends are fsync'd before anyone is told they are durable. A write or fsync that fails (a full disk
cuts a write short) is cut back off the segment (`ftruncate` to its last good size) and the append fails,
so an `O_APPEND` write never lands behind a partial frame. Recovery truncates a torn last frame (a crash
mid-append). A damaged frame with valid frames after it (disk damage, not a crash) is skipped: its range is
remembered and skipped on read, in place, and at most `QUARANTINE_MAX_BYTES` of it are copied to a file beside
the segment; only it is lost. Reading finds damage the same way while running (the disk changed under us): the
drain skips it and moves on, it never stops at a frame it cannot read. Nothing in recovery needs room for a copy
of a segment, so a gateway starts on a full disk.

`Spool` is the thin, synchronous disk layer; `gateway.spool.writer` is its async front.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from gateway.kafka_record import timestamp_ms_at
from gateway.spool.cursor import CURSOR_BYTES, CURSOR_FILE, NO_CURSOR, Position, cursor_slot, parse_cursor
from gateway.spool.directories import SpoolLockedError, try_lock
from gateway.spool.frames import FRAME_HEADER, FRAME_OVERHEAD, Damage, frame, resync, scan_resyncing

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
QUARANTINE_SUFFIX = ".quarantine"
QUARANTINE_MAX_BYTES = 1024 * 1024  # of one damaged range kept for a post-mortem: recovery's extra space is bounded


def error_name(exc: BaseException) -> str:
    """`ENOSPC` for an OSError with an errno, else the exception's type name (never its message: paths)."""
    code = getattr(exc, "errno", None)
    return errno.errorcode.get(code, type(exc).__name__) if isinstance(code, int) else type(exc).__name__


@dataclass
class _Segment:
    id: int
    path: Path
    size: int  # end of the last good frame: appends go there, reads stop there
    skips: dict[int, int] = field(default_factory=dict)  # damaged ranges below `size`: start -> end
    sealed: bool = False  # bytes past `size` could not be cut off: never append to it again


class Spool:
    """Segment files of one spool directory. Not thread-safe: call it from one thread at a time."""

    def __init__(self, directory: Path, lock_fd: int, *, segment_bytes: int, max_bytes: int) -> None:
        self.directory = directory
        self._lock_fd: int | None = lock_fd
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._segments: list[_Segment] = []
        self._cursor: Position = (1, 0)
        self._cursor_sequence = 0  # of the last cursor slot written
        self._file: int | None = None  # append fd of the last segment
        self.pending_records = 0
        self.pending_bytes = 0  # of valid frames (damaged ranges are not counted)
        self.oldest_timestamp_ms: int | None = None  # of the first pending record (its received_at)
        self.truncated_bytes = 0  # torn tails cut off during recovery
        self.quarantined_frames = 0  # damaged ranges found (at recovery or on read) since this spool was opened
        self.quarantined_bytes = 0
        self._unreported_quarantines = 0
        self._recover()

    @classmethod
    def open(cls, directory: Path, *, segment_bytes: int, max_bytes: int) -> Spool:
        fd = try_lock(directory)
        if fd is None:
            raise SpoolLockedError(f"{directory} is held by another process")
        return cls(directory, fd, segment_bytes=segment_bytes, max_bytes=max_bytes)

    # recovery

    def _recover(self) -> None:
        """Scan the segments and repair them in place; needs no free disk space (a start on a full disk
        works): torn tails are cut off, damaged ranges are skipped where they are."""
        self._cursor_sequence, self._cursor = self._read_cursor()
        self._remove_leftovers()
        for path in sorted(self.directory.glob("*" + SEGMENT_SUFFIX)):
            try:
                seg_id = int(path.stem)
            except ValueError:
                continue
            if seg_id < self._cursor[0]:
                path.unlink()  # fully published before the crash
                continue
            data = path.read_bytes()
            start = self._cursor[1] if seg_id == self._cursor[0] else 0
            start = min(start, len(data))
            frames, damaged, end = scan_resyncing(data, start)
            segment = _Segment(seg_id, path, end, {d.start: d.end for d in damaged})
            for damage in damaged:
                self._quarantine(path, damage, data[damage.start : damage.end])
            if end < len(data):
                self._cut_torn_tail(segment, len(data))
            self._segments.append(segment)
            if frames and self.oldest_timestamp_ms is None:
                self.oldest_timestamp_ms = timestamp_ms_at(data, frames[0][0])
            self.pending_records += len(frames)
            self.pending_bytes += sum(FRAME_OVERHEAD + length for _, length in frames)
        if self._segments and self._cursor[0] < self._segments[0].id:
            self._cursor = (self._segments[0].id, 0)
        self._prepare_cursor_file()

    def _remove_leftovers(self) -> None:
        """Temporary files of older versions (a segment's repaired copy, the cursor's replacement): a crash
        or a full disk left them half-written; they hold nothing the segments do not."""
        for path in self.directory.glob("*.tmp"):
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                log.warning("spool leftover removed", extra={"file": path.name, "bytes": size})

    def _cut_torn_tail(self, segment: _Segment, file_size: int) -> None:
        """A torn tail (crash mid-append): never read it as records, and never append behind it."""
        log.warning(
            "spool segment truncated",
            extra={"segment": segment.path.name, "kept_bytes": segment.size, "dropped_bytes": file_size - segment.size},
        )
        self.truncated_bytes += file_size - segment.size
        try:
            with segment.path.open("r+b") as fh:
                fh.truncate(segment.size)
                os.fsync(fh.fileno())
        except OSError as exc:
            # Reads stop at `size` anyway; appends go to a new segment.
            segment.sealed = True
            log.error(
                "spool segment could not be truncated", extra={"segment": segment.path.name, "error": error_name(exc)}
            )

    def _quarantine(self, path: Path, damage: Damage, data: bytes) -> None:
        """Count and log a damaged range, and keep (at most `QUARANTINE_MAX_BYTES` of) its bytes in a file
        beside the segment for a post-mortem. The segment is not rewritten: reads skip the range.

        Best effort: on a full disk the copy is not kept (the log line says so) and the range is skipped all
        the same. A range whose file exists was quarantined before (an earlier start): not counted again.
        """
        target = self.directory / f"{path.stem}.{damage.start}{QUARANTINE_SUFFIX}"
        if target.exists():
            return
        kept = data[:QUARANTINE_MAX_BYTES]
        saved: str | None = target.name
        try:
            with target.open("wb") as fh:
                fh.write(kept)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            saved = None
            with contextlib.suppress(OSError):
                target.unlink()
            log.error("quarantine file not written", extra={"segment": path.name, "error": error_name(exc)})
        log.error(
            "damaged spool frame quarantined",
            extra={
                "segment": path.name,
                "offset": damage.start,
                "bytes": damage.end - damage.start,
                "quarantine_file": saved,
                "quarantine_bytes": len(kept) if saved else 0,
            },
        )
        self.quarantined_frames += 1
        self.quarantined_bytes += damage.end - damage.start
        self._unreported_quarantines += 1

    def take_quarantined(self) -> int:
        """Damaged ranges found since the last call (for the metrics counter)."""
        found, self._unreported_quarantines = self._unreported_quarantines, 0
        return found

    def _read_cursor(self) -> tuple[int, Position]:
        try:
            return parse_cursor((self.directory / CURSOR_FILE).read_bytes())
        except FileNotFoundError:
            return NO_CURSOR

    def _prepare_cursor_file(self) -> None:
        """Give the cursor file its two slots now, while there may be room: later commits then only overwrite
        bytes it has (a full disk cannot stop them). Best effort: without room, the first commit tries again."""
        path = self.directory / CURSOR_FILE
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size >= CURSOR_BYTES:
                return
        try:
            self._write_cursor(self._cursor)
        except OSError as exc:
            log.warning("spool cursor file not prepared", extra={"error": error_name(exc)})

    def _write_cursor(self, position: Position) -> None:
        """Durably, in place: the slot the previous write did not use (see the module docstring)."""
        path = self.directory / CURSOR_FILE
        created = not path.exists()
        sequence = self._cursor_sequence + 1
        offset, slot = cursor_slot(sequence, position)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.pwrite(fd, slot, offset) != len(slot):
                raise OSError(errno.ENOSPC, "short cursor write")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            self._fsync_dir()
        self._cursor_sequence = sequence

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # appending

    def append_many(self, payloads: list[bytes]) -> int:
        """Append, write and fsync; returns how many of `payloads` (a prefix) were taken.

        Stops at the first that would pass `max_bytes`, so later events never overtake it. A failed write or
        fsync (OSError) is cut back off the segment before it is raised: none of the batch was taken.
        """
        taken: list[bytes] = []
        room = self.max_bytes - self.pending_bytes
        for payload in payloads:
            size = FRAME_OVERHEAD + len(payload)
            if size > room:
                break
            taken.append(frame(payload))
            room -= size
        if not taken:
            return 0
        last = self._segments[-1] if self._segments else None
        start_new = last is None or last.sealed or last.size >= self.segment_bytes
        segment = self._new_segment() if start_new or last is None else last
        data = b"".join(taken)
        first_write = segment.size == 0  # (a new segment, or one whose first append failed)
        try:
            if self._file is None:
                self._file = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            written = 0
            while written < len(data):
                written += os.write(self._file, data[written:])
            os.fsync(self._file)
            if first_write:
                self._fsync_dir()  # the new segment's directory entry must be durable too
        except OSError:
            self._cut_back(segment)
            raise
        segment.size += len(data)
        if self.pending_records == 0:
            self.oldest_timestamp_ms = timestamp_ms_at(taken[0], FRAME_OVERHEAD)
        self.pending_records += len(taken)
        self.pending_bytes += len(data)
        return len(taken)

    def _cut_back(self, segment: _Segment) -> None:
        """After a failed append: truncate the segment to its last good frame, so the next `O_APPEND` write
        lands right behind it, not behind a partial frame. After a failed fsync the data may or may not be on
        disk; cutting it off is right either way (the request is answered 503 and retried). If the cut
        fails too, the segment is sealed: appends go to a new one, reads stop at its last good frame."""
        if self._file is None:
            return  # not even opened
        try:
            os.ftruncate(self._file, segment.size)
            os.fsync(self._file)
        except OSError as exc:
            segment.sealed = True
            os.close(self._file)
            self._file = None
            log.error("spool segment sealed", extra={"segment": segment.path.name, "error": error_name(exc)})

    def _new_segment(self) -> _Segment:
        if self._file is not None:
            os.close(self._file)
            self._file = None
        seg_id = self._segments[-1].id + 1 if self._segments else max(self._cursor[0], 1)
        segment = _Segment(seg_id, self.directory / f"{seg_id:020d}{SEGMENT_SUFFIX}", 0)
        self._segments.append(segment)
        return segment

    # reading and committing

    @property
    def cursor(self) -> Position:
        return self._cursor

    def read(self, position: Position, max_records: int, max_bytes: int) -> tuple[list[bytes], Position]:
        """Up to `max_records` payloads from `position`; returns them and the position after them.

        Damaged frames are skipped (quarantined the first time they are met), never raised: the drain must
        not stop at a frame it cannot read. Damage found here is rare (the disk changed since it was
        written), so the pending totals are then simply counted again.
        """
        out: list[bytes] = []
        size = 0
        end = position
        found = self.quarantined_frames
        for after, payload in self._frames(position):
            out.append(payload)
            size += len(payload)
            end = after
            if len(out) >= max_records or size >= max_bytes:
                break
        else:
            end = self._end_from(position)
        if self.quarantined_frames != found:
            self._recount()
        return out, end

    def _end_from(self, position: Position) -> Position:
        """The position after every frame from `position` on."""
        last = self._segments[-1] if self._segments else None
        return (last.id, last.size) if last is not None and last.id >= position[0] else position

    def _frames(self, position: Position) -> Iterator[tuple[Position, bytes]]:
        """(position after it, payload) of every valid frame from `position`, damaged ranges skipped."""
        seg_id, offset = position
        for segment in list(self._segments):
            if segment.id < seg_id:
                continue
            pos = offset if segment.id == seg_id else 0
            if pos >= segment.size:
                continue
            try:
                fh = segment.path.open("rb")
            except FileNotFoundError:
                self._damaged(segment, pos, None)
                continue
            with fh:
                while pos < segment.size:
                    if pos in segment.skips:
                        pos = segment.skips[pos]
                        continue
                    fh.seek(pos)
                    # Frame by frame (buffered): only what the batch needs is read, not the whole segment.
                    header = fh.read(FRAME_OVERHEAD)
                    payload = None
                    if len(header) == FRAME_OVERHEAD:
                        length, crc = FRAME_HEADER.unpack(header)
                        if pos + FRAME_OVERHEAD + length <= segment.size:
                            payload = fh.read(length)
                            if len(payload) != length or zlib.crc32(payload) != crc:
                                payload = None
                    if payload is None:  # was checked at recovery/append: the disk changed
                        pos = self._damaged(segment, pos, fh)
                        continue
                    pos += FRAME_OVERHEAD + len(payload)
                    yield (segment.id, pos), payload

    def _damaged(self, segment: _Segment, pos: int, fh: BinaryIO | None) -> int:
        """Quarantine the damaged range at `pos` (up to the next valid frame, else the segment's end) and
        remember it so reads skip it; returns its end."""
        rest = b""
        if fh is not None:
            fh.seek(pos)
            rest = fh.read(segment.size - pos)
        resume = resync(rest, 0)
        end = pos + resume if resume is not None else segment.size
        damage = Damage(pos, end)
        segment.skips[pos] = end
        before = self.quarantined_frames
        self._quarantine(segment.path, damage, rest[: end - pos])
        if self.quarantined_frames == before:  # its file exists from an earlier start: still news here
            self.quarantined_frames += 1
            self.quarantined_bytes += end - pos
        return end

    def _recount(self) -> None:
        """The pending totals and the oldest timestamp, counted from the cursor (after damage was found)."""
        records = nbytes = 0
        oldest: int | None = None
        for _, payload in self._frames(self._cursor):
            if oldest is None:
                oldest = timestamp_ms_at(payload, 0)
            records += 1
            nbytes += FRAME_OVERHEAD + len(payload)
        self.pending_records, self.pending_bytes, self.oldest_timestamp_ms = records, nbytes, oldest

    def commit(self, position: Position, records: int, nbytes: int) -> None:
        """Mark everything before `position` as published (durably); drop finished segments.

        The cursor is overwritten in place, so this works on a full disk, and frees the space it can."""
        if self.pending_records - records <= 0:
            # Empty: start the next segment afresh instead of keeping a fully read one.
            last = self._segments[-1].id if self._segments else position[0]
            self._write_cursor((last + 1, 0))
            self._cursor = (last + 1, 0)
            self.pending_records, self.pending_bytes = 0, 0
            if self._file is not None:
                os.close(self._file)
                self._file = None
            for segment in self._segments:
                segment.path.unlink(missing_ok=True)
            self._segments = []
            self.oldest_timestamp_ms = None
            return
        self._write_cursor(position)
        self._cursor = position
        self.pending_records -= records
        self.pending_bytes -= nbytes
        first = next(self._frames(position), None)
        self.oldest_timestamp_ms = timestamp_ms_at(first[1], 0) if first else None
        while len(self._segments) > 1 and self._segments[0].id < position[0]:
            self._segments.pop(0).path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def iter_all(self) -> Iterator[bytes]:
        """Every pending payload (tests and tools)."""
        position = self._cursor
        while True:
            batch, position = self.read(position, 1000, 1 << 30)
            if not batch:
                return
            yield from batch
