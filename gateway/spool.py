"""Durable local spool: where verified events wait while Kafka does not acknowledge them.

Layout: `<spool_dir>/worker-<n>/` holds `LOCK` (flock'ed by the owning process), `cursor` (the
position up to which records are published) and segment files `<20-digit id>.seg`. A segment is a
sequence of frames:

    u32 big-endian length | u32 big-endian crc32(payload) | payload

Appends are fsync'd before anyone is told they are durable. A write or fsync that fails (a full disk
cuts a write short) is cut back off the segment (`ftruncate` to its last good size) and the append fails,
so an `O_APPEND` write never lands behind a partial frame. A crash can only leave a torn last frame,
which `scan` detects (short header, short payload or wrong checksum) so recovery truncates it rather than
misreading it. A damaged frame with valid frames after it (disk damage, not a crash) is skipped by
resynchronising on the next valid frame (`scan_resyncing`): its range is remembered and skipped on read,
in place, and at most `QUARANTINE_MAX_BYTES` of it are copied to a file beside the segment; only it is
lost. Reading finds damage the same way while running (the disk changed under us): the drain skips it
and moves on, it never stops at a frame it cannot read. Nothing in recovery needs room for a copy of a
segment, so a gateway starts on a full disk. Each payload is one record in `gateway.kafka_record`'s byte
form.

The cursor file holds two 32-byte slots (sequence, segment, offset, crc32), overwritten in place
alternately: a commit needs no new disk block (a full disk never stops the drain that would free it), and
a write torn by a crash leaves the other slot, one commit older (its records are published again:
at-least-once).

The framing is pure; `Spool` is the thin, synchronous disk layer,
and `SpoolWriter` batches concurrent appends into one write + fsync (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from gateway.kafka_record import decode_record, timestamp_ms_at

log = logging.getLogger(__name__)
T = TypeVar("T")

_FRAME = struct.Struct(">II")
FRAME_OVERHEAD = _FRAME.size
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a longer length field can only be garbage
SEGMENT_SUFFIX = ".seg"
QUARANTINE_SUFFIX = ".quarantine"
QUARANTINE_MAX_BYTES = 1024 * 1024  # of one damaged range kept for a post-mortem: recovery's extra space is bounded
CURSOR_FILE = "cursor"
LOCK_FILE = "LOCK"
_CURSOR_SLOT = struct.Struct(">QQQI4x")  # sequence, segment id, offset, crc32 of the first 24 bytes
CURSOR_BYTES = 2 * _CURSOR_SLOT.size


class SpoolFullError(Exception):
    """The spool cannot take the record; the caller answers 503 so Pinwheel retries later.

    Raised as such when the spool reached its size limit (`GATEWAY_SPOOL_MAX_BYTES`)."""


class SpoolWriteError(SpoolFullError):
    """The disk refused the append (full, or an I/O error): nothing of it was kept; `reason` is the errno name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def error_name(exc: BaseException) -> str:
    """`ENOSPC` for an OSError with an errno, else the exception's type name (never its message: paths)."""
    code = getattr(exc, "errno", None)
    return errno.errorcode.get(code, type(exc).__name__) if isinstance(code, int) else type(exc).__name__


class SpoolLockedError(Exception):
    """Another live process owns this spool directory."""


# -- framing (pure) -----------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _frame_at(data: bytes, pos: int) -> int | None:
    """The end of the valid frame (header, length in bounds, checksum) starting at `pos`, else None."""
    if pos + FRAME_OVERHEAD > len(data):
        return None
    length, crc = _FRAME.unpack_from(data, pos)
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


# -- directories and locks ----------------------------------------------------------------------


def try_lock(directory: Path) -> int | None:
    """Open and flock `directory/LOCK`; the fd (keep it open to hold the lock) or None if held.

    flock locks die with their process, so a worker killed with -9 leaves its directory claimable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_worker_dir(root: Path) -> tuple[Path, int]:
    """The first `worker-<n>` directory no live process holds, locked.

    A restarted worker thus takes over the directory (and the spooled events) of a dead one.
    """
    for index in range(10_000):
        directory = root / f"worker-{index}"
        fd = try_lock(directory)
        if fd is not None:
            return directory, fd
    raise SpoolLockedError(f"no free spool directory under {root}")


def worker_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("worker-"))


# -- the disk layer -----------------------------------------------------------------------------

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
                        length, crc = _FRAME.unpack(header)
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


class SpoolWriter:
    """Async front of a Spool: group commit of concurrent appends, all disk work on one thread."""

    def __init__(self, spool: Spool, executor: ThreadPoolExecutor) -> None:
        self.spool = spool
        self._executor = executor
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def enqueue(self, payload: bytes) -> asyncio.Future[None]:
        """Queue `payload` now (synchronously: call order is spool order); the future resolves once it
        is fsync'd, or fails with SpoolFullError (SpoolWriteError when the disk refused it)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((payload, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def append(self, payload: bytes) -> None:
        await self.enqueue(payload)

    @property
    def idle(self) -> bool:
        return not self._queue and (self._flusher is None or self._flusher.done())

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run disk work on the spool thread (serialised with appends)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run_read(self, spool: Spool, max_records: int, max_bytes: int) -> tuple[list[bytes], Position]:
        return await self.run(spool.read, spool.cursor, max_records, max_bytes)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            # Everything queued while the previous fsync ran goes into this one write + fsync.
            batch, self._queue = self._queue, []
            try:
                taken = await loop.run_in_executor(self._executor, self.spool.append_many, [p for p, _ in batch])
            except Exception as exc:  # disk full, I/O error: every waiter must hear of it (nothing was kept)
                log.error("spool append failed", extra={"error": error_name(exc), "records": len(batch)})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(SpoolWriteError(error_name(exc)))
                continue
            for index, (_, future) in enumerate(batch):
                if future.done():
                    continue
                if index < taken:
                    future.set_result(None)
                else:
                    future.set_exception(SpoolFullError())
            if taken < len(batch):
                # Order: nothing queued behind a refused record may be accepted before it.
                rest, self._queue = self._queue, []
                for _, future in rest:
                    if not future.done():
                        future.set_exception(SpoolFullError())

    async def drain_queue(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
