"""Durable local spool: where verified events wait while Kafka does not acknowledge them.

Layout: `<spool_dir>/worker-<n>/` holds `LOCK` (flock'ed by the owning process), `cursor` (the
position up to which records are published, replaced atomically) and segment files
`<20-digit id>.seg`. A segment is a sequence of frames:

    u32 big-endian length | u32 big-endian crc32(payload) | payload

Appends are fsync'd before anyone is told they are durable; a crash can only leave a torn last
frame, which `scan` detects (short header, short payload or wrong checksum) so recovery truncates it
rather than misreading it. A damaged frame with valid frames after it (disk damage, not a crash) is
skipped by resynchronising on the next valid frame (`scan_resyncing`); its bytes are quarantined to a
file beside the segment, and only it is lost. Each payload is one record in
`gateway.kafka_record`'s byte form.

The framing is pure; `Spool` is the thin, synchronous disk layer,
and `SpoolWriter` batches concurrent appends into one write + fsync (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.kafka_record import decode_record, timestamp_ms_at

log = logging.getLogger("gateway.spool")
T = TypeVar("T")

_FRAME = struct.Struct(">II")
FRAME_OVERHEAD = _FRAME.size
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a longer length field can only be garbage
SEGMENT_SUFFIX = ".seg"
QUARANTINE_SUFFIX = ".quarantine"
CURSOR_FILE = "cursor"
LOCK_FILE = "LOCK"


class SpoolFullError(Exception):
    """The spool reached its size limit; the caller answers 503 so Pinwheel retries later."""


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


def read_cursor(directory: Path) -> Position:
    """The position up to which a spool directory's records are published ((1, 0) when it has none)."""
    try:
        raw = (directory / CURSOR_FILE).read_text().split()
        return int(raw[0]), int(raw[1])
    except (FileNotFoundError, ValueError, IndexError):
        return (1, 0)


@dataclass
class _Segment:
    id: int
    path: Path
    size: int  # bytes of good frames


class Spool:
    """Segment files of one spool directory. Not thread-safe: call it from one thread at a time."""

    def __init__(self, directory: Path, lock_fd: int, *, segment_bytes: int, max_bytes: int) -> None:
        self.directory = directory
        self._lock_fd: int | None = lock_fd
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._segments: list[_Segment] = []
        self._cursor: Position = (1, 0)
        self._file: int | None = None  # append fd of the last segment
        self.pending_records = 0
        self.pending_bytes = 0
        self.oldest_timestamp_ms: int | None = None  # of the first pending record (its received_at)
        self.truncated_bytes = 0  # torn tails cut off during recovery
        self.quarantined_frames = 0  # damaged frames moved aside during recovery (valid frames followed them)
        self.quarantined_bytes = 0
        self._recover()

    @classmethod
    def open(cls, directory: Path, *, segment_bytes: int, max_bytes: int) -> Spool:
        fd = try_lock(directory)
        if fd is None:
            raise SpoolLockedError(f"{directory} is held by another process")
        return cls(directory, fd, segment_bytes=segment_bytes, max_bytes=max_bytes)

    # recovery

    def _recover(self) -> None:
        self._cursor = self._read_cursor()
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
            if damaged:
                data = self._quarantine(path, data, damaged)
                end -= sum(d.end - d.start for d in damaged)
            if end < len(data):
                # A torn tail (crash mid-append): never read it as records.
                log.warning(
                    "spool segment truncated",
                    extra={"segment": path.name, "kept_bytes": end, "dropped_bytes": len(data) - end},
                )
                self.truncated_bytes += len(data) - end
                with path.open("r+b") as fh:
                    fh.truncate(end)
                    os.fsync(fh.fileno())
            self._segments.append(_Segment(seg_id, path, end))
            if frames and self.oldest_timestamp_ms is None:
                self.oldest_timestamp_ms = timestamp_ms_at(data, frames[0][0])
            self.pending_records += len(frames)
            self.pending_bytes += end - start
        if self._segments and self._cursor[0] < self._segments[0].id:
            self._cursor = (self._segments[0].id, 0)

    def _quarantine(self, path: Path, data: bytes, damaged: list[Damage]) -> bytes:
        """Move each damaged range into a file beside the spool and rewrite the segment without them.

        The quarantine files are written and fsync'd before the segment is replaced (atomically), so a
        crash in between at worst quarantines the same bytes twice. Offsets before the first damaged
        range, the cursor among them, do not move.
        """
        for damage in damaged:
            target = self.directory / f"{path.stem}.{damage.start}{QUARANTINE_SUFFIX}"
            with target.open("wb") as fh:
                fh.write(data[damage.start : damage.end])
                fh.flush()
                os.fsync(fh.fileno())
            log.error(
                "damaged spool frame quarantined",
                extra={
                    "segment": path.name,
                    "offset": damage.start,
                    "bytes": damage.end - damage.start,
                    "quarantine_file": target.name,
                },
            )
        kept, pos = [], 0
        for damage in damaged:
            kept.append(data[pos : damage.start])
            pos = damage.end
        kept.append(data[pos:])
        repaired = b"".join(kept)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(repaired)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self._fsync_dir()
        self.quarantined_frames += len(damaged)
        self.quarantined_bytes += len(data) - len(repaired)
        return repaired

    def _read_cursor(self) -> Position:
        return read_cursor(self.directory)

    def _write_cursor(self, position: Position) -> None:
        tmp = self.directory / (CURSOR_FILE + ".tmp")
        with tmp.open("w") as fh:
            fh.write(f"{position[0]} {position[1]}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / CURSOR_FILE)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # appending

    def append_many(self, payloads: list[bytes]) -> int:
        """Append, write and fsync; returns how many of `payloads` (a prefix) were taken.

        Stops at the first that would pass `max_bytes`, so later events never overtake it.
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
        start_new = not self._segments or self._segments[-1].size >= self.segment_bytes
        segment = self._new_segment() if start_new else self._segments[-1]
        if self._file is None:
            self._file = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        data = b"".join(taken)
        written = 0
        while written < len(data):
            written += os.write(self._file, data[written:])
        os.fsync(self._file)
        if start_new:
            self._fsync_dir()  # the new segment's directory entry must be durable too
        segment.size += len(data)
        if self.pending_records == 0:
            self.oldest_timestamp_ms = timestamp_ms_at(taken[0], FRAME_OVERHEAD)
        self.pending_records += len(taken)
        self.pending_bytes += len(data)
        return len(taken)

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
        """Up to `max_records` payloads from `position`; returns them and the position after them."""
        out: list[bytes] = []
        size = 0
        seg_id, offset = position
        for segment in self._segments:
            if segment.id < seg_id:
                continue
            start = offset if segment.id == seg_id else 0
            if start >= segment.size:
                seg_id, offset = segment.id, segment.size
                continue
            with segment.path.open("rb") as fh:
                fh.seek(start)
                pos = start
                # Frame by frame (buffered): only what the batch needs is read, not the whole segment.
                while pos < segment.size:
                    header = fh.read(FRAME_OVERHEAD)
                    length, crc = _FRAME.unpack(header)
                    payload = fh.read(length)
                    if zlib.crc32(payload) != crc:  # was checked at recovery/append: the disk changed
                        raise OSError(f"spool record at {segment.path.name}:{pos} fails its checksum")
                    out.append(payload)
                    size += length
                    pos += FRAME_OVERHEAD + length
                    seg_id, offset = segment.id, pos
                    if len(out) >= max_records or size >= max_bytes:
                        return out, (seg_id, offset)
            seg_id, offset = segment.id, segment.size
        return out, (seg_id, offset)

    def commit(self, position: Position, records: int, nbytes: int) -> None:
        """Mark everything before `position` as published (durably); drop finished segments."""
        self.pending_records -= records
        self.pending_bytes -= nbytes
        if self.pending_records <= 0:
            # Empty: start the next segment afresh instead of keeping a fully read one.
            self.pending_records, self.pending_bytes = 0, 0
            last = self._segments[-1].id if self._segments else position[0]
            self._write_cursor((last + 1, 0))
            self._cursor = (last + 1, 0)
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
        first, _ = self.read(position, 1, 1)
        self.oldest_timestamp_ms = timestamp_ms_at(first[0], 0) if first else None
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
        is fsync'd, or fails with SpoolFullError."""
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
            except Exception as exc:  # disk full, I/O error: every waiter must hear of it
                log.error("spool append failed", extra={"error": type(exc).__name__})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(SpoolFullError(type(exc).__name__))
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
